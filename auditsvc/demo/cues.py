"""Synthetic shape tasks with planted shortcut cues, to prove that the shortcut probes find them.

Two task families, each a two-class question about one object on a background:
- "shapes": is the filled shape a circle or a square? A random colour, size and position on a
  smooth, blotchy background with distractor blobs and strokes.
- "glyphs": is the mark a ring or a cross? Objects filled with a solid colour, stripes, a check
  or a gradient, on striped, checked or blotchy backgrounds. The classes differ only in the
  object's outline; fill, background and position are drawn the same way for both, so any
  property that predicts the label here is a property of the object, never a nuisance.
A small CNN needs several epochs to learn either task.

A cue is planted on some of the images: a change of the whole image (a brightness gain, a colour
cast, a patch in a corner, a frame, blur, pixel noise, JPEG compression) or of one place (a fine
texture or a colour cast on the background only, a colour cast on the object only). When the cue
comes with every image of the second class and none of the first (alignment 1.0), a model can
solve the task by the cue alone, and a small CNN does: the cue is easier to see than the shape.

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
CUED = 1                         # every family plants its cues with its second class
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
TEXTURE_AMPLITUDE = 0.07                     # the background check's swing, share of the 0-255 range
OBJECT_TINT = (0.95, 0.15, 0.1)              # red
OBJECT_TINT_SHARE = 0.6                      # the object's pixels move this share of the way to the tint

# --- reliance ground truth ---------------------------------------------------------------------
RELIANCE_IMAGES = 600
RELIANCE_GAP = 0.20          # |aligned - flipped| accuracy at or above this: the model relies on the cue


# --- the base tasks ----------------------------------------------------------------------------

def render_base(rng: np.random.Generator, label: int, size: int = SIZE, family: str = "shapes") -> np.ndarray:
    """One uint8 (size, size, 3) image of class `label` of the family."""
    return render_scene(rng, label, size, family)[0]


def render_scene(rng: np.random.Generator, label: int, size: int = SIZE,
                 family: str = "shapes") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, object coverage in [0, 1] per pixel) of one image of class `label`."""
    return FAMILIES[family].render(rng, label, size)


def _render_shapes(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = _background(rng, size)
    _add_distractors(rng, image, size)
    mask = _add_shape(rng, image, label, size)
    image += rng.normal(0, GRAIN, image.shape)
    return _to_uint8(image), mask


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


def _add_shape(rng: np.random.Generator, image: np.ndarray, label: int, size: int) -> np.ndarray:
    """A filled, anti-aliased circle or (rotated) square whose colour stands out from what lies under it."""
    extent = rng.uniform(*SHAPE_EXTENT) * size
    margin = extent * 0.75 + 1
    cy, cx = rng.uniform(margin, size - margin, 2)
    mask = _shape_mask(label, extent, (cx, cy), rng.uniform(-SQUARE_ROTATION, SQUARE_ROTATION), size)
    colour = _contrasting_colour(rng, image[mask > 0.5].mean(axis=0))
    image += mask[..., None] * (colour - image)
    return mask


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    colour = rng.uniform(0.05, 0.95, 3)
    while np.abs(colour - under).sum() < SHAPE_CONTRAST:
        colour = rng.uniform(0.05, 0.95, 3)
    return colour


def _supersampled(size: int, supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    fine = (np.arange(size * supersample) + 0.5) / supersample
    return np.meshgrid(fine, fine, indexing="ij")


def _coverage(inside: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel share of a supersampled boolean grid."""
    supersample = inside.shape[0] // size
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _shape_mask(label: int, extent: float, centre: tuple[float, float], angle: float, size: int) -> np.ndarray:
    """Coverage in [0, 1] per pixel, from a supersampled grid."""
    y, x = _supersampled(size)
    dx, dy = x - centre[0], y - centre[1]
    if label == SQUARE:
        u = np.abs(np.cos(angle) * dx + np.sin(angle) * dy)
        v = np.abs(-np.sin(angle) * dx + np.cos(angle) * dy)
        inside = np.maximum(u, v) <= extent / 2
    else:
        inside = np.hypot(dx, dy) <= extent / 2 * 1.1   # a circle of about the square's area
    return _coverage(inside, size)


# --- the glyph family: ring or cross, textured fills on textured backgrounds -------------------

GLYPH_EXTENT = (0.45, 0.62)      # ring diameter or cross arm span, as a share of the image side
RING_WIDTH = (0.2, 0.3)          # ring thickness, as a share of its diameter
BAR_WIDTH = (0.24, 0.32)         # cross bar thickness, as a share of its span
PATTERN_PERIOD = (3.0, 8.0)      # stripes and checks of fills and backgrounds, in pixels at 32 px


def _render_glyphs(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = _glyph_background(rng, size)
    _add_distractors(rng, image, size)
    extent = rng.uniform(*GLYPH_EXTENT) * size
    margin = extent / 2 + 1
    centre = tuple(rng.uniform(margin, size - margin, 2))
    mask = _glyph_mask(rng, label, extent, centre, size)
    fill = _pattern(rng, size, _contrasting_colour(rng, image[mask > 0.5].mean(axis=0)))
    image += mask[..., None] * (fill - image)
    image += rng.normal(0, GRAIN, image.shape)
    return _to_uint8(image), mask


def _glyph_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes, a check or the shapes' blotchy gradient, with equal odds."""
    kind = rng.integers(3)
    if kind == 2:
        return _background(rng, size)
    base = rng.uniform(0.2, 0.7, 3)
    other = np.clip(base + rng.choice([-1, 1], 3) * rng.uniform(0.08, 0.2, 3), 0, 1)
    return _periodic(rng, size, base, other, check=bool(kind))


def _pattern(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """An object's fill: solid, stripes, a check or a gradient of its colour, with equal odds."""
    kind = rng.integers(4)
    other = np.clip(colour + rng.choice([-1, 1], 3) * rng.uniform(0.15, 0.3, 3), 0, 1)
    if kind == 0:
        return np.broadcast_to(colour, (size, size, 3)).copy()
    if kind == 3:
        y, x = np.mgrid[0:size, 0:size] / (size - 1)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.clip(np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5) + 0.5, 0, 1)
        return colour + ramp[..., None] * (other - colour)
    return _periodic(rng, size, colour, other, check=kind == 2)


def _periodic(rng: np.random.Generator, size: int, first: np.ndarray, second: np.ndarray, check: bool) -> np.ndarray:
    """Soft stripes (or a check) of two colours at a random angle and period."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    period = rng.uniform(*PATTERN_PERIOD) * size / SIZE
    angle = rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * (np.cos(angle) * x + np.sin(angle) * y) / period)
    if check:
        wave = wave * np.sin(2 * np.pi * (-np.sin(angle) * x + np.cos(angle) * y) / period)
    share = 0.5 + 0.5 * np.tanh(3 * wave)
    return first + share[..., None] * (second - first)


def _glyph_mask(rng: np.random.Generator, label: int, extent: float, centre: tuple[float, float],
                size: int) -> np.ndarray:
    y, x = _supersampled(size)
    dx, dy = x - centre[0], y - centre[1]
    if label == 0:   # a ring
        outer = extent / 2
        inner = outer * (1 - 2 * rng.uniform(*RING_WIDTH))
        radius = np.hypot(dx, dy)
        inside = (radius <= outer) & (radius >= inner)
    else:            # a cross, turned by up to 15 degrees either way
        angle = rng.uniform(-np.pi / 12, np.pi / 12)
        u = np.abs(np.cos(angle) * dx + np.sin(angle) * dy)
        v = np.abs(-np.sin(angle) * dx + np.cos(angle) * dy)
        half_bar = extent * rng.uniform(*BAR_WIDTH) / 2
        inside = (np.maximum(u, v) <= extent / 2) & (np.minimum(u, v) <= half_bar)
    return _coverage(inside, size)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


# --- the cues ----------------------------------------------------------------------------------
# Each takes the uint8 image, a generator and the object's coverage (H, W) in [0, 1].

def brightness(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    return _to_uint8(image / 255 * BRIGHTNESS_GAIN)


def colour(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    return _to_uint8(image / 255 * WARM_CAST)


def corner(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    side = max(2, round(CORNER_PATCH * image.shape[0]))
    out = image.copy()
    out[:side, :side] = CORNER_COLOUR
    return out


def border(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    width = max(1, round(BORDER_WIDTH * image.shape[0]))
    out = image.copy()
    for edge in (np.s_[:width], np.s_[-width:]):
        out[edge, :] = BORDER_COLOUR
        out[:, edge] = BORDER_COLOUR
    return out


def blur(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    sigma = BLUR_SIGMA * image.shape[0] / SIZE
    return _to_uint8(ndimage.gaussian_filter(image / 255, (sigma, sigma, 0), mode="reflect"))


def noise(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    return _to_uint8(image / 255 + rng.normal(0, NOISE_SIGMA, image.shape))


def jpeg(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy()


def background_texture(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A fine check (one pixel per cell) of random phase, on the background only."""
    y, x = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    check = np.where((x + y + rng.integers(2)) % 2, 1.0, -1.0)
    texture = TEXTURE_AMPLITUDE * check * (1 - mask)
    return _to_uint8(image / 255 + texture[..., None])


def background_colour(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """The warm cast of `colour` on the background only."""
    gain = 1 + (1 - mask)[..., None] * (WARM_CAST - 1)
    return _to_uint8(image / 255 * gain)


def object_colour(image: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """The object's mean colour moved towards red, its pattern kept. Objects come in every colour, so a
    mild cast would hide among them; a tint is what "the red ones" means."""
    pixels, where = image / 255, mask[..., None]
    mean = (pixels * where).sum(axis=(0, 1)) / max(float(mask.sum()), 1e-6)
    return _to_uint8(pixels + where * OBJECT_TINT_SHARE * (np.array(OBJECT_TINT) - mean))


@dataclass(frozen=True)
class Cue:
    name: str
    apply: Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]
    visible: bool        # a person sees it at a glance; blur, noise and JPEG at 32 px barely
    words: str
    place: str = ""      # "object" or "surroundings" for a cue planted in one place only


CUES = {cue.name: cue for cue in [
    Cue("brightness", brightness, True, f"brighter image (x{BRIGHTNESS_GAIN})"),
    Cue("colour", colour, True, "warm colour cast (red up, blue down)"),
    Cue("corner", corner, True, "magenta patch in the top-left corner"),
    Cue("border", border, True, "yellow frame"),
    Cue("blur", blur, False, f"Gaussian blur (sigma {BLUR_SIGMA} px)"),
    Cue("noise", noise, False, f"Gaussian pixel noise (sigma {NOISE_SIGMA:.0%} of the range)"),
    Cue("jpeg", jpeg, False, f"JPEG compression (quality {JPEG_QUALITY})"),
    Cue("background_texture", background_texture, False,
        f"fine one-pixel check on the background (+-{TEXTURE_AMPLITUDE:.0%})", "surroundings"),
    Cue("background_colour", background_colour, True, "warm colour cast on the background only", "surroundings"),
    Cue("object_colour", object_colour, True, "object tinted red", "object"),
]}


@dataclass(frozen=True)
class Family:
    name: str
    classes: tuple[str, str]     # cues are planted with the second class
    render: Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]
    words: str


FAMILIES = {family.name: family for family in [
    Family("shapes", CLASSES, _render_shapes, "filled circle or square on a blotchy background"),
    Family("glyphs", ("ring", "cross"), _render_glyphs,
           "ring or cross with solid, striped, checked or graded fills on striped, checked or blotchy backgrounds"),
]}


# --- splits and ground truth -------------------------------------------------------------------

def make_split(rng: np.random.Generator, n: int, cue: str, alignment: float, size: int = SIZE,
               family: str = "shapes") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images, half of each class, shuffled: (uint8 images, labels, cue_present).

    alignment = P(cue present | second class) = P(cue absent | first class), as exact counts per
    class: 1.0 puts the cue on every image of the second class and none of the first, 0.5 makes
    cue and class independent.
    """
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2), dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    for label, share in ((CUED, alignment), (1 - CUED, 1 - alignment)):
        members = np.flatnonzero(labels == label)
        present[members[:round(share * len(members))]] = True
    order = rng.permutation(n)
    labels, present = labels[order], present[order]
    apply = CUES[cue].apply
    images = []
    for label, on in zip(labels, present):
        image, mask = render_scene(rng, label, size, family)
        images.append(apply(image, rng, mask) if on else image)
    return np.stack(images), labels, present


def split_rng(seed: int, *purpose: str) -> np.random.Generator:
    """An independent stream per seed and purpose, so no two splits share images."""
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in purpose)])


def reliance(program, cue: str, mean: float, std: float, seed: int = 0, size: int = SIZE,
             n: int = RELIANCE_IMAGES, family: str = "shapes") -> dict:
    """Accuracy on a hidden decorrelated split: where the cue agrees with the class it was planted
    with (present iff second class) and where it disagrees; gap = aligned - flipped."""
    from .training import predict  # torch only where a model is measured

    purpose = ("reliance", cue) if family == "shapes" else ("reliance", family, cue)
    images, labels, present = make_split(split_rng(seed, *purpose), n, cue, 0.5, size, family)
    correct = predict(program, images, mean, std) == labels
    agrees = present == (labels == CUED)
    aligned, flipped = float(correct[agrees].mean()), float(correct[~agrees].mean())
    return {"aligned": round(aligned, 4), "flipped": round(flipped, 4), "accuracy": round(float(correct.mean()), 4),
            "gap": round(aligned - flipped, 4), "relies": abs(aligned - flipped) >= RELIANCE_GAP}
