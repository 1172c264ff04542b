"""The layer outputs section: convolutions spread from the first to the deepest, one figure per image."""

import numpy as np
import pytest
import torch
from torch import nn

from auditsvc.battery.results import Figure
from auditsvc.battery.sections.layer_outputs import _panel
from tests.battery.sections.support import run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]


def six_convolutions() -> nn.Module:
    layers, channels = [], 3
    for index in range(6):
        layers += [nn.Conv2d(channels, 4, 3, padding=1, stride=2 if index == 3 else 1), nn.ReLU()]
        channels = 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return write_probe(tmp_path_factory.mktemp("layer_outputs_probe"), CLASSES, per_class=2, size=(32, 32))


@pytest.mark.parametrize("samples, images", [(1, 1), (4, 2)])
def test_four_convolutions_early_to_deep_and_a_figure_per_image(tmp_path, probe, samples, images):
    torch.manual_seed(0)
    package = write_package(tmp_path, six_convolutions(), CLASSES)
    outputs = section(run(package, probe, ["layer_outputs"], samples=samples), "layer_outputs")
    # Convolutions 1, 3, 4 and 6 of six (np.linspace(0, 5, 4) rounded): the module paths 0, 4, 6 and 10.
    assert outputs.data["layers"] == ["0", "4", "6", "10"]
    assert outputs.data["images"] == images
    figures = [b for b in outputs.blocks if isinstance(b, Figure)]
    assert len(figures) == images and len(outputs.blocks) == images
    for figure in figures:
        assert figure.title.startswith("Feature maps of ") and figure.title.endswith(".png")
        assert figure.png.startswith(b"\x89PNG")
    assert len({f.title for f in figures}) == images   # different images, one per class first


def test_a_net_with_few_convolutions_shows_them_all(tmp_path, probe):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    outputs = section(run(write_package(tmp_path, model, CLASSES), probe, ["layer_outputs"]), "layer_outputs")
    assert outputs.data["layers"] == ["0", "2"]


def test_a_map_that_is_the_same_everywhere_is_said_in_words():
    assert _panel(np.zeros((4, 4))).image is None and "zero everywhere" in _panel(np.zeros((4, 4))).note
    ramp = _panel(np.arange(16.0).reshape(4, 4) - 3)
    assert ramp.image.min() == 0.0 and ramp.image.max() == 1.0 and not ramp.note
