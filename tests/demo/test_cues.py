"""The synthetic shape tasks and their planted cues; no model is trained here."""

import numpy as np
import pytest
import torch

from auditsvc.demo import cues


def _base_images(count: int = 6, size: int = cues.SIZE) -> list[np.ndarray]:
    return [cues.render_base(np.random.default_rng(i), i % 2, size) for i in range(count)]


def _scenes(count: int = 6, family: str = "shapes") -> list[tuple[np.ndarray, np.ndarray]]:
    return [cues.render_scene(np.random.default_rng(i), i % 2, cues.SIZE, family) for i in range(count)]


def test_base_images_are_deterministic_rgb_uint8():
    first, again = _base_images(), _base_images()
    for a, b in zip(first, again):
        assert a.shape == (cues.SIZE, cues.SIZE, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], first[2])
    assert cues.render_base(np.random.default_rng(0), 1, 48).shape == (48, 48, 3)


@pytest.mark.parametrize("family", list(cues.FAMILIES))
@pytest.mark.parametrize("name", list(cues.CUES))
def test_every_cue_changes_every_image_and_keeps_its_format(name, family):
    apply = cues.CUES[name].apply
    for image, mask in _scenes(family=family):
        before = image.copy()
        changed = apply(image, np.random.default_rng(0), mask)
        assert np.array_equal(image, before), "the cue must not change its input in place"
        assert changed.shape == image.shape and changed.dtype == np.uint8
        assert np.abs(changed.astype(int) - image).mean() > 1.0
        assert np.array_equal(changed, apply(image, np.random.default_rng(0), mask))


def test_cues_change_what_they_say():
    scenes = _scenes(8)
    images = np.stack([image for image, _ in scenes]).astype(float)
    changed = {name: np.stack([cue.apply(image, np.random.default_rng(0), mask)
                               for image, mask in scenes]).astype(float) for name, cue in cues.CUES.items()}
    assert (changed["brightness"].mean(axis=(1, 2, 3)) > images.mean(axis=(1, 2, 3)) * 1.2).all()
    ratio = lambda x: x[..., 0].mean(axis=(1, 2)) / x[..., 2].mean(axis=(1, 2))  # noqa: E731
    assert (ratio(changed["colour"]) > ratio(images) * 1.4).all()
    assert (changed["corner"][:, :4, :4] == cues.CORNER_COLOUR).all()
    assert (changed["border"][:, [0, 1, -2, -1]] == cues.BORDER_COLOUR).all()
    assert (changed["border"][:, :, [0, 1, -2, -1]] == cues.BORDER_COLOUR).all()
    detail = lambda x: np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))  # noqa: E731
    assert (detail(changed["blur"]) < detail(images) * 0.7).all()
    assert (detail(changed["noise"]) > detail(images) * 1.5).all()
    assert np.abs(changed["jpeg"].mean() - images.mean()) < 3


@pytest.mark.parametrize("family", list(cues.FAMILIES))
@pytest.mark.parametrize("name", [name for name, cue in cues.CUES.items() if cue.place])
def test_a_placed_cue_leaves_the_other_place_alone(name, family):
    cue = cues.CUES[name]
    for image, mask in _scenes(family=family):
        changed = cue.apply(image, np.random.default_rng(0), mask).astype(int)
        inside, outside = mask == 1, mask == 0
        kept, touched = (outside, inside) if cue.place == "object" else (inside, outside)
        assert np.array_equal(changed[kept], image[kept])
        assert np.abs(changed[touched] - image[touched]).mean() > 3


def test_glyph_classes_differ_only_in_outline():
    """Ring and cross share fills, backgrounds and sizes: their colour statistics match; their outlines do not."""
    rings, crosses = ([cues.render_scene(np.random.default_rng(1000 * label + i), label, family="glyphs")
                       for i in range(150)] for label in (0, 1))
    for statistic in (lambda image, mask: image[mask > 0.5].mean(), lambda image, mask: image[mask < 0.5].mean(),
                      lambda image, mask: image.std()):
        a, b = ([statistic(*scene) for scene in group] for group in (rings, crosses))
        assert abs(np.mean(a) - np.mean(b)) < 3 * np.hypot(np.std(a), np.std(b)) / np.sqrt(150)
    assert min(m.sum() for _, m in rings + crosses) > 40
    ring_centres = [mask[tuple(np.round(np.argwhere(mask > 0.5).mean(axis=0)).astype(int))] for _, mask in rings]
    cross_centres = [mask[tuple(np.round(np.argwhere(mask > 0.5).mean(axis=0)).astype(int))] for _, mask in crosses]
    assert np.mean(ring_centres) < 0.1 and np.mean(cross_centres) > 0.9, "a ring is hollow, a cross is not"


def test_make_split_shapes_and_determinism():
    images, labels, present = cues.make_split(cues.split_rng(0, "test"), 20, "corner", 0.5)
    assert images.shape == (20, cues.SIZE, cues.SIZE, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and present.dtype == bool
    again = cues.make_split(cues.split_rng(0, "test"), 20, "corner", 0.5)
    assert all(np.array_equal(a, b) for a, b in zip((images, labels, present), again))
    other = cues.make_split(cues.split_rng(1, "test"), 20, "corner", 0.5)
    assert not np.array_equal(images, other[0])
    has_patch = (images[:, :2, :2] == cues.CORNER_COLOUR).all(axis=(1, 2, 3))
    assert np.array_equal(has_patch, present)


@pytest.mark.parametrize("alignment, squares_with_cue, circles_with_cue", [(1.0, 20, 0), (0.5, 10, 10),
                                                                          (0.85, 17, 3)])
def test_make_split_alignment(alignment, squares_with_cue, circles_with_cue):
    _, labels, present = cues.make_split(cues.split_rng(0, "alignment"), 40, "border", alignment, size=16)
    square = labels == cues.CUED
    assert square.sum() == 20
    assert present[square].sum() == squares_with_cue and present[~square].sum() == circles_with_cue
    assert 0 < square[:20].sum() < 20, "classes are shuffled"


class _BrightMeansSquare(torch.nn.Module):
    """Not trained: calls every image brighter than the threshold a square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.mean(dim=(1, 2, 3)) - 0.45
        return torch.stack([-score, score], dim=1)


class _AlwaysSquare(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)


@pytest.mark.parametrize("family", list(cues.FAMILIES))
def test_reliance_tells_a_cue_follower_from_a_model_that_ignores_it(family):
    follower = cues.reliance(_BrightMeansSquare(), "brightness", 0.0, 1.0, seed=0, n=120, family=family)
    assert follower["gap"] >= cues.RELIANCE_GAP and follower["relies"]
    assert follower["aligned"] > follower["flipped"]
    constant = cues.reliance(_AlwaysSquare(), "brightness", 0.0, 1.0, seed=0, n=120, family=family)
    assert constant["accuracy"] == 0.5 and not constant["relies"]
