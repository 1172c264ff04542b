"""Activation maximization section: class images that reach their class, channels, reproducibility."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.results import Figure, Table, Text
from auditsvc.battery import audit
from auditsvc.battery.methods.feature_visualization import SHOWN_CHANNELS
from auditsvc.battery.sections import activation_max
from auditsvc.demo.nets import PlainNet
from tests.battery.methods.test_feature_visualization import stripes, trained_on_stripes
from tests.conftest import write_package

CLASSES = ["deg0", "deg60", "deg120"]


def write_stripes_probe(root, per_class: int = 4, side: int = 32):
    pixels, labels = stripes(per_class * len(CLASSES) * 3, 3, side, torch.Generator().manual_seed(1))
    counts = dict.fromkeys(range(len(CLASSES)), 0)
    for image, label in zip(pixels, labels.tolist()):
        if counts[label] == per_class:
            continue
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{counts[label]:02d}.png")
        counts[label] += 1
    return root


@pytest.fixture(scope="module")
def stripes_package(tmp_path_factory):
    """A PlainNet that recognizes stripe orientations (about 100% accurate) and a probe set of stripes."""
    directory = tmp_path_factory.mktemp("activation_max")
    torch.manual_seed(0)
    model = trained_on_stripes(PlainNet(len(CLASSES), 3, widths=(8, 16)), 3, 32)
    path = write_package(directory / "model", model, CLASSES, size=(3, 32, 32))
    return path, write_stripes_probe(directory / "probe")


def run_section(package, seed: int = 0, reference=None):
    path, probe_root = package
    model = load_model(path)
    with ProbeDataset(probe_root, CLASSES) as probe:
        result = audit(model, probe, AuditOptions(seed=seed, sections=["activation_max"]),
                           reference=load_model(reference) if reference else None)
    (section,) = result.sections
    return section


@pytest.fixture(scope="module")
def section(stripes_package):
    return run_section(stripes_package)


def test_every_class_image_reaches_its_class(section):
    assert section.status == "ok", section.reason
    assert [c["class"] for c in section.data["classes"]] == CLASSES
    assert section.data["min_probability"] >= 0.9 and section.data["all_reached"]
    assert section.data["class_step_limit"] == activation_max.CLASS_STEPS
    assert 0 < section.data["class_steps"] <= activation_max.CLASS_STEPS


def test_figures_table_and_channel_visualizations(section):
    figures = [b for b in section.blocks if isinstance(b, Figure)]
    assert [f.title for f in figures] == ["Class visualizations", "Channel visualizations"]
    assert all(f.png.startswith(b"\x89PNG") and "look" in f.caption.lower() for f in figures)
    (table,) = [b for b in section.blocks if isinstance(b, Table)]
    assert [row[0] for row in table.rows] == CLASSES
    channels = section.data["channels"]
    assert list(channels) == ["features.2", "features.6"]  # the two ReLUs, early to deep
    for per_layer in channels.values():
        assert len(per_layer) == SHOWN_CHANNELS
        # Each channel image drives its channel about as far as the best probe image or further (the
        # stripes are close to ideal for the first layer's filters), and further in the deep layer.
        assert all(c["activation"] > 0.8 * c["probe_max"] for c in per_layer), per_layer
    assert all(c["activation"] > c["probe_max"] for c in channels["features.6"]), channels["features.6"]


def test_same_seed_same_result_and_the_reference_model_is_drawn_too(stripes_package, section):
    again = run_section(stripes_package, reference=stripes_package[0])
    assert again.data["classes"] == section.data["classes"]
    assert again.data["channels"] == section.data["channels"]
    assert set(again.data["reference_probabilities"]) == set(CLASSES)
    assert min(again.data["reference_probabilities"].values()) >= 0.9


def test_many_classes_show_the_most_often_predicted_ones():
    count = 120
    predictions = np.array([5] * 10 + [7] * 6 + list(range(20, 40)))
    probabilities = np.full((len(predictions), count), 1e-3)
    probabilities[:, 99] = 0.5  # never predicted, but the highest mean probability: breaks the ties
    context = SimpleNamespace(classes=tuple(f"c{i}" for i in range(count)),
                              outputs=SimpleNamespace(predictions=predictions, probabilities=probabilities))
    chosen = activation_max.chosen_classes(context)
    assert len(chosen) == activation_max.TOP_CLASSES
    assert {5, 7}.issubset(chosen) and chosen == sorted(chosen)
    small = SimpleNamespace(classes=("a", "b", "c"), outputs=None)
    assert activation_max.chosen_classes(small) == [0, 1, 2]


def test_costly_models_get_fewer_steps(monkeypatch):
    def steps_at(cost: float, images: int) -> int:
        monkeypatch.setattr(activation_max, "image_step_cost", lambda graph: cost)
        return activation_max.optimization_steps(None, images, activation_max.CLASS_BUDGET, 128, 32)

    assert steps_at(5e7, 2) == 128              # the tank demo's PlainNet at 64 px
    middle = steps_at(5e7, 4)
    assert 32 < middle < 128 and middle % 8 == 0
    assert steps_at(7e8, 10) == 32              # a ResNet-18 at 128 px: the floor


def test_a_channel_image_weaker_than_a_probe_image_is_marked_failed(section):
    from auditsvc.battery.sections.activation_max import _failed_channels, _ratio

    assert _ratio(0.05, 1.0) == "0.1x probe max (failed)" and _ratio(2.0, 1.0) == "2.0x probe max"
    per_layer = section.data["channels"]
    failed = sum(c["activation"] < c["probe_max"] for layer in per_layer.values() for c in layer)
    notes = [b for b in section.blocks if isinstance(b, Text) and "channel visualizations drive" in b.text]
    assert len(notes) == (1 if failed else 0)
    if failed:
        assert notes[0].text.startswith(f"{failed} of {2 * SHOWN_CHANNELS} ")

    class Visualization:
        scores = [0.5, 3.0]
    assert _failed_channels({"layer": (Visualization, [1.0, 1.0], 10)}) == (1, 2)


def test_a_class_image_that_does_not_reach_its_class_is_marked_failed_under_it():
    assert activation_max._reached(0.97) == "p=0.97"
    assert activation_max._reached(0.45) == f"p=0.45\n(failed: below {activation_max.REACHED})"
    assert "failed" in activation_max._reached(float("nan"))
