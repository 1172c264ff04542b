"""The occlusion section: the probability drop it reports is the one computed by hand by greying
out each window of the image."""

import pytest
import torch

from auditsvc.battery.results import Figure
from tests.battery.sections.support import CornerNet, probe_inputs, run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]
WINDOW = 8   # with the stride equal to the window, the windows tile the 32x32 image: each pixel's drop is its window's


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("occlusion")
    model = CornerNet().eval()
    package = write_package(root / "model", model, CLASSES)
    probe = write_probe(root / "probe", CLASSES, per_class=3, size=(32, 32))
    return model, package, probe


def drops_by_hand(model, inputs: torch.Tensor) -> torch.Tensor:
    """(images, window rows, window columns): the predicted class's probability minus its probability
    with the window set to grey (0.5 in pixels: 0 once normalized with mean 0.5)."""
    with torch.no_grad():
        probabilities = torch.softmax(model(inputs), dim=1)
        predicted = probabilities.argmax(dim=1, keepdim=True)
        original = probabilities.gather(1, predicted)[:, 0]
        side = inputs.shape[2] // WINDOW
        drops = torch.zeros(len(inputs), side, side)
        for row in range(side):
            for col in range(side):
                occluded = inputs.clone()
                occluded[:, :, row * WINDOW:(row + 1) * WINDOW, col * WINDOW:(col + 1) * WINDOW] = 0.0
                drops[:, row, col] = original - torch.softmax(model(occluded), dim=1).gather(1, predicted)[:, 0]
    return drops


def test_the_largest_drop_is_that_of_the_window_computed_by_hand(files):
    model, package, probe = files
    occlusion = section(run(package, probe, ["occlusion"], samples=6, occlusion_window=WINDOW,
                            occlusion_stride=WINDOW), "occlusion")
    assert (occlusion.data["window"], occlusion.data["stride"], occlusion.data["images"]) == (WINDOW, WINDOW, 6)
    inputs, _ = probe_inputs(probe, CLASSES)
    drops = drops_by_hand(model, inputs)
    # The model reads only the top-left 4x4 pixels: every other window leaves the probability alone.
    assert drops[:, 1:, :].abs().max() == 0 and drops[:, :, 1:].abs().max() == 0
    assert drops[:, 0, 0].max() > 0.05
    assert occlusion.data["max_drop"] == pytest.approx(float(drops.max()), abs=2e-4)
    [figure] = occlusion.blocks
    assert isinstance(figure, Figure) and f"A {WINDOW}x{WINDOW} grey window" in figure.caption


def test_default_window_is_an_eighth_of_the_side_and_the_stride_half_of_it(files):
    _, package, probe = files
    occlusion = section(run(package, probe, ["occlusion"], samples=1), "occlusion")
    assert (occlusion.data["window"], occlusion.data["stride"], occlusion.data["images"]) == (4, 2, 1)


class Sure(torch.nn.Module):
    """Always answers 'b' with a saturated probability: no window moves it."""

    def __init__(self):
        super().__init__()
        self.see = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return torch.stack([self.see(x).mean(dim=(1, 2, 3)) * 0 - 50, self.see(x).mean(dim=(1, 2, 3)) * 0 + 50], dim=1)


def test_where_nothing_moves_it_says_so_in_words_instead_of_uniform_heatmaps(files, tmp_path):
    _, _, probe = files
    package = write_package(tmp_path / "model", Sure(), CLASSES)
    occlusion = section(run(package, probe, ["occlusion"], samples=4), "occlusion")
    [note] = occlusion.blocks
    assert not isinstance(note, Figure) and "no single region matters" in note.text
    assert occlusion.data["max_drop"] < 0.02
