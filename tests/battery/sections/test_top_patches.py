"""Top-activating patches: the true top locations over the probe set, crops inside the image around them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from auditsvc.battery.context import AuditContext, AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.model.receptive_field import receptive_fields
from auditsvc.battery.results import Figure
from auditsvc.battery import audit
from auditsvc.battery.methods.feature_visualization import SHOWN_CHANNELS
from auditsvc.battery.sections import top_patches
from auditsvc.demo.nets import PlainNet
from tests.conftest import write_package

CLASSES = ["left", "right"]
SIDE = 32
SQUARE = 5


def bright_square_probe(root, per_class: int = 7):
    """Dark noise with one white square each, at random places (some touching the border)."""
    rng = np.random.default_rng(0)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (SIDE, SIDE, 3), dtype=np.uint8)
            y, x = rng.integers(0, SIDE - SQUARE + 1, 2)
            pixels[y:y + SQUARE, x:x + SQUARE] = 255
            Image.fromarray(pixels).save(root / label / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A PlainNet whose first channel averages its 3x3 input (a brightness detector), and the probe."""
    directory = tmp_path_factory.mktemp("top_patches")
    torch.manual_seed(0)
    model = PlainNet(len(CLASSES), 3, widths=(8, 16))
    with torch.no_grad():
        model.features[0].weight[0] = 1.0 / 27
    path = write_package(directory / "model", model, CLASSES, size=(3, SIDE, SIDE))
    return path, bright_square_probe(directory / "probe")


@pytest.fixture
def context(package):
    path, root = package
    model = load_model(path)
    graph = ModelGraph(model.program, model.meta.input.size)
    with ProbeDataset(root, CLASSES) as probe:
        yield AuditContext(model, graph, probe, AuditOptions(batch_size=4))  # several batches: the heap merges them


def test_top_hits_are_the_strongest_locations_over_the_whole_probe_set(context):
    layers = ["features.2", "features.6"]
    channels = {layer: [0, 3, 5] for layer in layers}
    hits = top_patches.top_hits(context, channels, top=5)
    with torch.inference_mode():
        _, outputs = context.graph.activations(context.probe.tensors(range(len(context.probe)), context.spec), layers)
    for layer in layers:
        maps = outputs[layer]
        width = maps.shape[3]
        for channel, found in zip(channels[layer], hits[layer]):
            strongest = maps[:, channel].flatten(1).max(dim=1).values
            expected = strongest.sort(descending=True).values[:5]
            np.testing.assert_allclose([h.value for h in found], expected.numpy(), rtol=1e-5)
            assert len({h.image for h in found}) == 5  # one location per image
            for hit in found:  # each at its image's strongest location
                assert torch.isclose(maps[hit.image, channel, hit.row, hit.col], strongest[hit.image], rtol=1e-5)
                assert 0 <= hit.row < maps.shape[2] and 0 <= hit.col < width


def test_crops_lie_inside_the_image_and_hold_the_maximally_activating_location(context):
    fields = receptive_fields(context.graph)
    channels = {"features.2": [0], "features.6": [0, 1]}
    hits = top_patches.top_hits(context, channels, top=6)
    for layer, per_layer in hits.items():
        field = fields[layer]
        for found in per_layer:
            for hit in found:
                pixels = context.probe.pixels([hit.image], context.spec)[0]
                crop, (top, left, bottom, right) = top_patches.patch(pixels, field, hit.row, hit.col)
                assert 0 <= top < bottom <= SIDE and 0 <= left < right <= SIDE
                assert crop.shape[:2] == (bottom - top, right - left)
                np.testing.assert_array_equal(crop, pixels[top:bottom, left:right])
                cy, cx = field.center(hit.row, hit.col)
                assert top <= cy < bottom and left <= cx < right
                full = field.window(hit.row, hit.col)
                assert (bottom - top, right - left) <= (full[2] - full[0], full[3] - full[1])
    # The brightness channel's best 3x3 patches lie inside the white squares.
    for hit in hits["features.2"][0]:
        pixels = context.probe.pixels([hit.image], context.spec)[0]
        crop, _ = top_patches.patch(pixels, fields["features.2"], hit.row, hit.col)
        assert crop.min() == 255


def test_section_shows_one_figure_per_layer_with_windows_inside_the_image(package):
    path, root = package
    with ProbeDataset(root, CLASSES) as probe:
        result = audit(load_model(path), probe, AuditOptions(sections=["top_patches"]))
    (section,) = result.sections
    assert section.status == "ok", section.reason
    layers = section.data["layers"]
    assert list(layers) == ["features.2", "features.6"]
    figures = [b for b in section.blocks if isinstance(b, Figure)]
    assert len(figures) == len(layers) and all(f.png.startswith(b"\x89PNG") for f in figures)
    assert "receptive field 3x3 px" in figures[0].caption and "look for" in figures[0].caption.lower()
    for layer in layers.values():
        assert layer["receptive_field"]["size"][0] >= 3 and 0 <= layer["border_share"] <= 1
        assert len(layer["channels"]) == SHOWN_CHANNELS
        for channel in layer["channels"]:
            values = [hit["value"] for hit in channel["top"]]
            assert len(values) == top_patches.TOP and values == sorted(values, reverse=True)
            for hit in channel["top"]:
                top, left, bottom, right = hit["window"]
                assert 0 <= top < bottom <= SIDE and 0 <= left < right <= SIDE
