"""Counterfactual interventions: change one property of an image and nothing the label depends on.

Strength comes from the probe set and the model's own predictions (evidence.matched_dose): an
intervention moves each treated image's property to its median among the images predicted as
the class that carries most (or least) of it, so the change is as large as the difference the
model's answers already draw, and stays within the images it is audited on. A colour-balance
intervention is a white balance in the direction that class's typical image differs from the
others', a lighting one shifts light by that whole difference; a region intervention pastes the
typical border or corner of the images where that region stands out most, on the pixels those
images share (a stamp, a frame), or takes those pixels away by continuing each image's surroundings.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from . import properties

Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]  # float (n, H, W, C) in [0, 1], strength per image -> same


@dataclass(frozen=True)
class Intervention:
    name: str
    cue: str                 # cue family it tests (see properties.Property.cue)
    words: str               # what it does, for the report
    property: str | None     # the property it moves; None for harmless and box interventions
    direction: str           # "up", "down", "swap" (towards the high end), "swap_down" (towards the low end), "none"
    ladder: tuple[float, ...] = ()
    transform: Transform | None = None
    identity: float = 0.0    # the strength that leaves an image unchanged (dosing refines between it and the ladder)
    region: str | None = None   # "border", "corner_top_left", ...: the cue's footprint added or taken away
    #                             (cue_footprint); "background", "object": from one donor image; "chroma" /
    #                             "luminance": the colour balance / light shifted as the model's answers differ;
    #                             "tint": a part repainted a donor's colour (one part only, see repaint())
    harmless: bool = False
    decides: bool = True        # False: a synthetic change shown as a sensitivity, never as evidence of a cue
    proxy: bool = False         # stands in for a change that cannot be made (undoing compression): evidence only
    #                             beside a change the other way (see cue_verdict.reliance)


def _each(strength, x: np.ndarray) -> np.ndarray:
    """A strength per image, shaped to broadcast over (n, H, W, C)."""
    return np.broadcast_to(np.asarray(strength, np.float64), (len(x),)).reshape(-1, 1, 1, 1)


def _gain(x, s):
    return x * _each(s, x)


def _gamma(x, s):
    return np.clip(x, 0, 1) ** _each(s, x)


def _contrast(x, s):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * _each(s, x) + mean


def _saturation(x, s):
    grey = x.mean(axis=3, keepdims=True)
    return grey + (x - grey) * _each(s, x)


def _channel_gain(channel: int) -> Transform:
    def apply(x, s):
        out = x.copy()
        out[..., channel] *= _each(s, x)[..., 0]
        return out
    return apply


def _blur(x, s):
    sigmas = _each(s, x).ravel()
    return np.stack([ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0)) for image, sigma in zip(x, sigmas)])


def _sharpen(x, s):
    return x + _each(s, x) * (x - ndimage.gaussian_filter(x, sigma=(0, 1.0, 1.0, 0)))


def _noise(x, s):
    rng = np.random.default_rng(int(x.sum() * 1000) % 2**32)  # reproducible for the same images
    return x + rng.normal(0, 1, x.shape) * _each(s, x)


def _denoise(x, s):
    """Blend towards a 3x3 median filter: 1 is the full filter, less removes only part of the noise."""
    return x + _each(s, x) * (ndimage.median_filter(x, size=(1, 3, 3, 1)) - x)


def _jpeg(x, quality):
    out = np.empty_like(x)
    for i, (image, q) in enumerate(zip(x, _each(quality, x).ravel())):
        array = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        grey = array.shape[2] == 1
        buffer = io.BytesIO()
        Image.fromarray(array[:, :, 0] if grey else array).save(buffer, "JPEG", quality=int(round(q)))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255
        out[i] = decoded[:, :, None] if grey else decoded
    return out


def _shift(x, s):
    step = int(np.asarray(s).flat[0])
    padded = np.pad(x, ((0, 0), (step, 0), (step, 0), (0, 0)), mode="edge")
    return padded[:, : x.shape[1], : x.shape[2]]


def _corner_words(corner: str) -> str:
    return corner.replace("corner_", "").replace("_", "-")


CORNERS = ("corner_top_left", "corner_top_right", "corner_bottom_left", "corner_bottom_right")
UP = (1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5)
DOWN = tuple(1 / v for v in UP)

INTERVENTIONS = [
    Intervention("shift_1px", "none", "shift by one pixel", None, "none", (1,), _shift, harmless=True),
    Intervention("shift_2px", "none", "shift by two pixels", None, "none", (2,), _shift, harmless=True),
    Intervention("brighter", "brightness", "make brighter", "brightness", "up", UP, _gain, 1.0),
    Intervention("darker", "brightness", "make darker", "brightness", "down", DOWN, _gain, 1.0),
    Intervention("lighting_of_brighter", "brightness", "shift brightness and contrast towards the brightest answers",
                 "brightness", "swap", region="luminance"),
    Intervention("lighting_of_darker", "brightness", "shift brightness and contrast towards the darkest answers",
                 "brightness", "swap_down", region="luminance"),
    # Gamma curves change tonal relations no camera exposure would: a sensitivity, not evidence.
    Intervention("gamma_brighter", "brightness", "brighten the mid-tones (gamma)", "brightness", "up",
                 (0.9, 0.8, 0.7, 0.6, 0.5, 0.4), _gamma, 1.0, decides=False),
    Intervention("gamma_darker", "brightness", "darken the mid-tones (gamma)", "brightness", "down",
                 (1.1, 1.25, 1.4, 1.6, 1.9, 2.3), _gamma, 1.0, decides=False),
    Intervention("more_contrast", "contrast", "raise contrast", "contrast", "up", UP, _contrast, 1.0),
    Intervention("less_contrast", "contrast", "lower contrast", "contrast", "down", DOWN, _contrast, 1.0),
    Intervention("more_saturated", "saturation", "saturate colours", "saturation", "up", UP, _saturation, 1.0),
    Intervention("greyer", "saturation", "desaturate towards grey", "saturation", "down",
                 (0.8, 0.6, 0.4, 0.2, 0.0), _saturation, 1.0),
    # A colour balance shifted as the model's answers differ keeps each image's own colours; synthetic
    # channel gains also recolour the object itself, so they only show how sensitive the model is.
    *[Intervention(f"{c}_balance_of_others", "colour", f"shift the colour balance towards the answers with most {c}",
                   f"{c}_share", "swap", region="chroma") for c in ("red", "green", "blue")],
    *[Intervention(f"{c}_poor_balance_of_others", "colour",
                   f"shift the colour balance towards the answers with least {c}", f"{c}_share", "swap_down",
                   region="chroma") for c in ("red", "green", "blue")],
    # A part painted another colour keeps its pattern and shading; a white balance barely moves a dark or
    # saturated object. Only on one part (the object or its surroundings): on the whole image it is a cast.
    *[Intervention(f"{c}_tint_of_others", "colour", f"paint the part the colour of an answer with more {c}",
                   f"{c}_share", "swap", region="tint") for c in ("red", "green", "blue")],
    *[Intervention(f"{c}_poor_tint_of_others", "colour", f"paint the part the colour of an answer with less {c}",
                   f"{c}_share", "swap_down", region="tint") for c in ("red", "green", "blue")],
    *[Intervention(f"more_{c}", "colour", f"add a synthetic {c} cast", f"{c}_share", "up",
                   (1.05, 1.1, 1.2, 1.3, 1.45), _channel_gain(i), 1.0, decides=False)
      for i, c in enumerate(("red", "green", "blue"))],
    Intervention("blur", "sharpness", "blur", "sharpness", "down", (0.5, 0.75, 1.0, 1.5, 2.0, 3.0), _blur),
    Intervention("sharpen", "sharpness", "sharpen", "sharpness", "up", (0.5, 1.0, 2.0, 3.0), _sharpen),
    Intervention("add_noise", "noise", "add pixel noise", "noise", "up", (0.01, 0.02, 0.04, 0.06, 0.1, 0.15), _noise),
    Intervention("denoise", "noise", "remove pixel noise (towards a median filter)", "noise", "down",
                 (0.25, 0.5, 0.75, 1.0), _denoise),
    Intervention("jpeg", "compression", "compress as JPEG", "blockiness", "up", (80, 60, 40, 25, 15, 8), _jpeg, 100.0),
    # Compression cannot be undone; fine grain hides its blocks and smoothness, the nearest way back.
    Intervention("restore_grain", "compression", "add fine grain (hides compression)", "blockiness", "down",
                 (0.01, 0.02, 0.04, 0.06), _noise, proxy=True),
    Intervention("swap_border", "border", "give the typical border of the images where it stands out most",
                 "border", "swap", region="border"),
    Intervention("plain_border", "border", "take away what the images where the border stands out most share there",
                 "border", "swap_down", region="border"),
    *[Intervention(f"swap_{corner}", "corner", f"give the typical {_corner_words(corner)} corner of the images "
                   "where it stands out most", corner, "swap", region=corner) for corner in CORNERS],
    *[Intervention(f"plain_{corner}", "corner", f"take away what the images where the {_corner_words(corner)} "
                   "corner stands out most share there", corner, "swap_down", region=corner) for corner in CORNERS],
    Intervention("swap_background", "background", "keep the object, take the background from another image",
                 None, "swap", region="background"),
    # Covering the object should change the answer: its flips show the model needs the object.
    Intervention("mask_object", "background", "cover the object with background", None, "swap", region="object",
                 decides=False),
]
BY_NAME = {i.name: i for i in INTERVENTIONS}
COLOUR_CUES = ("colour", "saturation")


def to_float(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) / 255.0


def to_pixels(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def apply_to_target(intervention: Intervention, pixels: np.ndarray, target: float, refinements: int = 4,
                    within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Move each image's property to `target` with the weakest strength that gets there.

    The ladder brackets each image's strength; bisection then narrows the bracket, so the dose
    overshoots the target by at most 1/16 of one ladder step. Returns the changed pixels and the
    strength used per image (the strongest step when none reaches the target). `within` (n, H, W):
    the property is measured on those pixels only (the part of the image the change may act on)."""
    base = to_float(pixels)
    weaker = np.full(len(pixels), intervention.identity)
    stronger = np.full(len(pixels), intervention.ladder[-1])
    done = np.zeros(len(pixels), bool)
    for step in intervention.ladder:
        reached = _reaches(intervention, base, np.full(len(pixels), step), target, within) & ~done
        stronger[reached] = step
        done |= reached
        weaker[~done] = step
        if done.all():
            break
    for _ in range(refinements if done.any() else 0):
        middle = np.where(done, (weaker + stronger) / 2, stronger)
        reached = _reaches(intervention, base, middle, target, within)
        stronger = np.where(done & reached, middle, stronger)
        weaker = np.where(done & ~reached, middle, weaker)
    return to_pixels(intervention.transform(base, stronger)), stronger


def _reaches(intervention: Intervention, base: np.ndarray, strength: np.ndarray, target: float,
             within: np.ndarray | None = None) -> np.ndarray:
    changed = to_pixels(intervention.transform(base, strength))
    name = intervention.property
    value = (properties.measure(changed, [name]) if within is None else
             properties.measure_away(changed, within, [name]))[name]
    return (value >= target) if intervention.direction == "up" else (value <= target)


def keeping(intervention: Intervention, keep: np.ndarray | None) -> Intervention:
    """The same change, with the pixels under `keep` (n, H, W) left as they were."""
    if keep is None or not keep.any():
        return intervention
    transform = intervention.transform
    return replace(intervention, transform=lambda x, s: keep_pixels(transform(x, s), x, keep))


def keep_pixels(changed: np.ndarray, original: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """`changed` with the pixels under `keep` (n, H, W) taken from `original`."""
    return changed if keep is None else np.where(keep[..., None], original, changed)


def object_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, H, W): each image's object box; all False where it has none (NaN)."""
    return np.stack([np.zeros((height, width), bool) if np.isnan(box).any()
                     else region_mask("object", height, width, box) for box in boxes])


def apply_harmless(intervention: Intervention, pixels: np.ndarray) -> np.ndarray:
    return to_pixels(intervention.transform(to_float(pixels), intervention.ladder[0]))


def region_mask(region: str, height: int, width: int, box: np.ndarray | None = None) -> np.ndarray:
    """Boolean (H, W) mask of a region: the border band, a corner, or a box (object)."""
    mask = np.zeros((height, width), bool)
    if region == "border":
        band = max(1, round(properties.BORDER_FRACTION * min(height, width)))
        mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = True, True, True, True
    elif region.startswith("corner_"):
        ch = max(2, round(properties.CORNER_FRACTION * height))
        cw = max(2, round(properties.CORNER_FRACTION * width))
        rows = slice(0, ch) if "top" in region else slice(height - ch, height)
        cols = slice(0, cw) if "left" in region else slice(width - cw, width)
        mask[rows, cols] = True
    elif region in ("object", "background"):
        x0, y0, x1, y1 = box
        mask[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = True
        if region == "background":
            mask = ~mask
    return mask


# An opponent colour space: luminance and two colour-difference axes (orthonormal rows).
OPPONENT = np.array([[1, 1, 1], [1, -1, 0], [1, 1, -2]], dtype=np.float64)
OPPONENT /= np.linalg.norm(OPPONENT, axis=1, keepdims=True)


def _basis(pixels: np.ndarray) -> np.ndarray:
    """Opponent-colour axes for colour images; a grey image has only its luminance."""
    return OPPONENT if pixels.shape[-1] == 3 else np.eye(pixels.shape[-1])


def _luminance(pixels: np.ndarray) -> np.ndarray:
    return to_float(pixels) @ _basis(pixels)[0]


def luminance_statistics(pixels: np.ndarray, part: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the mean and spread of the luminance (over the `part` (n, H, W) of each image)."""
    luminance = _luminance(pixels)
    weights = np.ones(luminance.shape) if part is None else part.astype(np.float64)
    total = np.maximum(weights.sum(axis=(1, 2)), 1e-9)
    mean = (luminance * weights).sum(axis=(1, 2)) / total
    variance = (((luminance - mean[:, None, None]) ** 2) * weights).sum(axis=(1, 2)) / total
    return mean, np.sqrt(variance)


def lighting_shift(pixels: np.ndarray, towards: np.ndarray, away: np.ndarray, towards_part: np.ndarray | None = None,
                   away_part: np.ndarray | None = None, within: np.ndarray | None = None) -> np.ndarray:
    """Shift the mean and scale the spread of the luminance (Reinhard et al. 2001) by as much as
    the typical image of `towards` differs from the typical image of `away`. Each image keeps
    its own colours and light; only what separates the two groups is added. With parts (n, H, W
    masks per group, and `within` for `pixels`) the statistics are those of the parts."""
    basis = _basis(pixels)
    image = to_float(pixels) @ basis.T
    (to_mean, to_std), (from_mean, from_std) = (luminance_statistics(towards, towards_part),
                                                luminance_statistics(away, away_part))
    source = image[..., 0]
    mean = luminance_statistics(pixels, within)[0][:, None, None]
    ratio = np.median(to_std) / max(float(np.median(from_std)), 1e-6)
    image[..., 0] = (source - mean) * ratio + mean + np.median(to_mean) - np.median(from_mean)
    return to_pixels(image @ basis)


BALANCE_LADDER = (0.25, 0.5, 0.75, 1.0)


def white_balance(towards: np.ndarray, away: np.ndarray, towards_part: np.ndarray | None = None,
                  away_part: np.ndarray | None = None) -> Transform:
    """A white-balance (von Kries) change in the direction in which the typical channel levels of
    `towards` differ from those of `away` (over their parts, (n, H, W) masks, where given), the
    way another light tints a whole image, dark and bright parts in proportion. Strength 1 is
    their whole difference; the overall level is kept."""
    levels_from = np.median(_channel_levels(away, away_part), axis=0)
    levels_to = np.median(_channel_levels(towards, towards_part), axis=0)
    log_gains = np.log(np.maximum(levels_to, 1e-3) / np.maximum(levels_from, 1e-3))

    def apply(x, s):
        gains = np.exp(_each(s, x) * log_gains)
        level = (gains * levels_from).sum(axis=-1, keepdims=True) / max(float(levels_from.sum()), 1e-6)
        return x * gains / level
    return apply


def _channel_levels(pixels: np.ndarray, part: np.ndarray | None) -> np.ndarray:
    """(n, C): each image's mean level per channel, over its part where given."""
    return _channel_levels_float(to_float(pixels), part)


def _channel_levels_float(image: np.ndarray, part: np.ndarray | None) -> np.ndarray:
    if part is None:
        return image.mean(axis=(1, 2))
    weights = part.astype(np.float64)[..., None]
    return (image * weights).sum(axis=(1, 2)) / np.maximum(weights.sum(axis=(1, 2)), 1e-9)


def dosed_balance(intervention: Intervention, towards: np.ndarray, away: np.ndarray,
                  towards_part: np.ndarray | None = None, away_part: np.ndarray | None = None) -> Intervention:
    """A colour-balance intervention as a dosed change: the white balance that separates the two
    groups, applied to each image only as far as its colour share needs to reach the target (a
    whole-group difference also holds the groups' different content: sky, foliage, objects)."""
    return replace(intervention, transform=white_balance(towards, away, towards_part, away_part),
                   ladder=BALANCE_LADDER, identity=0.0,
                   direction="up" if intervention.direction == "swap" else "down")


def repaint(pixels: np.ndarray, within: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Each image's part (`within`, (n, H, W)) moved to the mean colour `colours` (n, C): every pixel of
    the part gets the offset from the part's own colour to it, in the share it has of that colour
    (coverage()), so pattern, shading and anti-aliased edges stay, the way an object painted another
    colour keeps its outline."""
    image = to_float(pixels)
    alpha = coverage(image, within)
    own = _channel_levels_float(image, alpha >= 0.5)
    return to_pixels(image + alpha[..., None] * (colours - own)[:, None, None, :])


def part_colours(pixels: np.ndarray, part: np.ndarray) -> np.ndarray:
    """(n, C): each image's mean colour over the part's own pixels (coverage() at least one half)."""
    image = to_float(pixels)
    return _channel_levels_float(image, coverage(image, part) >= 0.5)


COVERAGE_MARGIN = 0.15   # within this share of either colour a pixel is all of it (grain is not an edge)


def coverage(image: np.ndarray, part: np.ndarray) -> np.ndarray:
    """(n, H, W) in [0, 1]: how much of each pixel of `part` is the part's own colour rather than the
    rest's (its position between the two mean colours); 0 outside the part. A part drawn around an
    object (a box, a widened outline) also holds background, and painting that would redraw the
    object's outline."""
    inside, outside = _channel_levels_float(image, part), _channel_levels_float(image, ~part)
    axis = (inside - outside)[:, None, None, :]
    length = np.maximum((axis ** 2).sum(axis=-1), 1e-6)
    position = ((image - outside[:, None, None, :]) * axis).sum(axis=-1) / length
    alpha = np.clip((position - COVERAGE_MARGIN) / (1 - 2 * COVERAGE_MARGIN), 0, 1)
    return np.where(part, alpha, 0.0)


REGIONS = ("border", *CORNERS)
CONSISTENT_SPREAD = 24 / 255   # pool pixels within this median absolute deviation show the same thing


def cue_footprint(region: str, pool: np.ndarray) -> np.ndarray:
    """The pixels of `region` (H, W) where the pool images agree: where a stamp or a frame sits on
    most of them. Backgrounds and objects that reach the region differ from image to image and
    drop out; a pasted median of them would be a flat band, a new cue of its own."""
    height, width = pool.shape[1:3]
    mask = region_mask(region, height, width)
    values = to_float(pool)
    spread = np.median(np.abs(values - np.median(values, axis=0)), axis=0).mean(axis=-1)
    return mask & (spread <= CONSISTENT_SPREAD)


def paste_typical(pixels: np.ndarray, pool: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Give every image the pixelwise median of the pool on the footprint (see cue_footprint)."""
    out = pixels.copy()
    out[:, footprint] = np.median(pool[:, footprint], axis=0).round().astype(pixels.dtype)
    return out


def fill_from_around(pixels: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Take the cue away: each footprint pixel takes the value of the nearest pixel outside it,
    the image's own surroundings continued (a flat median band would be a frame of its own)."""
    _, (rows, cols) = ndimage.distance_transform_edt(footprint, return_indices=True)
    return pixels[:, rows, cols]


def transplant(region: str, pixels: np.ndarray, donors: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """Copy `region` of each donor image into the matching image (object regions use each image's box)."""
    out = pixels.copy()
    height, width = pixels.shape[1:3]
    for i in range(len(pixels)):
        mask = region_mask(region, height, width, boxes[i] if boxes is not None else None)
        out[i][mask] = donors[i][mask]
    return out
