"""The saliency section: every applicable method on every sample image, Grad-CAM on the last map
with a spatial extent, and the ReLU methods left out (and said so) for a net without ReLUs."""

import math

import pytest
import torch
from matplotlib.patches import Rectangle
from torch import nn

from auditsvc.battery.results import Figure, Text
from auditsvc.demo.nets import PlainNet, SeparableNet
from tests.battery.sections.support import DrawnFigures, colour_bars, run, section
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
    figure, steps = saliency.blocks
    assert isinstance(figure, Figure) and "Grad-CAM (features.7)" in figure.caption
    assert isinstance(steps, Text) and steps.text.startswith("Integrated gradients used")
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
    note, figure, _ = saliency.blocks
    assert isinstance(note, Text) and "no ReLU" in note.text and isinstance(figure, Figure)


def test_the_maps_have_a_colour_bar_and_the_object_boxes_of_the_manifest(tmp_path, probe, monkeypatch):
    torch.manual_seed(0)
    package = write_package(tmp_path, PlainNet(2, widths=(4, 8)), CLASSES)
    drawn = DrawnFigures(monkeypatch)
    figure, _ = section(run(package, probe, ["saliency"], samples=2, **OPTIONS), "saliency").blocks
    fig = drawn.of(figure)
    assert len(colour_bars(fig)) == 1
    # Every image and each of its six maps outline the manifest's box (x 4-20, y 6-30 of the 32x32 image).
    boxes = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 2 * (1 + len(ALL_METHODS))
    assert boxes[0].get_xy() == (3.5, 5.5) and (boxes[0].get_width(), boxes[0].get_height()) == (16, 24)
    assert "White boxes: the object's box" in figure.caption


class Constant(nn.Module):
    """Scores that do not depend on the input: every attribution map is zero."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3)) * 0 + torch.tensor([1.0, 2.0])


def test_maps_that_are_zero_everywhere_are_said_in_words_not_drawn_as_uniform_squares(tmp_path, probe, monkeypatch):
    package = write_package(tmp_path, Constant(), CLASSES)
    drawn = DrawnFigures(monkeypatch)
    saliency = section(run(package, probe, ["saliency"], samples=2, **OPTIONS), "saliency")
    figure, steps = saliency.blocks
    fig = drawn.of(figure)
    notes = [t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts]
    assert notes and all("zero everywhere" in note for note in notes)
    drawn_images = [ax for ax in fig.axes if ax.images and ax not in colour_bars(fig)]
    assert len(drawn_images) == 2   # the two photos; none of their maps
    assert "Words in place of a map" in figure.caption
    # The score does not move from the black image: nothing to split, and no error (not 0 / 0).
    images = saliency.data["integrated_gradients"]["images"]
    assert [(i["steps"], i["completeness_error"]) for i in images] == [(4, 0.0), (4, 0.0)]
    assert steps.kind == "plain" and "4 steps for every image" in steps.text and "under 0.01%" in steps.text


def test_the_steps_integrated_gradients_needed_and_their_completeness_error_per_image(tmp_path, probe):
    torch.manual_seed(0)
    package = write_package(tmp_path, PlainNet(2, widths=(4, 8)), CLASSES)
    saliency = section(run(package, probe, ["saliency"], samples=4, ig_steps=64, smoothgrad_samples=2), "saliency")
    ig = saliency.data["integrated_gradients"]
    assert ig["max_steps"] == 64 and ig["tolerance"] == 0.01
    images = ig["images"]
    assert len(images) == 4 and len({i["index"] for i in images}) == 4
    assert all(i["image"].split("/")[0] in CLASSES and i["image"].endswith(".png") for i in images)
    assert all(i["steps"] in (8, 16, 32, 64) for i in images)
    assert all(i["completeness_error"] <= 0.01 or i["steps"] == 64 for i in images)
    steps = sorted(i["steps"] for i in images)
    worst = max(i["completeness_error"] for i in images)
    [text] = [b for b in saliency.blocks if isinstance(b, Text)]
    needed = (f"{steps[0]} steps for every image" if steps[0] == steps[-1]
              else f"{steps[0]} to {steps[-1]} steps per image (median {(steps[1] + steps[2]) / 2:g})")
    assert f"Integrated gradients used {needed};" in text.text
    assert "the worst completeness error" in text.text and (f"{worst:.2%}" in text.text or "under 0.01%" in text.text)


class Steep(nn.Module):
    """Scores +-tanh(100 x (mean pixel + 2)): zero at the black image (-2 normalized), then a rise to 1
    within the first 1% of the path from it, too sharp for a few integration steps."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(100 / 3)
            self.conv.weight[1].neg_()
            self.conv.bias.copy_(torch.tensor([200.0, -200.0]))

    def forward(self, x):
        return torch.tanh(self.conv(x).mean(dim=(2, 3)))


def test_images_left_above_one_percent_at_the_cap_are_named(tmp_path, probe):
    package = write_package(tmp_path, Steep(), CLASSES)
    saliency = section(run(package, probe, ["saliency"], samples=2, ig_steps=8, smoothgrad_samples=2), "saliency")
    images = saliency.data["integrated_gradients"]["images"]
    assert all(i["steps"] == 8 and i["completeness_error"] > 0.01 for i in images)
    text = saliency.blocks[-1]   # after the note that the model has no ReLU, and the figure
    assert text.kind == "note"
    assert (f"2 of 2 images stayed above 1% at the limit of 8 steps ({images[0]['image']}, {images[1]['image']})"
            in text.text)
