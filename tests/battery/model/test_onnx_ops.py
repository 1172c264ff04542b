"""Each supported ONNX op, in a graph of one or a few nodes built with onnx.helper, converted and run beside
onnxruntime on a batch of another size than the example the converter ran: the outputs must agree."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model import onnx_import
from auditsvc.battery.model.meta import ModelMeta
from auditsvc.battery.model.onnx_ops import SUPPORTED_OPS, PathClaims, module_paths

SHAPE = (3, 9, 10)   # odd sizes: SAME padding and ceil_mode have something to do
RNG = np.random.default_rng(0)


def weights(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def node(op, inputs, outputs=("y",), name=None, **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=name or f"/block/{op}", **attrs)


def graph_model(nodes, initializers=None, opset=17, output=None, shape=SHAPE):
    """output: the output's shape where ONNX's shape inference cannot tell it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, output)
    stored = [numpy_helper.from_array(value, name) for name, value in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "case", [x], [y], initializer=stored)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if output is None:
        model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def meta(shape=SHAPE) -> ModelMeta:
    return ModelMeta.from_dict({"name": "t", "version": "1", "classes": ["a", "b"],
                                "input": {"size": list(shape), "mean": [0.0] * shape[0], "std": [1.0] * shape[0]}})


def converted_and_onnxruntime(model, shape=SHAPE, batch=3):
    opset = model.opset_import[0].version
    module = onnx_import._convert(model, "case.onnx", opset, "x", meta(shape))
    session = onnx_import._session(model.SerializeToString(), "case.onnx")
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = module(x).numpy()
    return ours, session.run(None, {"x": x.numpy()})[0]


def chain(*steps):
    """Nodes in a row from x to y: each step is (op, extra inputs, attributes)."""
    nodes, previous = [], "x"
    for index, (op, extra, attrs) in enumerate(steps):
        output = "y" if index == len(steps) - 1 else f"t{index}"
        nodes.append(node(op, [previous, *extra], [output], name=f"/n{index}/{op}", **attrs))
        previous = output
    return nodes


def flat(op, extra=(), **attrs):
    """An op on the flattened input (N, 270)."""
    return chain(("Flatten", (), {}), (op, extra, attrs))


CASES = {
    # name: (nodes, initializers, opset[, output shape])
    "conv-groups-dilations-asymmetric-pads": (chain(("Conv", ["w", "b"], dict(group=3, dilations=[2, 1], strides=[2, 1],
                                                                                pads=[1, 0, 2, 1]))),
                                             {"w": weights(6, 1, 3, 3), "b": weights(6)}, 17),
    "conv-same-upper": (chain(("Conv", ["w"], dict(auto_pad="SAME_UPPER", strides=[2, 2]))),
                        {"w": weights(5, 3, 3, 3)}, 17),
    "conv-same-lower": (chain(("Conv", ["w"], dict(auto_pad="SAME_LOWER", strides=[2, 2]))),
                        {"w": weights(5, 3, 3, 3)}, 17),
    "conv-valid": (chain(("Conv", ["w"], dict(auto_pad="VALID", kernel_shape=[2, 4]))), {"w": weights(2, 3, 2, 4)}, 17),
    "conv-depthwise": (chain(("Conv", ["w"], dict(group=3, pads=[1, 1, 1, 1]))), {"w": weights(3, 1, 3, 3)}, 17),
    "conv-transpose": (chain(("ConvTranspose", ["w", "b"], dict(strides=[2, 2], pads=[1, 1, 1, 1],
                                                               output_padding=[1, 1]))),
                       {"w": weights(3, 2, 3, 3), "b": weights(2)}, 17),
    "batch-normalization": (chain(("BatchNormalization", ["s", "b", "m", "v"], dict(epsilon=1e-3))),
                            {"s": weights(3), "b": weights(3), "m": weights(3), "v": np.abs(weights(3)) + 0.5}, 15),
    "relu": (chain(("Relu", (), {})), {}, 17),
    "leaky-relu": (chain(("LeakyRelu", (), dict(alpha=0.2))), {}, 17),
    "sigmoid": (chain(("Sigmoid", (), {})), {}, 17),
    "tanh": (chain(("Tanh", (), {})), {}, 17),
    "hard-swish": (chain(("HardSwish", (), {})), {}, 17),
    "hard-sigmoid": (chain(("HardSigmoid", (), {})), {}, 17),
    "hard-sigmoid-torch": (chain(("HardSigmoid", (), dict(alpha=1 / 6))), {}, 17),
    "clip-relu6-inputs": (chain(("Clip", ["lo", "hi"], {})), {"lo": np.float32(0), "hi": np.float32(6)}, 13),
    "clip-min-only": (chain(("Clip", ["lo"], {})), {"lo": np.float32(-0.5)}, 13),
    "clip-attributes": (chain(("Clip", (), dict(min=-1.0, max=0.5))), {}, 10),
    "add-tensors": ([node("Relu", ["x"], ["r"]), node("Add", ["x", "r"])], {}, 17),
    "add-broadcast-constant": (chain(("Add", ["c"], {})), {"c": weights(3, 1, 1)}, 17),
    "sub-constant-first": ([node("Sub", ["c", "x"])], {"c": np.float32(2.0)}, 17),
    "mul-scalar": (chain(("Mul", ["c"], {})), {"c": np.array([3.0], np.float32)}, 17),
    "div-constant-first": ([node("Sigmoid", ["x"], ["r"]), node("Div", ["c", "r"])], {"c": weights(1, 3, 1, 1)}, 17),
    "concat": ([node("Relu", ["x"], ["r"]), node("Concat", ["x", "r"], axis=1)], {}, 17),
    "max-pool-ceil-pads": (chain(("MaxPool", (), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                                      ceil_mode=1))), {}, 17),
    "max-pool-same-upper": (chain(("MaxPool", (), dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"))),
                            {}, 17),
    "max-pool-asymmetric": (chain(("MaxPool", (), dict(kernel_shape=[3, 2], pads=[0, 1, 2, 0]))), {}, 17),
    "average-pool-excluding-pads": (chain(("AveragePool", (), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))), {}, 17),
    "average-pool-including-pads": (chain(("AveragePool", (), dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                   pads=[1, 1, 1, 1], count_include_pad=1))), {}, 17),
    "average-pool-ceil": (chain(("AveragePool", (), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))), {}, 17),
    "average-pool-same-upper": (chain(("AveragePool", (), dict(kernel_shape=[2, 2], strides=[2, 2],
                                                               auto_pad="SAME_UPPER"))), {}, 17),
    "average-pool-asymmetric-including-pads": (chain(("AveragePool", (), dict(kernel_shape=[3, 3], pads=[0, 0, 2, 1],
                                                                              count_include_pad=1))), {}, 17),
    "global-average-pool": (chain(("GlobalAveragePool", (), {})), {}, 17),
    "global-max-pool": (chain(("GlobalMaxPool", (), {})), {}, 17),
    "gemm-linear": (flat("Gemm", ["w", "c"], transB=1, alpha=0.5, beta=2.0), {"w": weights(5, 270), "c": weights(5)},
                    17),
    "gemm-untransposed-row-bias": (flat("Gemm", ["w", "c"]), {"w": weights(270, 5), "c": weights(1, 5)}, 17),
    "gemm-transposed-input": (chain(("Flatten", (), {}), ("Transpose", (), {}), ("Gemm", ["w"], dict(transA=1))),
                              {"w": weights(270, 5)}, 17),
    "matmul-constant": (flat("MatMul", ["w"]), {"w": weights(270, 7)}, 17),
    "matmul-tensors": ([node("Reshape", ["x", "s"], ["r"]), node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
                        node("MatMul", ["r", "t"])], {"s": ints(0, 3, -1)}, 17),
    "flatten-axis-2": (chain(("Flatten", (), dict(axis=2))), {}, 17),
    "reshape-zero-and-minus-one": (chain(("Reshape", ["s"], {})), {"s": ints(0, 2, -1, 5)}, 17),
    "reshape-from-shape": ([node("Shape", ["x"], ["shape"]), node("Gather", ["shape", "zero"], ["batch"], axis=0),
                            node("Unsqueeze", ["batch", "axes"], ["batch1"]),
                            node("Concat", ["batch1", "minus"], ["target"], axis=0),
                            node("Reshape", ["x", "target"])],
                           {"zero": np.array(0, np.int64), "axes": ints(0), "minus": ints(-1)}, 13, ["N", 270]),
    "transpose": (chain(("Transpose", (), dict(perm=[0, 2, 3, 1]))), {}, 17),
    "squeeze-unsqueeze-inputs": (chain(("GlobalAveragePool", (), {}), ("Squeeze", ["a"], {}), ("Unsqueeze", ["b"], {})),
                                 {"a": ints(2, 3), "b": ints(-1)}, 13),
    "squeeze-unsqueeze-attributes": (chain(("GlobalMaxPool", (), {}), ("Squeeze", (), dict(axes=[3])),
                                           ("Unsqueeze", (), dict(axes=[1]))), {}, 11),
    "squeeze-without-axes": (chain(("GlobalAveragePool", (), {}), ("Squeeze", (), {})), {}, 13, ["N", 3]),
    "softmax": (chain(("Softmax", (), dict(axis=1))), {}, 13),
    "softmax-opset-11-flattens": (chain(("Softmax", (), dict(axis=1))), {}, 11),
    "log-softmax": (flat("LogSoftmax"), {}, 13),
    "identity-dropout": (chain(("Identity", (), {}), ("Dropout", (), {})), {}, 13),
    "constant": ([node("Constant", [], ["c"], value=numpy_helper.from_array(weights(1, 3, 1, 1))),
                  node("Mul", ["x", "c"])], {}, 17),
    "cast": (chain(("Cast", (), dict(to=TensorProto.FLOAT))), {}, 17),
    "gather": (chain(("Gather", ["i"], dict(axis=1))), {"i": ints(0, 2)}, 17),
    "gather-scalar": (chain(("Gather", ["i"], dict(axis=2))), {"i": np.array(-1, np.int64)}, 17),
    "reduce-mean": (chain(("ReduceMean", (), dict(axes=[2, 3], keepdims=0))), {}, 13),
    "reduce-mean-axes-input": (chain(("ReduceMean", ["a"], {})), {"a": ints(-1)}, 18),
    "pad-constant": (chain(("Pad", ["p", "v"], {})), {"p": ints(0, 0, 1, 2, 0, 0, 3, 0), "v": np.float32(0.5)}, 13),
    "pad-reflect": (chain(("Pad", ["p"], dict(mode="reflect"))), {"p": ints(0, 0, 1, 2, 0, 0, 2, 1)}, 13),
    "pad-edge": (chain(("Pad", ["p"], dict(mode="edge"))), {"p": ints(0, 0, 1, 2, 0, 0, 2, 1)}, 13),
    "resize-nearest": (chain(("Resize", ["", "s"], dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                                         nearest_mode="floor"))),
                       {"s": np.array([1, 1, 2, 2], np.float32)}, 13),
    "resize-nearest-exact-down": (chain(("Resize", ["", "s"], dict(mode="nearest", nearest_mode="round_prefer_ceil"))),
                                  {"s": np.array([1, 1, 0.5, 0.5], np.float32)}, 13),
    "resize-linear": (chain(("Resize", ["", "s"], dict(mode="linear"))), {"s": np.array([1, 1, 2, 1.5], np.float32)},
                      13),
    "resize-linear-align-corners-sizes": (chain(("Resize", ["", "", "z"], dict(mode="linear",
                                                coordinate_transformation_mode="align_corners"))),
                                          {"z": ints(3, 3, 5, 7)}, 13),
    "resize-nearest-default-whole-factors": (chain(("Resize", ["", "s"], {})),
                                             {"s": np.array([1, 1, 2, 3], np.float32)}, 13),
    "resize-opset-10": (chain(("Resize", ["s"], dict(mode="nearest"))), {"s": np.array([1, 1, 2, 3], np.float32)}, 10),
    "upsample-opset-9": (chain(("Upsample", ["s"], dict(mode="nearest"))), {"s": np.array([1, 1, 2, 3], np.float32)}, 9),
    "layer-normalization": (chain(("LayerNormalization", ["s", "b"], dict(epsilon=1e-3))),
                            {"s": weights(10), "b": weights(10)}, 17),
    "layer-normalization-two-axes-broadcast-scale": (chain(("LayerNormalization", ["s"], dict(axis=-2))),
                                                     {"s": weights(1, 10)}, 17),
    "erf": (chain(("Erf", (), {})), {}, 13),
    "gelu": (chain(("Gelu", (), {})), {}, 20),
    "gelu-tanh": (chain(("Gelu", (), dict(approximate="tanh"))), {}, 20),
    "swish": (chain(("Swish", (), {})), {}, 24),
    "pow-constant-exponent": (chain(("Pow", ["e"], {})), {"e": np.float32(2.0)}, 13),
    "pow-tensors": ([node("Sigmoid", ["x"], ["s"]), node("Tanh", ["x"], ["t"]), node("Pow", ["s", "t"])], {}, 13),
    "sqrt": (chain(("Sigmoid", (), {}), ("Sqrt", (), {})), {}, 13),
    "softplus": (chain(("Softplus", (), {})), {}, 13),
    "elu": (chain(("Elu", (), dict(alpha=0.5))), {}, 13),
    "selu": (chain(("Selu", (), {})), {}, 13),
    "selu-other-constants": (chain(("Selu", (), dict(alpha=1.5, gamma=1.1))), {}, 13),
    "prelu-per-channel": (chain(("PRelu", ["s"], {})), {"s": weights(3, 1, 1)}, 13),
    "prelu-one-slope": (chain(("PRelu", ["s"], {})), {"s": np.array([0.25], np.float32)}, 13),
    "prelu-broadcast-slope": (chain(("PRelu", ["s"], {})), {"s": weights(10)}, 13),
    "reduce-max": (chain(("ReduceMax", (), dict(axes=[1]))), {}, 13),
    "reduce-sum-axes-input": (chain(("ReduceSum", ["a"], dict(keepdims=0))), {"a": ints(2, 3)}, 13),
    # Split's pieces joined in another order: each output must be its piece
    "split-attribute": ([node("Split", ["x"], ["a", "b"], axis=1, split=[1, 2]), node("Concat", ["b", "a"], axis=1)],
                        {}, 11),
    "split-input": ([node("Split", ["x", "s"], ["a", "b"], axis=3), node("Concat", ["b", "a"], axis=3)],
                    {"s": ints(4, 6)}, 13),
    "split-equal": ([node("Split", ["x"], ["a", "b", "c"], axis=1), node("Concat", ["c", "a", "b"], axis=1)], {}, 13),
    "split-num-outputs-uneven": ([node("Split", ["x"], ["a", "b"], axis=2, num_outputs=2),
                                  node("Concat", ["b", "a"], axis=2)], {}, 18),
    # torch.onnx's x.chunk(2, 1): halves sliced at (channels + 1) // 2, computed from the shape
    "slice-chunk-at-computed-sizes": ([node("Relu", ["x"], ["r"]), node("Shape", ["r"], ["shape"]),
                                       node("Gather", ["shape", "one"], ["c"], axis=0),
                                       node("Add", ["c", "one"], ["c1"]), node("Div", ["c1", "two"], ["half"]),
                                       node("Mul", ["half", "two"], ["end"]),
                                       node("Slice", ["r", "zero", "half", "one"], ["a"]),
                                       node("Slice", ["r", "half", "end", "one"], ["b"], name="/block/Slice_1"),
                                       node("Concat", ["b", "a"], axis=1)],
                                      {"zero": ints(0), "one": ints(1), "two": ints(2)}, 13),
    "slice-steps-negative-axes-clamped": (chain(("Slice", ["s", "e", "a", "p"], {})),
                                          {"s": ints(1, -8), "e": ints(100, 9), "a": ints(-1, 2), "p": ints(2, 3)}, 13),
    "slice-opset-9": (chain(("Slice", (), dict(starts=[1, 0], ends=[3, -1], axes=[1, 3]))), {}, 9),
    "slice-of-a-shape": ([node("Shape", ["x"], ["shape"]), node("Slice", ["shape", "three", "four"], ["w"]),
                          node("Concat", ["zero", "minus", "w"], ["target"], axis=0), node("Reshape", ["x", "target"])],
                         {"three": ints(3), "four": ints(4), "zero": ints(0), "minus": ints(-1)}, 13, ["N", 27, 10]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_op_gives_what_onnxruntime_gives(case):
    ours, theirs = converted_and_onnxruntime(graph_model(*CASES[case]))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_every_supported_op_has_a_case():
    used = {n.op_type for nodes, *_ in CASES.values() for n in nodes}
    assert set(SUPPORTED_OPS) <= used


def test_an_unsupported_attribute_is_refused_naming_the_node():
    model = graph_model(chain(("Resize", ["", "s"], dict(mode="cubic"))), {"s": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(BadInput) as caught:
        onnx_import._convert(model, "m.onnx", 17, "x", meta())
    assert "m.onnx: Resize node '/n0/Resize' has mode 'cubic'" in str(caught.value)


@pytest.mark.parametrize("nodes, initializers, opset, expected", [
    (chain(("Slice", ["s", "e", "a", "p"], {})), {"s": ints(-1), "e": ints(-100), "a": ints(3), "p": ints(-1)}, 13,
     "Slice node '/n0/Slice' has steps [-1]; only positive steps are supported"),
    (chain(("Upsample", ["s"], dict(mode="linear"))), {"s": np.array([1, 1, 2, 2], np.float32)}, 9,
     "Upsample node '/n0/Upsample' has mode 'linear'; re-export with opset 11 or newer"),
    ([node("Split", ["x"], ["a", "b"], axis=0), node("Concat", ["b", "a"], axis=0)], {}, 13,
     "Split node '/block/Split' splits the batch axis"),
    (chain(("Swish", (), dict(alpha=2.0))), {}, 24, "Swish node '/n0/Swish' has alpha 2"),
])
def test_what_a_new_op_does_not_support_is_refused_naming_the_node(nodes, initializers, opset, expected):
    model = graph_model(nodes, initializers, opset, output=["N", 3, 9, 10])
    with pytest.raises(BadInput) as caught:
        onnx_import._convert(model, "m.onnx", opset, "x", meta())
    assert str(caught.value).startswith(f"m.onnx: {expected}")


def test_module_paths_read_like_the_original_modules():
    names = [("/conv1/Conv", "Conv"), ("/layer1/layer1.0/conv1/Conv", "Conv"), ("/layer1/layer1.0/Relu", "Relu"),
             ("/layer1/layer1.0/conv2/Conv", "Conv"), ("/layer1/layer1.0/Add", "Add"),
             ("/layer1/layer1.0/Relu_1", "Relu"),
             ("", "Flatten"), ("/fc/Gemm", "Gemm"), ("/fc/Gemm", "Gemm"), ("weird name!/for", "Relu"),
             ("/graph/Conv", "Conv"), ("_guards_fn", "Relu"), ("onnx_constant_0", "Mul"),
             # one module written as several nodes (LayerNorm2d): a container of them
             ("/stem/stem.1/Transpose", "Transpose"), ("/stem/stem.1/LayerNormalization", "LayerNormalization"),
             ("/stem/stem.1/Transpose_1", "Transpose")]
    nodes = [helper.make_node(op, [], [], name=name) for name, op in names]
    plan = module_paths(nodes)
    claims = PathClaims(plan.paths)
    assert [claims.claim(path) for path in plan.paths] == [
        "conv1", "layer1.0.conv1", "layer1.0.Relu", "layer1.0.conv2", "layer1.0.Add", "layer1.0.Relu_1", "Flatten_6",
        "fc", "fc_2", "weird_name_.for_", "graph_", "n_guards_fn", "nonnx_constant_0",
        "stem.1.Transpose", "stem.1.LayerNormalization", "stem.1.Transpose_1"]
    assert plan.grouped == {"stem.1"}
    assert plan.repeats == [None] * len(names)
    # a module called again: /layer1/relu_1/Relu may be another call of layer1.relu
    again = module_paths([helper.make_node(name.rpartition("/")[2], [], [], name=name) for name in
                          ("/conv1/Conv", "/layer1/relu/Relu", "/layer1/relu_1/Relu", "/layer1/act_1/Relu")])
    assert again.paths == ["conv1", "layer1.relu", "layer1.relu_1", "layer1.act_1"]
    assert again.repeats == [None, None, "layer1.relu", None]


# --- groups of nodes torch.onnx writes for one module ----------------------------------------------

def group(scope, *steps):
    """A ReLU named /stem/Relu giving r, then nodes named as torch.onnx names a module's: /<scope>/<Op>[_n];
    each step is (op, inputs, output, attributes), the last output y."""
    nodes, seen = [helper.make_node("Relu", ["x"], ["r"], name="/stem/Relu")], {}
    for op, inputs, output, attrs in steps:
        count = seen[op] = seen.get(op, -1) + 1
        nodes.append(helper.make_node(op, inputs, [output], name=f"/{scope}/{op}" + (f"_{count}" if count else ""),
                                      **attrs))
    return nodes


GROUPS = {
    # name: (nodes, initializers, opset, {module path: torch module type})
    "silu": (group("act", ("Sigmoid", ["r"], "s", {}), ("Mul", ["r", "s"], "y", {})), {}, 17, {"act": nn.SiLU}),
    "hardswish-before-opset-14": (group("act", ("HardSigmoid", ["r"], "s", dict(alpha=1 / 6)),
                                        ("Mul", ["s", "r"], "y", {})), {}, 13, {"act": nn.Hardswish}),
    "gelu-before-opset-20": (group("act", ("Constant", [], "c", dict(value=numpy_helper.from_array(
                                              np.float32(np.sqrt(2))))),
                                   ("Div", ["r", "c"], "d", {}), ("Erf", ["d"], "e", {}), ("Add", ["e", "one"], "a", {}),
                                   ("Mul", ["r", "a"], "m", {}), ("Mul", ["m", "half"], "y", {})),
                             {"one": np.float32(1), "half": np.float32(0.5)}, 17, {"act": nn.GELU}),
    "layer-norm-before-opset-17": (group("norm", ("ReduceMean", ["r"], "mean", dict(axes=[-1])),
                                         ("Sub", ["r", "mean"], "centred", {}), ("Pow", ["centred", "two"], "square", {}),
                                         ("ReduceMean", ["square"], "variance", dict(axes=[-1])),
                                         ("Add", ["variance", "eps"], "plus", {}), ("Sqrt", ["plus"], "root", {}),
                                         ("Div", ["centred", "root"], "normed", {}), ("Mul", ["normed", "w"], "m", {}),
                                         ("Add", ["m", "b"], "y", {})),
                                   {"two": np.float32(2), "eps": np.float32(1e-5), "w": weights(10), "b": weights(10)},
                                   13, {"norm": nn.LayerNorm}),
    "linear-on-a-map": (group("fc", ("MatMul", ["r", "w"], "m", {}), ("Add", ["b", "m"], "y", {})),
                        {"w": weights(10, 4), "b": weights(4)}, 17, {"fc": nn.Linear}),
    # LayerNorm2d: a container whose output is the module's, the LayerNorm inside it
    "layer-norm-2d-between-transposes": (group("norm", ("Transpose", ["r"], "t", dict(perm=[0, 2, 3, 1])),
                                               ("LayerNormalization", ["t", "s", "b"], "n", {}),
                                               ("Transpose", ["n"], "y", dict(perm=[0, 3, 1, 2]))),
                                         {"s": weights(3), "b": weights(3)}, 17,
                                         {"norm.LayerNormalization": nn.LayerNorm}),
}


@pytest.mark.parametrize("case", list(GROUPS))
def test_a_group_torch_onnx_writes_for_one_module_becomes_that_module(case):
    nodes, initializers, opset, expected = GROUPS[case]
    model = graph_model(nodes, initializers, opset)
    module = onnx_import._convert(model, "case.onnx", opset, "x", meta())
    modules = dict(module.named_modules())
    assert {path: type(modules.get(path)) for path in expected} == expected
    ours, theirs = converted_and_onnxruntime(model)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_a_group_whose_inner_value_is_used_elsewhere_stays_apart():
    nodes = group("act", ("Sigmoid", ["r"], "s", {}), ("Mul", ["r", "s"], "m", {}), ("Add", ["m", "s"], "y", {}))
    model = graph_model(nodes)
    module = onnx_import._convert(model, "case.onnx", 17, "x", meta())
    assert [type(module.get_submodule(f"act.{op}")).__name__ for op in ("Sigmoid", "Mul", "Add")] == [
        "Sigmoid", "Mul", "Add"]
    ours, theirs = converted_and_onnxruntime(model)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_a_module_called_again_is_one_module_and_one_of_other_weights_keeps_its_name():
    """torch.onnx numbers a module's next call (/block/relu_1); /block/conv_1 here is another module."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="/stem/Relu"),
             helper.make_node("Conv", ["r", "w"], ["c"], name="/block/conv/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["a"], name="/block/relu/Relu"),
             helper.make_node("Conv", ["a", "v"], ["d"], name="/block/conv_1/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["d"], ["y"], name="/block/relu_1/Relu")]
    model = graph_model(nodes, {"w": weights(3, 3, 3, 3), "v": weights(3, 3, 3, 3)})
    module = onnx_import._convert(model, "case.onnx", 17, "x", meta())
    calls = [n.target for n in module.graph.nodes if n.op == "call_module"]
    assert calls == ["stem", "block.conv", "block.relu", "block.conv_1", "block.relu"]
    ours, theirs = converted_and_onnxruntime(model)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_an_activation_module_called_twice_is_fused_at_each_call():
    nodes = group("act", ("Sigmoid", ["r"], "s", {}), ("Mul", ["r", "s"], "m", {}))
    nodes += [helper.make_node("Sigmoid", ["m"], ["s1"], name="/act_1/Sigmoid"),
              helper.make_node("Mul", ["m", "s1"], ["y"], name="/act_1/Mul")]
    model = graph_model(nodes)
    module = onnx_import._convert(model, "case.onnx", 17, "x", meta())
    called = [type(module.get_submodule(n.target)) for n in module.graph.nodes if n.op == "call_module"]
    assert called == [nn.ReLU, nn.SiLU, nn.SiLU]
    ours, theirs = converted_and_onnxruntime(model)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
