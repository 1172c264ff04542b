"""A property that predicts the labels only through the object itself is not a probe-set bias."""

import numpy as np
import pytest

from auditsvc.battery.probes import association
from auditsvc.battery.probes.cue_verdict import Observations, decide, part_of_object
from auditsvc.battery.probes.evidence import (foreground, measure_away_from_object, property_stats, surroundings,
                                              surroundings_method)
from auditsvc.battery.probes.properties import measure, measure_away

SIDE = 48


def scenes(count: int, rng: np.random.Generator, noisier_background_for: int | None = None):
    """Two classes that differ only in the object's outline (a plain disc or a striped square), on
    backgrounds drawn from one distribution; optionally class 1's background carries more noise."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    pixels, labels, boxes = [], [], []
    for index in range(count):
        label = index % 2
        background = rng.uniform(0.2, 0.5) + rng.normal(0, 0.02, (SIDE, SIDE))
        if label == noisier_background_for:
            background += rng.normal(0, 0.04, (SIDE, SIDE))
        cy, cx, radius = rng.integers(14, 34), rng.integers(14, 34), rng.integers(7, 11)
        if label == 0:
            inside = np.hypot(yy - cy, xx - cx) < radius
        else:
            inside = (np.abs(yy - cy) < radius) & (np.abs(xx - cx) < radius) & ((yy + xx) % 6 < 3)
        grey = np.where(inside, 0.8 + rng.normal(0, 0.02, (SIDE, SIDE)), background)
        pixels.append(np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2))
        labels.append(label)
        boxes.append((cx - radius, cy - radius, cx + radius, cy + radius))
    return (np.stack(pixels) * 255).round().astype(np.uint8), np.array(labels), np.array(boxes, float)


def verdicts(pixels, labels, boxes):
    values = measure(pixels)
    stats = property_stats(values, {}, labels, labels.copy(), seed=0, permutations=500)
    keep = surroundings(boxes, pixels)
    measure_away_from_object(stats, measure_away(pixels, keep), labels, seed=0, permutations=500)
    codes = {name: association.bin_codes(v, 2) for name, v in values.items()}
    return stats, decide(stats, [], {}, Observations(codes, labels, labels.copy(), {}, 0)), surroundings_method(boxes)


@pytest.mark.parametrize("with_boxes", [True, False])
def test_the_objects_outline_predicts_the_labels_but_is_not_called_a_bias(with_boxes):
    pixels, labels, boxes = scenes(160, np.random.default_rng(0))
    boxes = boxes if with_boxes else np.full_like(boxes, np.nan)
    stats, found, method = verdicts(pixels, labels, boxes)
    objects = [s.name for s in stats if part_of_object(s)]
    assert objects, "the outline should show in some property of the whole image"
    assert [v for v in found if v.category == "bias"] == []
    assert ("boxes" in method) == with_boxes


def test_a_noisier_background_for_one_class_is_still_a_bias():
    pixels, labels, boxes = scenes(160, np.random.default_rng(1), noisier_background_for=1)
    stats, found, _ = verdicts(pixels, labels, boxes)
    noise = next(s for s in stats if s.name == "noise")
    assert noise.away_label_power >= 0.3 and not part_of_object(noise)
    biases = {v.cue for v in found if v.category == "bias"}
    assert biases & {"noise", "detail"}   # noise and sharpness together are named as the image's detail


def test_without_boxes_the_object_is_what_stands_out_from_the_border():
    """Found from the pixels, not the model: textured and striped surroundings stay surroundings."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    image = 0.4 + 0.08 * np.sign(np.sin(xx * 1.3 + yy * 0.4))[..., None] * np.array([1.0, 0.5, 0.2])
    image = image + rng.normal(0, 0.01, image.shape)
    disc = np.hypot(yy - 30, xx - 18) < 8
    image[disc] = (0.9, 0.2, 0.3)
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)[None]
    found = foreground(pixels[0])
    assert (found & disc).sum() / disc.sum() > 0.9, "the disc is found"
    assert (found & ~disc).sum() < 0.35 * found.sum(), "little of the striped ground is taken for it"
    keep = surroundings(np.full((1, 4), np.nan), pixels)
    assert not keep[0, 30, 18] and keep[0, 5, 40]
    assert "border" in surroundings_method(np.full((1, 4), np.nan))
    assert surroundings_method(np.array([[1.0, 1, 5, 5]])) == "outside the object boxes of the manifest"


def test_a_large_image_is_estimated_at_a_small_size_and_keeps_its_shape():
    image = np.full((300, 200, 3), 90, np.uint8)
    image[100:180, 60:140] = (250, 40, 40)
    found = foreground(image)
    assert found.shape == (300, 200)
    assert found[140, 100] and not found[20, 20]


@pytest.mark.parametrize("name", ["noise", "brightness", "high_frequency"])
def test_away_values_are_missing_where_nothing_is_left(name):
    pixels, _, _ = scenes(2, np.random.default_rng(2))
    keep = np.zeros((2, SIDE, SIDE), bool)
    keep[1, :20] = True
    values = measure_away(pixels, keep, [name])[name]
    assert np.isnan(values[0]) and np.isfinite(values[1])
