"""The model side on the classic CNN families (tests/families.py): logits of the graph and its fast
copy, layer outputs against the eager model, the output and penultimate layers, channels-last
layers shown channels-first, and receptive fields through shuffles, concatenations and permutes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.model.receptive_field import receptive_fields
from auditsvc.demo.nets import export
from tests.conftest import write_package
from tests.families import FAMILIES, INPUT, MORE, build

ALL = [*FAMILIES, *MORE]
_GRAPHS: dict[str, tuple[nn.Module, ModelGraph]] = {}


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: a second thread mostly spins


def graph_of(family: str) -> tuple[nn.Module, ModelGraph]:
    """The eager model and the graph of its torch.export archive, built once per session."""
    if family not in _GRAPHS:
        model = build(family, 0)
        _GRAPHS[family] = model, ModelGraph(export(model, INPUT), INPUT)
    return _GRAPHS[family]


def batch(count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, *INPUT, generator=torch.Generator().manual_seed(seed))


def eager_outputs(model: nn.Module, inputs: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named module's output on its last call, copied before an in-place op can change it."""
    captured, modules = {}, dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda module, args, output, name=name: captured.__setitem__(name, output.detach().clone()))
        for name in names]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.mark.parametrize("family", ALL)
def test_the_graph_and_its_fast_copy_give_the_eager_logits(family):
    model, graph = graph_of(family)
    inputs = batch()
    with torch.no_grad():
        expected = model(inputs)
        torch.testing.assert_close(graph.module(inputs), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(graph(inputs), expected, rtol=1e-4, atol=1e-5)   # BatchNorm folded, channels-last


@pytest.mark.parametrize("family", ALL)
def test_every_module_layer_gives_the_eager_output_channels_first(family):
    model, graph = graph_of(family)
    modules = dict(model.named_modules())
    layers = [l for l in graph.layers if l.name in modules and not l.type.startswith("fn:")]
    inputs = batch()
    eager = eager_outputs(model, inputs, [l.name for l in layers])
    with torch.no_grad():
        _, outputs = graph.activations(inputs, [l.name for l in layers])
    for layer in layers:
        expected = eager[layer.name]
        if layer.permute is not None:   # a channels-last map (N, H, W, C) is shown as (N, C, H, W)
            expected = expected.permute(*layer.permute)
        torch.testing.assert_close(outputs[layer.name], expected, rtol=1e-4, atol=1e-5, msg=layer.name)
        assert tuple(outputs[layer.name].shape[1:]) == layer.shape, layer.name


def test_convnext_channels_last_layers_are_channels_first():
    _, graph = graph_of("convnext")
    permuted = {l.name for l in graph.layers if l.permute is not None}
    for stage, width in (("stage1.0", 16), ("stage2.0", 32)):
        assert {f"{stage}.norm", f"{stage}.pwconv1", f"{stage}.act", f"{stage}.pwconv2"} <= permuted
        assert graph.layer(f"{stage}.pwconv1").shape[0] == 4 * width        # channels first: (4C, H, W)
        assert graph.layer(f"{stage}.norm").shape == graph.layer(f"{stage}.dwconv").shape
    assert not any(l.is_conv for l in graph.layers if l.name in permuted)
    # A tap on a channels-last layer sees it channels-first and leaves the logits alone.
    inputs, seen = batch(), {}
    with graph.rewrite(taps=["stage1.0.act"]) as rewrite:
        rewrite.hook(rewrite.taps["stage1.0.act"], "forward", lambda m, args, out: seen.setdefault("out", out))
        with torch.no_grad():
            logits = rewrite.module(inputs)
    assert tuple(seen["out"].shape) == (3, 64, 8, 8)
    torch.testing.assert_close(logits, graph(inputs))


def head_width(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.in_features if isinstance(last, nn.Linear) else last.in_channels


@pytest.mark.parametrize("family", ALL)
def test_output_and_penultimate_layers(family):
    model, graph = graph_of(family)
    output, penultimate = graph.output_layer(), graph.penultimate_layer()
    inputs = batch()
    with torch.no_grad():
        logits, outputs = graph.activations(inputs, [output.name, penultimate.name])
    torch.testing.assert_close(outputs[output.name], logits)
    # The penultimate layer is what the head's last weighted layer reads.
    assert penultimate.shape[0] == head_width(model)
    assert graph.layers.index(penultimate) < graph.layers.index(output)


def test_squeezenet_output_is_its_flatten_and_the_head_reads_the_last_fire_module():
    _, graph = graph_of("squeezenet")
    output = graph.output_layer()
    assert output.type == "fn:view" and output.shape == (2,) and output.leaf
    assert graph.penultimate_layer().name == "features.6:cat_2"
    assert graph.penultimate_layer().shape == (24, 3, 3)


def test_torchscript_squeezenet_has_the_same_output_and_penultimate_layers(tmp_path):
    model = build("squeezenet", 0)
    loaded = load_model(write_package(tmp_path, model, ["a", "b"], fmt="script"))
    graph = ModelGraph(loaded.program, INPUT, module_types=loaded.module_types)
    assert graph.output_layer().shape == (2,)
    assert graph.penultimate_layer().shape == (24, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(graph(batch()), model(batch()), rtol=1e-4, atol=1e-5)


def positive(model: nn.Module) -> nn.Module:
    """The model with every weight made positive and BatchNorm statistics neutral: on a positive input
    every unit is active and no gradient cancels, so a unit's input gradient fills all it can see
    (max pooling still routes it through one input per window: several images fill the field)."""
    with torch.no_grad():
        for module in model.modules():
            for parameter in module.parameters(recurse=False):
                parameter.abs_()
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return model


@pytest.mark.parametrize("family", ALL)
def test_every_spatial_layer_has_a_field_and_exact_fields_hold_the_input_gradient(family):
    """The input gradient of one unit is non-zero only inside its exact field and reaches its edges
    (where they lie inside the image: a strided convolution without padding never reads the last
    rows and columns); behind a squeeze-and-excitation gate it reaches beyond, so that field is
    rightly not exact."""
    graph = ModelGraph(export(positive(build(family, 0)), INPUT), INPUT)
    fields = receptive_fields(graph)
    spatial = [l for l in graph.leaf_layers() if l.is_spatial]
    assert {l.name for l in spatial} <= set(fields)
    nodes = {l.node: l for l in spatial if l.shape[1] > 1 and l.shape[2] > 1}   # one layer per distinct output
    layers = list(nodes.values())
    inputs = torch.rand(8, *INPUT, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    with graph.rewrite(outputs=[l.name for l in layers], fast=False) as rewrite:
        _, *outputs = rewrite.module(inputs)
    inexact = []
    for layer, output in zip(layers, outputs):
        field, (_, h, w) = fields[layer.name], layer.shape
        # Channels weighted unevenly: a LayerNorm's outputs at one position sum to a constant.
        weights = torch.linspace(0.5, 1.5, output.shape[1])
        chosen = sum((output[i, :, h // 2, w // 2] * weights).sum() for i in range(len(inputs)))
        (gradient,) = torch.autograd.grad(chosen, inputs, retain_graph=True)
        reached = (gradient.abs().sum(dim=1) > 0).any(dim=0)
        window = field.clipped_window(h // 2, w // 2, INPUT[1], INPUT[2])
        top, left, bottom, right = window
        outside = reached.clone()
        outside[top:bottom, left:right] = False
        if not field.exact:
            inexact.append(layer.name)
            assert outside.any(), layer.name      # an approximate field claims less than the unit sees
            continue
        assert not outside.any(), (layer.name, field)
        support = reached.nonzero()
        first, last = support.min(dim=0).values.tolist(), support.max(dim=0).values.tolist()
        found = (first[0], first[1], last[0] + 1, last[1] + 1)
        inside = [edge not in (0, INPUT[1]) for edge in window]
        assert [f for f, keep in zip(found, inside) if keep] == [e for e, keep in zip(window, inside) if keep], (
            layer.name, field, found)
    if family == "senet":
        assert "layer1.se:mul_35" in inexact and "stem.2" not in inexact
    else:
        assert inexact == []
