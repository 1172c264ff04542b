"""The saliency section: every applicable method on every sample image, Grad-CAM on the last map
with a spatial extent, and the ReLU methods left out (and said so) for a net without ReLUs."""

import math

import pytest
import torch
from torch import nn

from auditsvc.battery.results import Figure, Text
from auditsvc.demo.nets import PlainNet, SeparableNet
from tests.battery.sections.support import run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]
ALL_METHODS = ["gradient", "guided_backprop", "deconvnet", "smoothgrad", "integrated_gradients", "grad_cam"]
OPTIONS = dict(ig_steps=4, smoothgrad_samples=2)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return write_probe(tmp_path_factory.mktemp("saliency_probe"), CLASSES, per_class=3, size=(32, 32))


def test_six_methods_on_every_sample_image_of_a_relu_net(tmp_path, probe):
    torch.manual_seed(0)
    package = write_package(tmp_path, PlainNet(2, widths=(4, 8)), CLASSES)
    result = run(package, probe, ["saliency", "explanation_checks"], samples=3, **OPTIONS)
    saliency = section(result, "saliency")
    assert saliency.data["methods"] == ALL_METHODS
    assert saliency.data["images"] == 3
    assert list(saliency.data["method_seconds"]) == ALL_METHODS
    assert all(seconds >= 0 for seconds in saliency.data["method_seconds"].values())
    # Grad-CAM reads the last map with a spatial extent: the second block's max pool, 8 channels of 8x8.
    assert saliency.data["grad_cam_layer"] == "features.7"
    [figure] = saliency.blocks
    assert isinstance(figure, Figure) and "Grad-CAM (features.7)" in figure.caption
    # The explanation checks compare these maps with those of randomized models: finite maps give finite,
    # bounded rank correlations.
    checks = section(result, "explanation_checks")
    assert set(checks.data["methods"]) == set(ALL_METHODS)
    for method, values in checks.data["methods"].items():
        for stage, correlation in values["rank_correlation"].items():
            assert math.isfinite(correlation) and -1.0 <= correlation <= 1.0, (method, stage, correlation)


def test_a_net_without_relus_leaves_out_guided_backprop_and_deconvnet(tmp_path, probe):
    torch.manual_seed(0)
    package = write_package(tmp_path, SeparableNet(2, widths=(4, 8), activation=nn.SiLU), CLASSES)
    saliency = section(run(package, probe, ["saliency"], samples=2, **OPTIONS), "saliency")
    assert saliency.data["methods"] == ["gradient", "smoothgrad", "integrated_gradients", "grad_cam"]
    assert saliency.data["images"] == 2
    note, figure = saliency.blocks
    assert isinstance(note, Text) and "no ReLU" in note.text and isinstance(figure, Figure)
