"""Each supported ONNX op, in a graph of one or a few nodes built with onnx.helper, converted and run beside
onnxruntime on a batch of another size than the example the converter ran: the outputs must agree."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model import onnx_import
from auditsvc.battery.model.meta import ModelMeta
from auditsvc.battery.model.onnx_ops import SUPPORTED_OPS, module_paths

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


def test_module_paths_read_like_the_original_modules():
    names = [("/conv1/Conv", "Conv"), ("/layer1/layer1.0/conv1/Conv", "Conv"), ("/layer1/layer1.0/Relu", "Relu"),
             ("/layer1/layer1.0/conv2/Conv", "Conv"), ("/layer1/layer1.0/Add", "Add"),
             ("/layer1/layer1.0/Relu_1", "Relu"),
             ("", "Flatten"), ("/fc/Gemm", "Gemm"), ("/fc/Gemm", "Gemm"), ("weird name!/for", "Relu"),
             ("/graph/Conv", "Conv"), ("_guards_fn", "Relu"), ("onnx_constant_0", "Mul")]
    nodes = [helper.make_node(op, [], [], name=name) for name, op in names]
    assert module_paths(nodes) == ["conv1", "layer1.0.conv1", "layer1.0.Relu", "layer1.0.conv2", "layer1.0.Add",
                                   "layer1.0.Relu_1", "Flatten_6", "fc", "fc_2", "weird_name_.for_", "graph_",
                                   "n_guards_fn", "nonnx_constant_0"]
