import numpy as np
import pytest

from auditsvc.battery.probes import interventions

from auditsvc.battery.probes import properties
from auditsvc.battery.probes.interventions import (
    BY_NAME, INTERVENTIONS, apply_to_target, cue_footprint, dosed_balance, fill_from_around, lighting_shift,
    paste_typical, region_mask, transplant, white_balance,
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
    low, high = sorted((intervention.identity, intervention.ladder[-1]))
    assert ((strength >= low) & (strength <= high)).all()


def test_the_dose_reaches_the_target_and_hardly_more(images):
    darker = BY_NAME["darker"]
    brightness = properties.measure(images, ["brightness"])["brightness"]
    target = float(np.median(brightness) * 0.8)
    changed, strength = apply_to_target(darker, images, target)
    after = properties.measure(changed, ["brightness"])["brightness"]
    assert (after <= target + 1e-9).all()
    # The ladder alone would stop at 1/1.35 and land 0.03 below the target; bisection lands within 0.01.
    assert (after > target - 0.01).all()
    assert not np.isin(strength.round(6), np.round(darker.ladder, 6)).all()


def test_denoise_is_dosed_between_nothing_and_the_median_filter(images):
    denoise = BY_NAME["denoise"]
    assert np.allclose(denoise.transform(images / 255.0, 0.0), images / 255.0)
    noise = properties.measure(images, ["noise"])["noise"]
    target = float(np.median(noise) * 0.7)
    changed, strength = apply_to_target(denoise, images, target)
    assert (strength > 0).all() and (strength < 1).any()
    assert (properties.measure(changed, ["noise"])["noise"] <= target + 1e-9).mean() >= 5 / 6


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
    footprint = cue_footprint("corner_top_left", pool)
    assert (footprint == mask).all()
    out = paste_typical(images, pool, footprint)
    assert (out[:, mask] == (255, 0, 255)).all()
    assert (out[:, ~mask] == images[:, ~mask]).all()


def test_only_a_common_frame_is_a_footprint_and_removal_continues_the_inside(images):
    pool = (np.random.default_rng(2).random((20, 32, 32, 3)) * 255).astype(np.uint8)
    assert not cue_footprint("border", pool).any()      # a median of varied borders is no cue
    pool[:, :2], pool[:, -2:], pool[:, :, :2], pool[:, :, -2:] = 255, 255, 255, 255
    footprint = cue_footprint("border", pool)
    assert (footprint == region_mask("border", 32, 32)).all()
    removed = fill_from_around(pool, footprint)
    assert (removed[:, 2, 2:-2] == pool[:, 2, 2:-2]).all() and (removed[:, 0, 2:-2] == pool[:, 2, 2:-2]).all()
    assert (removed[:, ~footprint] == pool[:, ~footprint]).all()


def test_grey_images_shift_in_luminance(images):
    grey = images[..., :1]
    lit = lighting_shift(grey, np.full_like(grey, 200), np.full_like(grey, 100))
    assert lit.shape == grey.shape and abs(lit.mean() - grey.mean() - 100) < 2


@pytest.fixture
def warm_and_plain():
    rng = np.random.default_rng(3)
    plain = (rng.random((20, 32, 32, 3)) * 160 + 40).astype(np.uint8)
    warm = (plain.astype(float) * (1.2, 1.0, 0.8)).clip(0, 255).astype(np.uint8)   # a warm cast on varied images
    return warm, plain


def test_the_white_balance_of_the_group_difference_is_the_cast(images, warm_and_plain):
    warm, plain = warm_and_plain
    shifted = interventions.to_pixels(white_balance(warm, plain)(images / 255.0, 1.0))
    gains = shifted.reshape(-1, 3).astype(float).mean(axis=0) / images.reshape(-1, 3).mean(axis=0)
    assert np.allclose(gains / gains[1], (1.2, 1.0, 0.8), atol=0.02)     # the cast, in proportion
    assert abs(shifted.mean() - images.mean()) < 1.5                      # the overall level kept
    assert np.abs(interventions.to_pixels(white_balance(plain, plain)(images / 255.0, 1.0)).astype(int)
                  - images).max() <= 1


def test_the_colour_balance_is_dosed_to_the_target_share(images, warm_and_plain):
    warm, plain = warm_and_plain
    dosed = dosed_balance(BY_NAME["red_balance_of_others"], warm, plain)
    before = properties.measure(images, ["red_share"])["red_share"]
    target = float(before.max() + 0.02)
    changed, strength = apply_to_target(dosed, images, target)
    after = properties.measure(changed, ["red_share"])["red_share"]
    assert (after >= target).all() and (after < target + 0.01).all()
    assert ((strength > 0) & (strength < 1)).all()    # less than the groups' whole difference


def disc_in_its_box(size: int = 24):
    """A teal disc on a noisy sand background, the disc's box as the part to repaint."""
    rng = np.random.default_rng(3)
    image = np.array([0.8, 0.7, 0.5]) + rng.normal(0, 0.02, (size, size, 3))
    y, x = np.mgrid[0:size, 0:size]
    disc = np.hypot(y - 12, x - 12) < 6
    image[disc] = [0.1, 0.5, 0.5]
    box = np.zeros((size, size), bool)
    box[5:20, 5:20] = True
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)[None], disc, box[None]


def test_repainting_a_part_recolours_the_object_and_keeps_its_outline():
    pixels, disc, box = disc_in_its_box()
    red = np.array([[0.8, 0.1, 0.1]])
    painted = interventions.repaint(pixels, box, red)
    changed = np.abs(painted.astype(int) - pixels.astype(int)).max(axis=-1)[0] > 3
    assert (changed == disc).mean() > 0.97, "the box's background corners keep their colour"
    assert np.allclose(painted[0][disc].mean(axis=0) / 255, red[0], atol=0.02)
    assert np.allclose(interventions.part_colours(painted, box)[0], red[0], atol=0.02)
