"""The summary section: its layer and weight counts are the ones torch reports for the module."""

import pytest
import torch
from torch import nn

from auditsvc.battery.results import Table
from auditsvc.demo.nets import tiny_resnet
from tests.battery.sections.support import run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]


def sequential_net() -> nn.Module:
    """Modules only, no functional op: every layer of the summary is a leaf module."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 2))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return write_probe(tmp_path_factory.mktemp("summary_probe"), CLASSES, per_class=2, size=(32, 32))


def summary_of(model: nn.Module, directory, probe, fmt="pt2"):
    result = run(write_package(directory, model, CLASSES, fmt=fmt), probe, ["summary"])
    return section(result, "summary")


def leaf_modules(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if name and not list(module.children())]


@pytest.mark.parametrize("fmt", ["pt2", "script"])
def test_layers_and_weights_are_what_torch_reports(tmp_path, probe, fmt):
    torch.manual_seed(0)
    model = sequential_net()
    summary = summary_of(model, tmp_path, probe, fmt)
    leaves = leaf_modules(model)
    if fmt == "pt2":
        assert summary.data["layers"] == len(leaves) == 9
    else:  # TorchScript keeps no module for an op without weights: nn.Flatten's view is no layer there
        assert summary.data["layers"] == len(leaves) - 1
    weights = sum(p.numel() for p in model.parameters())
    assert summary.data["parameters"] == weights == 4 * 27 + 4 + 8 + 6 * 36 + 6 * 2 + 2
    # torch.export keeps the parameters as parameters; a TorchScript conversion makes them constants.
    assert summary.data["trainable"] == (weights if fmt == "pt2" else 0)
    assert summary.data["convolutions"] == sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 2
    assert summary.data["relus"] == 2
    layers = next(b for b in summary.blocks if isinstance(b, Table) and b.title == "Layers")
    if fmt == "pt2":   # TorchScript keeps no module for a functional call: those are named by their op
        assert [row[0] for row in layers.rows] == leaves
    assert [row[3] for row in layers.rows][:2] == [f"{4 * 27 + 4:,}", f"{8:,}"]   # conv weights and bias, BN scale and shift
    shapes = [row[2] for row in layers.rows]
    assert shapes[0] == "4x32x32" and shapes[3] == "4x16x16" and shapes[-1] == "2"


def test_functional_operations_are_layers_of_their_own(tmp_path, probe):
    torch.manual_seed(0)
    model = tiny_resnet(2)
    summary = summary_of(model, tmp_path, probe)
    relus = 1 + 2 * 2                               # the stem's and two per block, all F.relu_
    residual_sums = 2
    pooling = 1                                     # F.adaptive_avg_pool2d in the top-level forward
    # nn.Identity (layer3, layer4, pool) computes nothing: no layer.
    computing = [n for n in leaf_modules(model) if not isinstance(dict(model.named_modules())[n], nn.Identity)]
    assert summary.data["layers"] == len(computing) + relus + residual_sums + pooling
    assert summary.data["relus"] == relus
    assert summary.data["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary.findings == []
