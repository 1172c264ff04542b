"""A synthetic shape task with planted shortcut cues, to prove that the shortcut probes find them.

The base task: is the filled shape in the image a circle or a square? The shape has a random
colour, size and position on a textured background (smooth colour gradients, fine texture,
distractor blobs and strokes), so a small CNN needs several epochs to learn it. A cue is a
change of the whole image (a brightness gain, a colour cast, a patch in a corner, a frame,
blur, pixel noise, JPEG compression) planted on some of the images. When the cue comes with
every square and no circle (alignment 1.0), a model can solve the task by the cue alone, and
a small CNN does: the cue is easier to see than the shape.

Ground truth for "does this model rely on the cue" comes from a hidden split where cue and
class are independent: accuracy on images where the cue agrees with the class it was planted
with (cue present iff square) against images where it disagrees.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

CLASSES = ("circle", "square")
SQUARE = CLASSES.index("square")
SIZE = 32
SHAPE_EXTENT = (0.34, 0.5)       # circle diameter or square side, as a share of the image side
SQUARE_ROTATION = np.pi / 12     # squares turn by up to this either way
SHAPE_CONTRAST = 0.6             # least summed |RGB difference| between the shape and what lies under it
GRAIN = 0.006                    # sensor grain of every image, far below the noise cue

# --- cue strengths (chosen so that a shortcut model learns each cue; see bench/shortcuts.py) ----
BRIGHTNESS_GAIN = 1.35                       # every pixel x1.35 (clipped)
WARM_CAST = np.array([1.3, 1.05, 0.72])      # per-channel gain: a warm, yellow-orange cast
CORNER_PATCH = 5 / 32                        # side of the corner patch, as a share of the image side
CORNER_COLOUR = (255, 0, 255)                # solid magenta, top-left corner
BORDER_WIDTH = 2 / 32                        # width of the frame, as a share of the image side
BORDER_COLOUR = (255, 210, 0)                # solid yellow
BLUR_SIGMA = 1.0                             # Gaussian blur, in pixels at 32 px
NOISE_SIGMA = 0.05                           # Gaussian pixel noise, share of the 0-255 range
JPEG_QUALITY = 25

# --- reliance ground truth ---------------------------------------------------------------------
RELIANCE_IMAGES = 600
RELIANCE_GAP = 0.20          # |aligned - flipped| accuracy at or above this: the model relies on the cue


# --- the base task -----------------------------------------------------------------------------

def render_base(rng: np.random.Generator, label: int, size: int = SIZE) -> np.ndarray:
    """One uint8 (size, size, 3) image with a circle (label 0) or a square (label 1)."""
    image = _background(rng, size)
    _add_distractors(rng, image, size)
    _add_shape(rng, image, label, size)
    image += rng.normal(0, GRAIN, image.shape)
    return _to_uint8(image)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth gradient between two colours, low-frequency colour blotches and a fine texture."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) + 0.5
    start, end = rng.uniform(0.2, 0.65, 3), rng.uniform(0.2, 0.65, 3)
    image = start + np.clip(ramp, 0, 1)[..., None] * (end - start)
    blotches = ndimage.gaussian_filter(rng.normal(0, 1, (size, size, 3)), (size / 6, size / 6, 0))
    image += 0.08 * blotches / (blotches.std() + 1e-6)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 0.7)
    image += rng.uniform(0.02, 0.06) * (texture / (texture.std() + 1e-6))[..., None]
    return image


def _add_distractors(rng: np.random.Generator, image: np.ndarray, size: int) -> None:
    """Soft blobs and thin strokes: edges and colour that are neither circle nor square."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(0.06, 0.15) * size
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))
        image += weight[..., None] * (rng.uniform(0.1, 0.8, 3) - image) * 0.7
    for _ in range(rng.integers(0, 2)):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        line = _stroke_mask(x, y, (x0, y0), (x1, y1), width=rng.uniform(0.6, 1.2) * size / 32)
        image += line[..., None] * (rng.uniform(0.1, 0.9, 3) - image)


def _stroke_mask(x: np.ndarray, y: np.ndarray, p0, p1, width: float) -> np.ndarray:
    direction = np.subtract(p1, p0)
    length = max(float(np.hypot(*direction)), 1e-6)
    t = np.clip(((x - p0[0]) * direction[0] + (y - p0[1]) * direction[1]) / length ** 2, 0, 1)
    distance = np.hypot(x - (p0[0] + t * direction[0]), y - (p0[1] + t * direction[1]))
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def _add_shape(rng: np.random.Generator, image: np.ndarray, label: int, size: int) -> None:
    """A filled, anti-aliased circle or (rotated) square whose colour stands out from what lies under it."""
    extent = rng.uniform(*SHAPE_EXTENT) * size
    margin = extent * 0.75 + 1
    cy, cx = rng.uniform(margin, size - margin, 2)
    mask = _shape_mask(label, extent, (cx, cy), rng.uniform(-SQUARE_ROTATION, SQUARE_ROTATION), size)
    under = image[mask > 0.5].mean(axis=0)
    colour = rng.uniform(0.05, 0.95, 3)
    while np.abs(colour - under).sum() < SHAPE_CONTRAST:
        colour = rng.uniform(0.05, 0.95, 3)
    image += mask[..., None] * (colour - image)


def _shape_mask(label: int, extent: float, centre: tuple[float, float], angle: float, size: int,
                supersample: int = 4) -> np.ndarray:
    """Coverage in [0, 1] per pixel, from a supersampled grid."""
    fine = (np.arange(size * supersample) + 0.5) / supersample
    y, x = np.meshgrid(fine, fine, indexing="ij")
    dx, dy = x - centre[0], y - centre[1]
    if label == SQUARE:
        u = np.abs(np.cos(angle) * dx + np.sin(angle) * dy)
        v = np.abs(-np.sin(angle) * dx + np.cos(angle) * dy)
        inside = np.maximum(u, v) <= extent / 2
    else:
        inside = np.hypot(dx, dy) <= extent / 2 * 1.1   # a circle of about the square's area
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


# --- the cues ----------------------------------------------------------------------------------

def brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(image / 255 * BRIGHTNESS_GAIN)


def colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(image / 255 * WARM_CAST)


def corner(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = max(2, round(CORNER_PATCH * image.shape[0]))
    out = image.copy()
    out[:side, :side] = CORNER_COLOUR
    return out


def border(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    width = max(1, round(BORDER_WIDTH * image.shape[0]))
    out = image.copy()
    for edge in (np.s_[:width], np.s_[-width:]):
        out[edge, :] = BORDER_COLOUR
        out[:, edge] = BORDER_COLOUR
    return out


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = BLUR_SIGMA * image.shape[0] / SIZE
    return _to_uint8(ndimage.gaussian_filter(image / 255, (sigma, sigma, 0), mode="reflect"))


def noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(image / 255 + rng.normal(0, NOISE_SIGMA, image.shape))


def jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy()


@dataclass(frozen=True)
class Cue:
    name: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    visible: bool        # a person sees it at a glance; blur, noise and JPEG at 32 px barely
    words: str


CUES = {cue.name: cue for cue in [
    Cue("brightness", brightness, True, f"brighter image (x{BRIGHTNESS_GAIN})"),
    Cue("colour", colour, True, "warm colour cast (red up, blue down)"),
    Cue("corner", corner, True, "magenta patch in the top-left corner"),
    Cue("border", border, True, "yellow frame"),
    Cue("blur", blur, False, f"Gaussian blur (sigma {BLUR_SIGMA} px)"),
    Cue("noise", noise, False, f"Gaussian pixel noise (sigma {NOISE_SIGMA:.0%} of the range)"),
    Cue("jpeg", jpeg, False, f"JPEG compression (quality {JPEG_QUALITY})"),
]}


# --- splits and ground truth -------------------------------------------------------------------

def make_split(rng: np.random.Generator, n: int, cue: str, alignment: float,
               size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images, half circles and half squares, shuffled: (uint8 images, labels, cue_present).

    alignment = P(cue present | square) = P(cue absent | circle), as exact counts per class:
    1.0 puts the cue on every square and no circle, 0.5 makes cue and class independent.
    """
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2), dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    for label, share in ((SQUARE, alignment), (1 - SQUARE, 1 - alignment)):
        members = np.flatnonzero(labels == label)
        present[members[:round(share * len(members))]] = True
    order = rng.permutation(n)
    labels, present = labels[order], present[order]
    apply = CUES[cue].apply
    images = np.stack([apply(image, rng) if on else image
                       for image, on in zip((render_base(rng, label, size) for label in labels), present)])
    return images, labels, present


def split_rng(seed: int, *purpose: str) -> np.random.Generator:
    """An independent stream per seed and purpose, so no two splits share images."""
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in purpose)])


def reliance(program, cue: str, mean: float, std: float, seed: int = 0, size: int = SIZE,
             n: int = RELIANCE_IMAGES) -> dict:
    """Accuracy on a hidden decorrelated split: where the cue agrees with the class it was planted
    with (present iff square) and where it disagrees; gap = aligned - flipped."""
    from .training import predict  # torch only where a model is measured

    images, labels, present = make_split(split_rng(seed, "reliance", cue), n, cue, 0.5, size)
    correct = predict(program, images, mean, std) == labels
    agrees = present == (labels == SQUARE)
    aligned, flipped = float(correct[agrees].mean()), float(correct[~agrees].mean())
    return {"aligned": round(aligned, 4), "flipped": round(flipped, 4), "accuracy": round(float(correct.mean()), 4),
            "gap": round(aligned - flipped, 4), "relies": abs(aligned - flipped) >= RELIANCE_GAP}
