import numpy as np
import pytest

from auditsvc.battery.probes import interventions

from auditsvc.battery.probes import properties
from auditsvc.battery.probes.interventions import (
    BY_NAME, INTERVENTIONS, STATISTICS, apply_to_target, paste_typical, region_mask, statistics_transfer, transplant,
)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return (rng.random((6, 32, 32, 3)) * 120 + 60).astype(np.uint8)


@pytest.fixture
def compressed():
    """Smooth images saved as JPEG: they carry 8x8 blocks for grain to hide."""
    y, x = np.mgrid[0:32, 0:32]
    smooth = np.stack([(np.sin(x / (3 + i)) + np.cos(y / (4 + i))) * 60 + 128 for i in range(6)])
    pixels = np.repeat(smooth[..., None], 3, axis=3).astype(np.uint8)
    return interventions.to_pixels(BY_NAME["jpeg"].transform(pixels / 255.0, 10))


@pytest.mark.parametrize("name", [i.name for i in INTERVENTIONS if i.property and i.direction in ("up", "down")])
def test_each_change_moves_its_property_the_right_way(images, compressed, name):
    intervention = BY_NAME[name]
    images = compressed if name == "restore_grain" else images
    before = properties.measure(images, [intervention.property])[intervention.property]
    up = intervention.direction == "up"
    target = float(before.max() * 1.05) if up else float(before.min() * 0.95)
    changed, strength = apply_to_target(intervention, images, target)
    after = properties.measure(changed, [intervention.property])[intervention.property]
    assert changed.shape == images.shape and changed.dtype == np.uint8
    assert ((after > before) if up else (after < before)).mean() >= 5 / 6, (before, after)
    assert set(strength) <= set(intervention.ladder)


def test_the_weakest_sufficient_step_is_used(images):
    darker = BY_NAME["darker"]
    brightness = properties.measure(images, ["brightness"])["brightness"]
    target = float(np.median(brightness) * 0.8)
    changed, strength = apply_to_target(darker, images, target)
    assert (properties.measure(changed, ["brightness"])["brightness"] <= target + 1e-9).all()
    for image, step in zip(images, strength):
        index = darker.ladder.index(step)
        if index:
            weaker = darker.transform(image[None] / 255.0, darker.ladder[index - 1])
            weaker = (np.clip(weaker, 0, 1) * 255).round().astype(np.uint8)
            assert properties.measure(weaker, ["brightness"])["brightness"][0] > target


def test_transplant_copies_only_the_region(images):
    donors = np.zeros_like(images)
    out = transplant("corner_top_left", images, donors)
    mask = region_mask("corner_top_left", 32, 32)
    assert (out[:, mask] == 0).all() and (out[:, ~mask] == images[:, ~mask]).all()
    boxes = np.array([[4, 4, 12, 12]] * len(images), float)
    kept = transplant("background", images, donors, boxes)
    assert (kept[:, 4:12, 4:12] == images[:, 4:12, 4:12]).all() and (kept[:, 20:, 20:] == 0).all()
    masked = transplant("object", images, donors, boxes)
    assert (masked[:, 4:12, 4:12] == 0).all() and (masked[:, 20:, 20:] == images[:, 20:, 20:]).all()


def test_harmless_shift_barely_changes_the_image(images):
    shifted = BY_NAME["shift_1px"].transform(images / 255.0, 1)
    assert np.allclose(shifted[:, 1:, 1:], images[:, :-1, :-1] / 255.0)


def test_the_typical_region_keeps_a_stamp_and_drops_what_varies(images):
    pool = (np.random.default_rng(1).random((9, 32, 32, 3)) * 255).astype(np.uint8)
    mask = region_mask("corner_top_left", 32, 32)
    pool[:, mask] = (255, 0, 255)           # the same stamp on every donor
    pool[0, mask] = 0                       # one donor's object reaches into the corner
    out = paste_typical("corner_top_left", images, pool)
    assert (out[:, mask] == (255, 0, 255)).all()
    assert (out[:, ~mask] == images[:, ~mask]).all()


def test_grey_images_take_only_the_donors_luminance(images):
    grey = images[..., :1]
    donors = np.full_like(grey, 200)
    assert statistics_transfer(grey, donors, STATISTICS["chroma"]).tolist() == grey.tolist()
    lit = statistics_transfer(grey, donors, STATISTICS["luminance"])
    assert lit.shape == grey.shape and abs(lit.mean() - 200) < 2
