import pytest
import torch
from torch import nn

from auditsvc.battery.model.graph import ModelGraph, Tap
from auditsvc.battery.model.loading import load_model
from auditsvc.demo.nets import PlainNet, SeparableNet, export, tiny_resnet
from tests.conftest import write_package

SIZE = (3, 32, 32)


def _graph(model, fmt=None, tmp_path=None) -> ModelGraph:
    if fmt is None:
        return ModelGraph(export(model.eval(), SIZE), SIZE)
    loaded = load_model(write_package(tmp_path, model, ["a", "b", "c"], fmt=fmt))
    return ModelGraph(loaded.program, SIZE, module_types=loaded.module_types)


def _eager_outputs(model, batch, names):
    captured = {}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda module, args, output, name=name: captured.__setitem__(name, output.detach().clone()))
        for name in names]
    try:
        logits = model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, captured


def test_layers_are_module_paths_and_functional_ops_inside_containers():
    graph = _graph(tiny_resnet(3))
    names = [layer.name for layer in graph.layers]
    for expected in ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn2", "layer1.0", "layer2.0.downsample.0", "fc"]:
        assert expected in names
    assert any(name.startswith("layer1.0:add") for name in names)  # the residual sum
    assert names.index("conv1") < names.index("layer1.0.conv1") < names.index("layer2.0.conv1") < names.index("fc")
    assert graph.layer("layer2.0.conv1").shape == (16, 16, 16)
    assert graph.layer("fc").shape == (3,)
    assert graph.layer("layer1.0").leaf is False
    assert graph.relu_count == 5  # stem + two per block, all functional and in-place
    assert graph.last_spatial_layer().name.startswith("layer2.0")


def test_activations_match_the_eager_model_in_one_pass():
    torch.manual_seed(0)
    model = tiny_resnet(3).eval()
    graph = _graph(model)
    names = ["conv1", "bn1", "layer1.0.conv2", "layer1.0", "layer2.0.downsample", "layer2", "fc"]
    batch = torch.randn(4, *SIZE)
    logits, outputs = graph.activations(batch, names)
    eager_logits, eager = _eager_outputs(model, batch, names)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-5)
    for name in names:
        torch.testing.assert_close(outputs[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)


def test_in_place_relu_does_not_overwrite_a_captured_activation():
    # The eager bn1 output is overwritten by F.relu(..., inplace=True); the graph keeps it.
    torch.manual_seed(0)
    graph = _graph(tiny_resnet(3))
    _, outputs = graph.activations(torch.randn(2, *SIZE), ["bn1"])
    assert float(outputs["bn1"].min()) < 0


@pytest.mark.parametrize("fmt", ["script", "trace"])
def test_torchscript_layers_are_named_by_the_weights_they_read(tmp_path, fmt):
    graph = _graph(PlainNet(3, widths=(4, 8)), fmt, tmp_path)
    names = [layer.name for layer in graph.layers]
    assert {"features.0", "features.1", "features.4", "classifier"} <= set(names)
    assert graph.layer("features.0").type == "Conv2d"
    assert graph.layer("features.4").shape == (8, 16, 16)
    assert graph.relu_count == 2


def test_relu_rewrite_covers_module_functional_and_in_place_relus_and_is_released():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU(inplace=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.act(self.conv(x))
            x = torch.relu(x - 0.1)
            x = nn.functional.relu(x - 0.1, inplace=True)
            return self.head(x.mean(dim=(2, 3)))

    graph = _graph(Mixed())
    assert graph.relu_count == 3
    base_code = graph.module.code
    batch = torch.randn(2, *SIZE)
    expected = graph(batch)
    with graph.rewrite(relu="guided", taps=["conv"], outputs=["conv"], fast=False) as rewrite:
        assert "guided_relu" in rewrite.module.code and "aten.relu" not in rewrite.module.code
        assert isinstance(rewrite.taps["conv"], Tap)
        logits, conv = rewrite.module(batch)
        torch.testing.assert_close(logits, expected)
        seen = []
        rewrite.hook(rewrite.taps["conv"], "forward", lambda m, a, out: seen.append(out.shape))
        rewrite.module(batch)
        assert seen == [(2, 4, 32, 32)]
        tap = rewrite.taps["conv"]
    assert rewrite.module is None and not tap._forward_hooks  # hooks removed on exit
    assert graph.module.code == base_code  # the base graph is never modified
    assert not any(isinstance(m, (Tap, nn.ReLU)) for m in graph.module.modules())


def test_silu_and_hardswish_nets_have_no_relu():
    assert _graph(SeparableNet(3, widths=(4, 8), activation=nn.SiLU)).relu_count == 0
    graph = _graph(SeparableNet(3, widths=(4, 8)))
    assert graph.layer("blocks.0.act1").type == "Hardswish"


def test_fast_graph_folds_batch_norm_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = tiny_resnet(3).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    graph = _graph(model)
    assert "batch_norm" not in graph.fast.code and "batch_norm" in graph.module.code
    batch = torch.randn(3, *SIZE)
    torch.testing.assert_close(graph(batch), model(batch), rtol=1e-4, atol=1e-5)
    assert graph.fast_node("bn1") is not None and graph.fast_node("conv1") is None
    for layer in ("bn1", "conv1", "layer1.0"):
        with graph.rewrite(outputs=[layer]) as rewrite:
            _, output = rewrite.module(batch)
        torch.testing.assert_close(output, graph.activations(batch, [layer])[1][layer], rtol=1e-4, atol=1e-5)
