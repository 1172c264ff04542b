"""Every CNN family users upload (tests/families.py and the demo nets) as model.onnx from torch.onnx's
TorchScript-based exporter, with a dynamic batch axis: converted, it gives onnxruntime's logits and the
original's, its layers carry the original modules' names and types, and the graph reading (output and
penultimate layers, receptive fields) finds what it finds in the same model's torch.export archive.

Every net is exported at the exporter's default opset (20 with torch 2.13); a few also at older opsets, where
torch.onnx writes them with other ops.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from auditsvc.battery.model import onnx_import
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.model.receptive_field import receptive_fields
from auditsvc.demo.nets import PlainNet, SeparableNet, tiny_resnet
from tests.battery.model.test_families import graph_of
from tests.conftest import write_meta
from tests.families import FAMILIES, INPUT, MORE, build

SMALL = (3, 16, 16)
NETS = {family: (lambda family=family: build(family, 0), INPUT) for family in [*FAMILIES, *MORE]} | {
    "plain": (lambda: PlainNet(2, widths=(4, 8)), SMALL),
    "tiny-resnet": (lambda: tiny_resnet(2), SMALL),
    "separable-silu": (lambda: SeparableNet(2, widths=(4, 8), activation=nn.SiLU), SMALL),
    "separable-hardswish": (lambda: SeparableNet(2, widths=(4, 8)), SMALL),
}
DEFAULT = None   # the exporter's own opset
OLDER = [
    ("convnext", 17),              # LayerNormalization; GELU as Div, Erf, Add, Mul, Mul
    ("convnext", 13),              # LayerNorm as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add
    ("separable-hardswish", 13),   # Hardswish as HardSigmoid * x
    ("shufflenet", 11),            # Split by attribute, ReduceMean's axes an attribute
]
CASES = [(name, DEFAULT) for name in NETS] + OLDER
# Modules the converted graph has as layers of the same name and type (torch.onnx folds BatchNorm into the
# convolution before it and drops Dropout).
KEPT = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.GELU, nn.SiLU, nn.Hardswish, nn.ReLU, nn.MaxPool2d)
SPOT_CHECKS = {   # names read like the original's, whatever ops torch.onnx wrote them as
    "convnext": {"stage1.0.norm": "LayerNorm", "stage1.0.act": "GELU", "stage1.0.pwconv1": "Linear",
                 "stem.1": "Module"},   # LayerNorm2d: Transpose, LayerNormalization, Transpose
    "shufflenet": {"stage2.1.Slice": "Slice", "stage2.2.Split": "Split", "stage2.1.branch2.3": "Conv2d"},
    "resnext": {"layer1.relu": "ReLU", "layer1": "Module", "layer2.downsample.0": "Conv2d"},
    "senet": {"layer2.se.fc1": "Linear", "layer1.se.fc2": "Conv2d", "layer1.se": "Module"},
}

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: a second thread mostly spins


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(eager net, loaded model, model.onnx bytes) of a net at an opset, exported and loaded once."""
    done: dict[tuple[str, int | None], tuple[nn.Module, object, bytes]] = {}

    def get(name: str, opset: int | None):
        if (name, opset) not in done:
            make, size = NETS[name]
            torch.manual_seed(0)
            net = make().eval()
            directory = tmp_path_factory.mktemp(f"{name}-{opset}")
            path = directory / "model.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (torch.randn(2, *size),), str(path), dynamo=False, input_names=["input"],
                                  dynamic_axes={"input": {0: "batch"}},
                                  **({} if opset is None else {"opset_version": opset}))
            write_meta(directory / "model.json", ["a", "b"], size)
            done[name, opset] = net, load_model(path), path.read_bytes()
        return done[name, opset]
    return get


def batch(size, count: int = 3) -> torch.Tensor:
    return torch.randn(count, *size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name, opset", CASES, ids=[f"{name}-opset-{opset or 'default'}" for name, opset in CASES])
def test_a_net_from_torch_onnx_gives_onnxruntimes_and_its_own_logits_with_its_modules(converted, name, opset):
    net, loaded, data = converted(name, opset)
    inputs = batch(NETS[name][1])
    module = loaded.program.module()
    with torch.no_grad():
        logits = module(inputs)
        expected = net(inputs)
    session = onnx_import._session(data, "model.onnx")
    reference = session.run(None, {"input": inputs.numpy()})[0]
    assert np.abs(logits.numpy() - reference).max() <= 1e-4
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    kept = {path: type(m).__name__ for path, m in net.named_modules() if type(m) in KEPT}
    assert {path: recorded_modules(loaded.program).get(path) for path in kept} == kept


def recorded_modules(program: torch.export.ExportedProgram) -> dict[str, str]:
    """{module path: type} of the modules the program's ops run in (what the layer list is made of)."""
    return {path: kind.rsplit(".", 1)[-1] for node in program.graph.nodes
            for path, kind in node.meta.get("nn_module_stack", {}).values() if path}


@pytest.mark.parametrize("name", [*FAMILIES, *MORE])
def test_the_graph_reads_as_the_torch_export_archives(converted, name):
    """Layers named as the original's modules and blocks; output and penultimate layers and receptive fields
    as in the same net's torch.export archive; the fast copy (BatchNorm folded, channels-last) gives the
    original's logits."""
    net, loaded, _ = converted(name, DEFAULT)
    size = NETS[name][1]
    graph, original = ModelGraph(loaded.program, size), graph_of(name)[1]   # shared with test_families.py
    layers = {layer.name: layer.type for layer in graph.layers}
    blocks = {path for path, module in net.named_modules() if path and list(module.children())}
    assert blocks <= set(layers)   # blocks (layer1, layer1.0) are layers too, giving their last op's output
    assert SPOT_CHECKS.get(name, {}).items() <= layers.items()
    assert graph.output_layer().shape == original.output_layer().shape
    assert graph.penultimate_layer().shape == original.penultimate_layer().shape
    fields, expected = receptive_fields(graph), receptive_fields(original)
    maps = {layer.name for layer in graph.leaf_layers() if layer.is_spatial and layer.shape[1] * layer.shape[2] > 1}
    assert maps <= set(fields)
    shared = set(fields) & set(expected)
    assert len(shared) >= 3
    assert {name: fields[name] for name in shared} == {name: expected[name] for name in shared}
    inputs = batch(size)
    with torch.no_grad():
        torch.testing.assert_close(graph(inputs), net(inputs), rtol=0, atol=1e-4)
