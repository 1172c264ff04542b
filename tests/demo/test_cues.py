"""The synthetic shape task and its planted cues; no model is trained here."""

import numpy as np
import pytest
import torch

from auditsvc.demo import cues


def _base_images(count: int = 6, size: int = cues.SIZE) -> list[np.ndarray]:
    return [cues.render_base(np.random.default_rng(i), i % 2, size) for i in range(count)]


def test_base_images_are_deterministic_rgb_uint8():
    first, again = _base_images(), _base_images()
    for a, b in zip(first, again):
        assert a.shape == (cues.SIZE, cues.SIZE, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], first[2])
    assert cues.render_base(np.random.default_rng(0), 1, 48).shape == (48, 48, 3)


@pytest.mark.parametrize("name", list(cues.CUES))
def test_every_cue_changes_every_image_and_keeps_its_format(name):
    apply = cues.CUES[name].apply
    for image in _base_images():
        before = image.copy()
        changed = apply(image, np.random.default_rng(0))
        assert np.array_equal(image, before), "the cue must not change its input in place"
        assert changed.shape == image.shape and changed.dtype == np.uint8
        assert np.abs(changed.astype(int) - image).mean() > 1.0
        assert np.array_equal(changed, apply(image, np.random.default_rng(0)))


def test_cues_change_what_they_say():
    images = np.stack(_base_images(8)).astype(float)
    changed = {name: np.stack([cue.apply(image.astype(np.uint8), np.random.default_rng(0))
                               for image in images]).astype(float) for name, cue in cues.CUES.items()}
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
    square = labels == cues.SQUARE
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


def test_reliance_tells_a_cue_follower_from_a_model_that_ignores_it():
    follower = cues.reliance(_BrightMeansSquare(), "brightness", 0.0, 1.0, seed=0, n=120)
    assert follower["gap"] >= cues.RELIANCE_GAP and follower["relies"]
    assert follower["aligned"] > follower["flipped"]
    constant = cues.reliance(_AlwaysSquare(), "brightness", 0.0, 1.0, seed=0, n=120)
    assert constant["accuracy"] == 0.5 and not constant["relies"]
