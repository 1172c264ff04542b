import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from auditsvc.battery.probes.properties import PROPERTIES, measure


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((8, 48, 48, 3)), sigma=(0, 3, 3, 0))
    texture = ndimage.gaussian_filter(rng.random((8, 48, 48, 3)), sigma=(0, 1, 1, 0)) * 0.3
    return (np.clip(smooth * 0.7 + texture, 0, 1) * 255).astype(np.uint8)


def _mean(pixels, name):
    return float(measure(pixels, [name])[name].mean())


def test_every_property_is_measured_per_image(images):
    values = measure(images)
    assert set(values) == {p.name for p in PROPERTIES}
    assert all(v.shape == (8,) and np.isfinite(v).all() for v in values.values())


def test_brightness_and_contrast_follow_the_pixels(images):
    brighter = np.clip(images * 1.3, 0, 255).astype(np.uint8)
    assert _mean(brighter, "brightness") > _mean(images, "brightness")
    top_lit = images.copy()
    top_lit[:, :16] = 255
    assert _mean(top_lit, "top_brightness") > _mean(images, "top_brightness") + 0.2
    assert abs(_mean(top_lit, "bottom_brightness") - _mean(images, "bottom_brightness")) < 1e-9
    flat = np.full_like(images, 128)
    assert _mean(flat, "contrast") == 0


def test_blur_noise_and_jpeg_move_their_properties(images):
    blurred = ndimage.gaussian_filter(images.astype(float), sigma=(0, 1.5, 1.5, 0)).astype(np.uint8)
    assert _mean(blurred, "sharpness") < _mean(images, "sharpness") - 1
    noisy = np.clip(images + np.random.default_rng(1).normal(0, 15, images.shape), 0, 255).astype(np.uint8)
    assert _mean(noisy, "noise") > _mean(images, "noise") * 1.5
    compressed = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=10)
        compressed.append(np.asarray(Image.open(buffer)))
    assert _mean(np.stack(compressed), "blockiness") > _mean(images, "blockiness") + 0.2


def _shapes_with_noise(sigma: float, shape: str, rng: np.random.Generator, count: int = 8) -> np.ndarray:
    """Grey scenes: a bright object with sharp edges on a flat background, plus Gaussian noise."""
    yy, xx = np.mgrid[:48, :48]
    images = []
    for _ in range(count):
        cy, cx, radius = rng.integers(14, 34), rng.integers(14, 34), rng.integers(7, 12)
        inside = (np.hypot(yy - cy, xx - cx) < radius) if shape == "disc" else \
            (np.abs(yy - cy) < radius) & (np.abs(xx - cx) < radius) & ((yy + xx) % 8 < 4)
        grey = 0.3 + 0.4 * inside + rng.normal(0, sigma, (48, 48))
        images.append(np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2))
    return (np.stack(images) * 255).round().astype(np.uint8)


def test_noise_reads_the_sensor_noise_not_the_edges_of_the_object():
    rng = np.random.default_rng(3)
    plain = _shapes_with_noise(0.03, "disc", rng)
    striped = _shapes_with_noise(0.03, "striped square", rng)  # far more edge per image, same noise
    noisier = _shapes_with_noise(0.06, "disc", rng)
    plain_sigma, striped_sigma = measure(plain, ["noise"])["noise"], measure(striped, ["noise"])["noise"]
    assert np.allclose(plain_sigma, 0.03, rtol=0.2) and np.allclose(striped_sigma, 0.03, rtol=0.2)  # 8-bit steps
    assert abs(striped_sigma.mean() / plain_sigma.mean() - 1) < 0.1
    assert measure(noisier, ["noise"])["noise"].min() > 1.6 * plain_sigma.max()


def test_a_corner_patch_and_a_frame_are_seen_where_they_are(images):
    patched = images.copy()
    patched[:, :6, :6] = (255, 0, 0)
    before, after = measure(images), measure(patched)
    assert after["corner_top_left"].mean() > before["corner_top_left"].mean() + 0.3
    for other in ("corner_top_right", "corner_bottom_left", "corner_bottom_right"):
        assert np.allclose(after[other], before[other])
    framed = images.copy()
    framed[:, :2], framed[:, -2:], framed[:, :, :2], framed[:, :, -2:] = 0, 0, 0, 0
    assert _mean(framed, "border") > _mean(images, "border") + 0.2


def test_grey_images_have_no_colour(images):
    grey = images[:, :, :, :1]
    values = measure(grey)
    assert not values["saturation"].any() and not values["red_share"].any()
    assert values["brightness"].any()
