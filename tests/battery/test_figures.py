"""Figure helpers: heatmaps carry a colour bar, a map with nothing to draw becomes words, object boxes
are outlined, filters are drawn weight by weight on one symmetric scale, log axes read as numbers;
and every heatmap the battery draws has its colour bar."""

import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from auditsvc.battery import figures
from auditsvc.battery.results import Figure
from auditsvc.demo.nets import PlainNet
from tests.battery.sections.support import DrawnFigures, colour_bars, run
from tests.conftest import write_package, write_probe

SCALE = figures.ColourScale("jet", "attribution")


def texts_of(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_a_grid_with_a_colour_scale_has_a_colour_bar_and_draws_its_maps_through_it():
    heat = np.linspace(0, 1, 16).reshape(4, 4)
    fig = figures.image_grid([[np.zeros((4, 4, 3)), heat]], scale=SCALE)
    [bar] = colour_bars(fig)
    assert bar.get_ylabel() == "attribution"
    [image] = [i for ax in fig.axes for i in ax.images if i.get_array().ndim == 2 and ax not in colour_bars(fig)]
    assert image.get_cmap().name == "jet" and image.get_clim() == (0.0, 1.0)
    assert colour_bars(figures.image_grid([[np.zeros((4, 4, 3))]])) == []


@pytest.mark.parametrize("values, words", [(np.zeros((6, 6)), "zero everywhere"),
                                           (np.full((6, 6), 0.3), "the same everywhere (0.3)"),
                                           (-np.arange(36.0).reshape(6, 6), "no positive value")])
def test_a_map_with_nothing_to_draw_becomes_words_not_a_uniform_square(values, words):
    panel = figures.heat_panel(values, pixels=np.zeros((6, 6, 3), np.uint8))
    assert panel.image is None and words in panel.note
    fig = figures.image_grid([[panel]], scale=SCALE)
    assert words in texts_of(fig).replace("\n", " ")
    assert not [ax for ax in fig.axes if ax.images and ax not in colour_bars(fig)]   # no image drawn there


def test_a_map_with_something_to_show_is_drawn():
    values = np.zeros((6, 6))
    values[2, 3] = 1.0
    panel = figures.heat_panel(values, pixels=np.zeros((6, 6, 3), np.uint8))
    assert panel.image is not None and panel.image.shape == (6, 6, 3) and not panel.note


def test_the_object_box_is_outlined_where_there_is_one():
    boxed = figures.Panel(np.zeros((32, 32, 3)), box=(4.0, 6.0, 20.0, 30.0))
    unboxed = figures.Panel(np.zeros((32, 32, 3)), box=(np.nan,) * 4)
    fig = figures.image_grid([[boxed, unboxed]])
    [rectangle] = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
    assert rectangle.get_xy() == (3.5, 5.5) and (rectangle.get_width(), rectangle.get_height()) == (16.0, 24.0)
    assert rectangle.axes is fig.axes[0]


def test_the_caption_legend_names_boxes_and_notes_only_where_the_grid_has_them():
    plain = [[figures.Panel(np.zeros((4, 4, 3)))]]
    assert figures.panel_legend(plain) == ""
    mixed = [[figures.Panel(np.zeros((4, 4, 3)), box=(0, 0, 2, 2)), figures.Panel(note="nothing")]]
    legend = figures.panel_legend(mixed, "nothing moved")
    assert "White boxes" in legend and "Words in place of a map: nothing moved." in legend


def test_filters_are_drawn_weight_by_weight_on_one_symmetric_scale_with_a_colour_bar():
    weights = np.random.default_rng(0).normal(0, 0.1, (5, 3, 3, 3))
    weights[2] *= 4     # the largest weights set the scale of every filter
    fig = figures.filter_grid(weights, ("R", "G", "B"), per_row=2)
    [bar] = colour_bars(fig)
    images = [i for ax in fig.axes if ax not in colour_bars(fig) for i in ax.images]
    assert len(images) == 5 and len(fig.axes) == 3 * 2 + 1   # three rows of two, one left empty
    limit = np.abs(weights).max()
    for image, filter_weights in zip(images, weights):
        assert image.get_clim() == pytest.approx((-limit, limit))
        assert image.get_interpolation() == "nearest"
        block = image.get_array()
        assert block.shape == (3 + 2, 3 * 3 + 2 + 2)                # three planes, framed and one apart
        np.testing.assert_allclose(block[1:4, 1:4], filter_weights[0])   # the red plane, weight by weight
    assert [t.get_text() for t in images[0].axes.get_xticklabels()] == ["R", "G", "B"]
    assert bar.get_ylim() == pytest.approx((-limit, limit))


def test_log_axes_are_labelled_in_plain_numbers_not_mathtext():
    fig, ax = figures.plt.subplots()
    ax.plot([0, 1, 2], [0.015, 0.05, 0.11])
    ax.set_yscale("log")
    figures.to_png(fig)
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert "0.1" in labels and "0.02" in labels
    assert not any("$" in label or "mathdefault" in label for label in labels)


# --- every heatmap of the battery --------------------------------------------------------------

HEATMAPS = ("Confusion matrix", "Attribution strategies for", "First-layer filters", "Feature maps of",
            "Saliency maps by method", "Similarity between the model's layers",
            "Maps of one image as the model is randomized")


def test_every_heatmap_the_battery_draws_has_a_colour_bar(tmp_path, monkeypatch):
    torch.manual_seed(0)
    package = write_package(tmp_path / "model", PlainNet(2, widths=(4, 8)), ["a", "b"])
    probe = write_probe(tmp_path / "probe", ["a", "b"], per_class=8, size=(32, 32))
    drawn = DrawnFigures(monkeypatch)
    result = run(package, probe, ["performance", "looking", "filters", "layer_outputs", "saliency", "similarity",
                                  "explanation_checks"], samples=2, ig_steps=4, smoothgrad_samples=2)
    blocks = [b for s in result.sections for b in s.blocks if isinstance(b, Figure)]
    heatmaps = [b for b in blocks if b.title.startswith(HEATMAPS)]
    assert {prefix for prefix in HEATMAPS if any(b.title.startswith(prefix) for b in heatmaps)} == set(HEATMAPS)
    for block in heatmaps:
        assert len(colour_bars(drawn.of(block))) == 1, block.title
