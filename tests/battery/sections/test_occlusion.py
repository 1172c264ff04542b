"""The occlusion section: the probability drop it reports is the one computed by hand by greying
out each window of the image."""

import numpy as np
import pytest
import torch

from auditsvc.battery.results import Figure
from auditsvc.battery.sections import occlusion as occlusion_section
from tests.battery.sections.support import (CornerNet, DrawnFigures, colour_bars, panel_titles, probe_inputs, run,
                                            section)
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
    # The convolution, its ReLU and the mask's product are followed window by window; the global average is not.
    mode = "incremental for 3 of 7 ops; full from adaptive_avg_pool2d on (it reads the whole map)"
    assert occlusion.data["occlusion_mode"] == mode
    assert "Computed incrementally, with the same numbers" in figure.caption and mode in figure.caption


def test_the_approximate_mode_states_its_error_against_the_exact_map(files):
    """Krypton's approximate modes on request: the section measures the first image's exact map too and
    states the rank correlation and largest difference, and the audit's settings repeat them."""
    _, package, probe = files
    result = run(package, probe, ["occlusion"], samples=4, occlusion_window=4, occlusion_stride=2,
                 occlusion_approximate=True)
    occlusion = section(result, "occlusion")
    error = occlusion.data["approximation_error"]
    assert -1 <= error["rank_correlation"] <= 1 and 0 <= error["max_abs_difference"] < 1
    assert "approximate: every 2nd window position per axis first" in occlusion.data["occlusion_mode"]
    [block] = occlusion.blocks
    text = block.caption if isinstance(block, Figure) else block.text
    assert f"rank correlation with the exact one is {error['rank_correlation']:.3f}" in text
    assert result.settings["occlusion_error"].startswith(f"rank correlation {error['rank_correlation']:.3f} ")
    exact = section(run(package, probe, ["occlusion"], samples=4, occlusion_window=4, occlusion_stride=2), "occlusion")
    assert exact.data["approximation_error"] is None and "approximate" not in exact.data["occlusion_mode"]


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


def test_the_probability_maps_have_a_colour_bar_and_each_image_its_labels(files, monkeypatch):
    _, package, probe = files
    drawn = DrawnFigures(monkeypatch)
    [figure] = section(run(package, probe, ["occlusion"], samples=4, occlusion_window=WINDOW,
                           occlusion_stride=WINDOW), "occlusion").blocks
    fig = drawn.of(figure)
    [bar] = colour_bars(fig)
    assert bar.get_ylim() == (0.0, 1.0)
    titles = panel_titles(fig)
    assert sum("largest drop" in title for title in titles) == 4   # above each of the four images


def drop_map(largest: float) -> np.ndarray:
    drop = np.zeros((8, 8))
    drop[:2, :2] = largest
    return drop


def test_an_image_no_region_matters_to_gets_words_instead_of_its_two_uniform_maps():
    pixels = np.zeros((8, 8, 3), np.uint8)
    box = np.array([1.0, 1.0, 5.0, 5.0])
    image, probability, mask = occlusion_section._panels(pixels, np.full((8, 8), 0.9), drop_map(0.003), box,
                                                         "a (0.90)")
    assert image.image is not None and image.box is box and image.title == "a (0.90)\nlargest drop 0.003"
    assert probability.image is None and "no region matters" in probability.note
    assert mask.image is None and mask.note


def test_a_drop_too_small_to_see_on_the_colour_scale_is_said_in_words_and_its_place_still_shown():
    pixels, box = np.zeros((8, 8, 3), np.uint8), np.array([1.0, 1.0, 5.0, 5.0])
    _, probability, mask = occlusion_section._panels(pixels, 0.9 - drop_map(0.05), drop_map(0.05), box, "a (0.90)")
    assert probability.image is None and "too small to see" in probability.note
    assert mask.image.shape == (8, 8, 3)
    _, probability, mask = occlusion_section._panels(pixels, 0.9 - drop_map(0.5), drop_map(0.5), box, "a (0.90)")
    assert probability.image.shape == (8, 8) and probability.box is box and mask.image.shape == (8, 8, 3)
