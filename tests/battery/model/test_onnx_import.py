"""model.onnx: CNNs exported by torch.onnx load as exported programs with onnxruntime's logits and the
original's layer names; files that are not such a model are refused in one line naming the problem."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from auditsvc.battery import AuditOptions, audit, open_probe_set
from auditsvc.battery.errors import BadInput
from auditsvc.battery.model import onnx_import, onnx_ops
from auditsvc.battery.model.archive import model_kind
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.loading import load_model
from auditsvc.demo.nets import PlainNet, SeparableNet, tiny_resnet
from tests.conftest import write_meta, write_package, write_probe

CLASSES = ["a", "b", "c"]
SIZE = (3, 16, 16)

NETS = {
    "plain": lambda: PlainNet(3, widths=(4, 8)),                             # conv, ReLU, max pool, Gemm
    "residual": lambda: tiny_resnet(3),                                       # Add
    "separable-hardswish": lambda: SeparableNet(3, widths=(4, 8)),            # groups=C, HardSwish, ReduceMean
    "separable-relu6": lambda: SeparableNet(3, widths=(4, 8), activation=nn.ReLU6),   # Clip(0, 6)
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Each net exported by torch.onnx (which folds BatchNorm into the convolutions) and loaded."""
    torch.manual_seed(0)
    loaded = {}
    for name, make in NETS.items():
        net = make().eval()
        path = write_package(tmp_path_factory.mktemp(name), net, CLASSES, SIZE, fmt="onnx")
        loaded[name] = (net, path, load_model(path))
    return loaded


@pytest.mark.parametrize("name", list(NETS))
def test_a_cnn_converts_to_an_exported_program_with_onnxruntimes_logits(packages, name):
    net, path, loaded = packages[name]
    assert isinstance(loaded.program, torch.export.ExportedProgram) and loaded.format == "onnx"
    batch = torch.randn(5, *SIZE)   # not the batch size either exporter saw
    converted = loaded.program.module()(batch)
    session = onnx_import._session(path.read_bytes(), path.name)
    expected = session.run(None, {"input": batch.numpy()})[0]
    assert np.abs(converted.detach().numpy() - expected).max() <= 1e-4
    torch.testing.assert_close(converted, net(batch), rtol=1e-4, atol=1e-4)
    assert loaded.origin.difference <= 1e-4 and loaded.origin.describe().startswith("converted from ONNX (opset ")


def test_a_graph_of_keras_style_ops_converts_and_exports_with_a_dynamic_batch(tmp_path):
    """What torch.onnx does not write: explicit Pad, SAME padding, BatchNormalization, Clip as ReLU6, a
    flatten spelled with Shape/Gather/Concat, Resize; through torch.export and onnxruntime's check."""
    rng = np.random.default_rng(0)

    def stored(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def constant(name, values, dtype=np.int64):
        return numpy_helper.from_array(np.array(values, dtype), name)

    node = helper.make_node
    nodes = [
        node("Pad", ["x", "pads"], ["padded"], name="stem/pad", mode="reflect"),
        node("Conv", ["padded", "w", "b"], ["conv"], name="stem/conv2d/Conv2D", auto_pad="SAME_UPPER", strides=[2, 2]),
        node("BatchNormalization", ["conv", "scale", "shift", "mean", "var"], ["norm"], name="stem/bn"),
        node("Clip", ["norm", "zero", "six"], ["act"], name="stem/relu6"),
        node("AveragePool", ["act"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
        node("Resize", ["pool", "", "scales"], ["up"], name="up"),
        node("Shape", ["up"], ["shape"], name="flatten/shape"),
        node("Gather", ["shape", "first"], ["batch"], name="flatten/batch", axis=0),
        node("Unsqueeze", ["batch", "axes"], ["batch1"], name="flatten/unsqueeze"),
        node("Concat", ["batch1", "rest"], ["target"], name="flatten/concat", axis=0),
        node("Reshape", ["up", "target"], ["flat"], name="flatten/reshape"),
        node("Gemm", ["flat", "dense", "bias"], ["y"], name="dense/MatMul", transB=1),
    ]
    stats = [stored("scale", 4), stored("shift", 4), stored("mean", 4),
             numpy_helper.from_array(np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5, "var")]
    initializers = [constant("pads", [0, 0, 1, 1, 0, 0, 1, 1]), stored("w", 4, 3, 3, 3), stored("b", 4), *stats,
                    constant("zero", 0.0, np.float32), constant("six", 6.0, np.float32),
                    constant("scales", [1, 1, 2, 2], np.float32), constant("first", 0), constant("axes", [0]),
                    constant("rest", [-1]), stored("dense", 3, 4 * 10 * 10), stored("bias", 3)]
    loaded = load_model(_package(tmp_path, nodes, initializers, opset=13))
    session = onnx_import._session((tmp_path / "model.onnx").read_bytes(), "model.onnx")
    batch = torch.randn(7, *SIZE)
    expected = session.run(None, {"x": batch.numpy()})[0]
    assert np.abs(loaded.program.module()(batch).detach().numpy() - expected).max() <= 1e-4
    layers = {layer.name: layer.type for layer in ModelGraph(loaded.program, SIZE).layers}
    assert {"stem.conv2d.Conv2D": "Conv2d", "stem.bn": "BatchNorm2d", "stem.relu6": "ReLU6",
            "dense.MatMul": "Linear"}.items() <= layers.items()


def test_layers_are_named_and_typed_as_in_the_original_model(packages):
    net, _, loaded = packages["residual"]
    layers = {layer.name: layer for layer in ModelGraph(loaded.program, SIZE).layers}
    convolutions = {name for name, module in net.named_modules() if isinstance(module, nn.Conv2d)}
    assert convolutions == {name for name, layer in layers.items() if layer.type == "Conv2d"}
    assert layers["fc"].type == "Linear" and layers["layer2.0.conv1"].parameters == 16 * 8 * 9 + 16
    assert layers["layer1.0.Add"].type == "Add" and layers["layer1.0.Relu_1"].type == "ReLU"


def test_the_audit_checks_onnxruntime_on_probe_images_first_and_reports_it(packages, tmp_path):
    _, path, _ = packages["plain"]
    probe = write_probe(tmp_path / "probe", CLASSES, per_class=3, size=(20, 20), manifest=False)
    loaded = load_model(path)
    with open_probe_set(probe, CLASSES) as images:
        result = audit(loaded, images, AuditOptions(sections=["summary"], samples=2))
    identity = dict(result.sections[0].blocks[0].rows)
    assert identity["file"] == "model.onnx (onnx)"
    assert identity["conversion"].startswith("converted from ONNX (opset ")
    assert identity["conversion"].endswith("on 9 probe images") and "match onnxruntime within" in identity["conversion"]


def test_an_audit_is_refused_before_any_section_when_the_logits_differ_on_probe_images(packages, tmp_path):
    _, path, _ = packages["plain"]
    _, _, other = packages["residual"]
    probe = write_probe(tmp_path / "probe", CLASSES, per_class=2, size=(20, 20), manifest=False)
    loaded = load_model(path)
    loaded.program = other.program   # a converted graph that is not this model's
    with open_probe_set(probe, CLASSES) as images, pytest.raises(BadInput) as caught:
        audit(loaded, images, AuditOptions(sections=["summary"]))
    assert "differ from onnxruntime's by up to" in str(caught.value) and "on 6 probe images" in str(caught.value)


def test_a_conversion_that_gets_an_op_wrong_is_refused_at_load(packages, tmp_path, monkeypatch):
    _, path, _ = packages["plain"]
    monkeypatch.setitem(onnx_ops.CONVERTERS, "Relu", onnx_ops.CONVERTERS["Sigmoid"])
    message = _error(path)
    assert message.startswith("model.onnx: the model converted from ONNX gives logits that differ from onnxruntime's")
    assert "on 4 random inputs" in message


def test_an_onnx_file_is_recognised_by_its_name_and_read_only_in_the_loader(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"anything")
    assert model_kind(path) == "onnx"
    other = tmp_path / "model.bin"
    other.write_bytes(b"anything")
    with pytest.raises(BadInput, match="ONNX"):
        model_kind(other)


# --- refusals --------------------------------------------------------------------------------------


def _error(path, meta=None) -> str:
    with pytest.raises(BadInput) as caught:
        load_model(path, meta)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _package(tmp_path, nodes, initializers=(), inputs=None, opset=17, name="model.onnx"):
    """A graph over input x (N, 3, 16, 16) giving y; model.json beside it."""
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SIZE])]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    write_meta(tmp_path / "model.json", CLASSES, SIZE)
    return path


def _pooled(first="x"):
    """x -> global average pool -> flatten: (N, 3)."""
    return [helper.make_node("GlobalAveragePool", [first], ["p"], name="/pool"),
            helper.make_node("Flatten", ["p"], ["y"], name="/flatten")]


def test_a_minimal_graph_loads(tmp_path):
    assert load_model(_package(tmp_path, _pooled())).format == "onnx"


def test_garbage_and_truncated_files_are_refused(tmp_path, packages):
    write_meta(tmp_path / "model.json", CLASSES, SIZE)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)))
    assert _error(garbage, tmp_path / "model.json").startswith("garbage.onnx: not ")
    data = packages["plain"][1].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    assert _error(truncated, tmp_path / "model.json").startswith("truncated.onnx: not ")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "holds no graph" in _error(empty, tmp_path / "model.json")


def test_an_unsupported_op_is_named_with_its_node(tmp_path):
    nodes = [helper.make_node("Einsum", ["x"], ["e"], name="/block/attention/Einsum", equation="nchw->nchw"),
             *_pooled("e")]
    message = _error(_package(tmp_path, nodes))
    assert message.startswith("model.onnx: the op 'Einsum' (node '/block/attention/Einsum') is not supported; "
                              "supported ops: Add,")
    custom = [helper.make_node("FusedConv", ["x"], ["e"], name="fused", domain="com.microsoft"), *_pooled("e")]
    assert "the op 'com.microsoft.FusedConv' (node 'fused')" in _error(_package(tmp_path, custom))


def test_initializers_stored_outside_the_file_are_refused_without_reading_them(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.ones(3, np.float32).tobytes())
    scale = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "scale")
    scale.ClearField("raw_data")
    scale.data_location = TensorProto.EXTERNAL
    scale.external_data.add(key="location", value="weights.bin")
    nodes = [helper.make_node("Mul", ["x", "scale"], ["m"], name="/scale"), *_pooled("m")]
    message = _error(_package(tmp_path, nodes, [scale]))
    assert "the initializer 'scale' is stored outside the file (external data)" in message


@pytest.mark.parametrize("inputs, expected", [
    ([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SIZE]),
      helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], "takes 2 inputs"),
    ([helper.make_tensor_value_info("x", TensorProto.INT64, ["N", *SIZE])], "input 'x' is int64"),
    ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *SIZE])], "fixed batch size of 1"),
    ([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])], "takes input 3x32x32 but model.json"),
    ([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 48])], "2-dimensional input"),
])
def test_inputs_an_image_classifier_does_not_take_are_refused(tmp_path, inputs, expected):
    assert expected in _error(_package(tmp_path, _pooled(), inputs=inputs))


def test_old_opsets_and_huge_graphs_are_refused(tmp_path, monkeypatch):
    assert "opset 8" in _error(_package(tmp_path, _pooled(), opset=8))
    monkeypatch.setattr(onnx_import, "MAX_ONNX_NODES", 1)
    assert "the graph has 2 nodes; at most 1 are accepted" in _error(_package(tmp_path, _pooled()))


def test_a_resize_past_the_value_limit_is_refused_before_it_runs(tmp_path):
    scales = numpy_helper.from_array(np.array([1, 1, 1e5, 1e5], np.float32), "s")
    nodes = [helper.make_node("Resize", ["x", "", "s"], ["r"], name="/up", coordinate_transformation_mode="asymmetric",
                              nearest_mode="floor"), *_pooled("r")]
    assert "Resize node '/up' makes a tensor of shape [2, 3, 1600000, 1600000]" in _error(
        _package(tmp_path, nodes, [scales], opset=13))


def test_a_graph_invalid_for_the_checker_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["nowhere"], ["r"], name="/relu"), *_pooled("r")]
    assert _error(_package(tmp_path, nodes)).startswith("model.onnx: not a valid ONNX model (")


def test_an_output_the_converter_does_not_give_is_refused_where_it_is_used(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["m", "indices"], name="/pool", kernel_shape=[2, 2]),
             helper.make_node("Cast", ["indices"], ["f"], name="/cast", to=TensorProto.FLOAT), *_pooled("f")]
    message = _error(_package(tmp_path, nodes))
    assert "Cast node '/cast' uses the second output of node '/pool' (indices or a dropout mask)" in message
