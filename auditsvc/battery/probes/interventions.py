"""Counterfactual interventions: change one property of an image and nothing the label depends on.

Strength comes from the probe set and the model's own predictions (evidence.matched_dose): an
intervention moves each treated image's property to its median among the images predicted as
the class that carries most (or least) of it, so the change is as large as the difference the
model's answers already draw, and stays within the images it is audited on. A statistics
intervention gives each treated image the colour or light statistics of one such image; a region
intervention pastes the typical border or corner of the images where that region stands out most.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from . import properties

Transform = Callable[[np.ndarray, float], np.ndarray]  # float (n, H, W, C) in [0, 1], strength -> same


@dataclass(frozen=True)
class Intervention:
    name: str
    cue: str                 # cue family it tests (see properties.Property.cue)
    words: str               # what it does, for the report
    property: str | None     # the property it moves; None for harmless and box interventions
    direction: str           # "up", "down", "swap" (donors from the high end), "swap_down" (from the low end), "none"
    ladder: tuple[float, ...] = ()
    transform: Transform | None = None
    region: str | None = None   # donor interventions: "border", "corner_top_left", ..., "background", "object",
    #                             or "chroma" / "luminance" (the donor's colour / light statistics, not its pixels)
    harmless: bool = False
    decides: bool = True        # False: a synthetic change shown as a sensitivity, never as evidence of a cue


def _gain(x, s):
    return x * s


def _gamma(x, s):
    return np.clip(x, 0, 1) ** s


def _contrast(x, s):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * s + mean


def _saturation(x, s):
    grey = x.mean(axis=3, keepdims=True)
    return grey + (x - grey) * s


def _channel_gain(channel: int) -> Transform:
    def apply(x, s):
        out = x.copy()
        out[..., channel] *= s
        return out
    return apply


def _blur(x, s):
    return ndimage.gaussian_filter(x, sigma=(0, s, s, 0))


def _sharpen(x, s):
    return x + s * (x - ndimage.gaussian_filter(x, sigma=(0, 1.0, 1.0, 0)))


def _noise(x, s):
    rng = np.random.default_rng(int(x.sum() * 1000) % 2**32)  # reproducible for the same images
    return x + rng.normal(0, s, x.shape)


def _denoise(x, s):
    return ndimage.median_filter(x, size=(1, int(s), int(s), 1))


def _jpeg(x, quality):
    out = np.empty_like(x)
    for i, image in enumerate(x):
        array = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        grey = array.shape[2] == 1
        buffer = io.BytesIO()
        Image.fromarray(array[:, :, 0] if grey else array).save(buffer, "JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255
        out[i] = decoded[:, :, None] if grey else decoded
    return out


def _shift(x, s):
    step = int(s)
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
    Intervention("brighter", "brightness", "make brighter", "brightness", "up", UP, _gain),
    Intervention("darker", "brightness", "make darker", "brightness", "down", DOWN, _gain),
    Intervention("lighting_of_brighter", "brightness", "give the brightness and contrast of the brightest images",
                 "brightness", "swap", region="luminance"),
    Intervention("lighting_of_darker", "brightness", "give the brightness and contrast of the darkest images",
                 "brightness", "swap_down", region="luminance"),
    # Gamma curves change tonal relations no camera exposure would: a sensitivity, not evidence.
    Intervention("gamma_brighter", "brightness", "brighten the mid-tones (gamma)", "brightness", "up",
                 (0.9, 0.8, 0.7, 0.6, 0.5, 0.4), _gamma, decides=False),
    Intervention("gamma_darker", "brightness", "darken the mid-tones (gamma)", "brightness", "down",
                 (1.1, 1.25, 1.4, 1.6, 1.9, 2.3), _gamma, decides=False),
    Intervention("more_contrast", "contrast", "raise contrast", "contrast", "up", UP, _contrast),
    Intervention("less_contrast", "contrast", "lower contrast", "contrast", "down", DOWN, _contrast),
    Intervention("more_saturated", "saturation", "saturate colours", "saturation", "up", UP, _saturation),
    Intervention("greyer", "saturation", "desaturate towards grey", "saturation", "down",
                 (0.8, 0.6, 0.4, 0.2, 0.0), _saturation),
    # Colour casts taken from real probe images stay on the image manifold; synthetic channel
    # gains also recolour the object itself, so they only show how sensitive the model is.
    *[Intervention(f"{c}_balance_of_others", "colour", f"give the colour balance of the images with most {c}",
                   f"{c}_share", "swap", region="chroma") for c in ("red", "green", "blue")],
    *[Intervention(f"{c}_poor_balance_of_others", "colour", f"give the colour balance of the images with least {c}",
                   f"{c}_share", "swap_down", region="chroma") for c in ("red", "green", "blue")],
    *[Intervention(f"more_{c}", "colour", f"add a synthetic {c} cast", f"{c}_share", "up",
                   (1.05, 1.1, 1.2, 1.3, 1.45), _channel_gain(i), decides=False)
      for i, c in enumerate(("red", "green", "blue"))],
    Intervention("blur", "sharpness", "blur", "sharpness", "down", (0.5, 0.75, 1.0, 1.5, 2.0, 3.0), _blur),
    Intervention("sharpen", "sharpness", "sharpen", "sharpness", "up", (0.5, 1.0, 2.0, 3.0), _sharpen),
    Intervention("add_noise", "noise", "add pixel noise", "noise", "up", (0.01, 0.02, 0.04, 0.06, 0.1, 0.15), _noise),
    Intervention("denoise", "noise", "remove pixel noise (median filter)", "noise", "down", (3,), _denoise),
    Intervention("jpeg", "compression", "compress as JPEG", "blockiness", "up", (80, 60, 40, 25, 15, 8), _jpeg),
    # Compression cannot be undone; fine grain hides its blocks and smoothness, the nearest way back.
    Intervention("restore_grain", "compression", "add fine grain (hides compression)", "blockiness", "down",
                 (0.01, 0.02, 0.04, 0.06), _noise),
    Intervention("swap_border", "border", "give the typical border of the images where it stands out most", "border", "swap",
                 region="border"),
    Intervention("plain_border", "border", "give the typical border of the images where it stands out least", "border",
                 "swap_down", region="border"),
    *[Intervention(f"swap_{corner}", "corner", f"give the typical {_corner_words(corner)} corner of the images where it "
                   "stands out most", corner, "swap", region=corner) for corner in CORNERS],
    *[Intervention(f"plain_{corner}", "corner", f"give the typical {_corner_words(corner)} corner of the images where it "
                   "stands out least", corner, "swap_down", region=corner) for corner in CORNERS],
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


def apply_to_target(intervention: Intervention, pixels: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Move each image's property towards `target` with the weakest ladder step that gets there.

    Returns the changed pixels and the strength used per image (the strongest step when
    none reaches the target)."""
    base = to_float(pixels)
    chosen = to_pixels(intervention.transform(base, intervention.ladder[-1]))
    strength = np.full(len(pixels), intervention.ladder[-1])
    done = np.zeros(len(pixels), bool)
    for step in intervention.ladder:
        candidate = to_pixels(intervention.transform(base, step))
        value = properties.measure(candidate, [intervention.property])[intervention.property]
        reached = (value >= target) if intervention.direction == "up" else (value <= target)
        take = reached & ~done
        chosen[take], strength[take] = candidate[take], step
        done |= reached
        if done.all():
            break
    return chosen, strength


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


def statistics_transfer(pixels: np.ndarray, donors: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """Each image takes its donor's mean and spread on the given opponent-colour axes (Reinhard
    et al. 2001): 0 is luminance (brightness and contrast), 1 and 2 the colour balance."""
    basis = OPPONENT if pixels.shape[-1] == 3 else np.eye(pixels.shape[-1])
    image, donor = to_float(pixels) @ basis.T, to_float(donors) @ basis.T
    axes = (1, 2)
    # A grey image has only the luminance axis: there is no colour balance to transfer.
    for channel in (c for c in channels if c < basis.shape[0]):
        source, target = image[..., channel], donor[..., channel]
        mean, std = source.mean(axis=axes, keepdims=True), source.std(axis=axes, keepdims=True) + 1e-6
        image[..., channel] = (source - mean) * (target.std(axis=axes, keepdims=True) / std) \
            + target.mean(axis=axes, keepdims=True)
    return to_pixels(image @ basis)


STATISTICS = {"chroma": (1, 2), "luminance": (0,)}
REGIONS = ("border", *CORNERS)


def paste_typical(region: str, pixels: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Give every image the pixelwise median of `region` over the donor pool.

    A cue that sits in the same place on every donor (a stamp, a frame) survives the median;
    parts of objects that happen to reach the border or a corner do not, so the change does
    not smuggle in the donors' objects."""
    out = pixels.copy()
    mask = region_mask(region, *pixels.shape[1:3])
    out[:, mask] = np.median(pool[:, mask], axis=0).round().astype(pixels.dtype)
    return out


def transplant(region: str, pixels: np.ndarray, donors: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """Copy `region` of each donor image into the matching image (object regions use each image's box)."""
    out = pixels.copy()
    height, width = pixels.shape[1:3]
    for i in range(len(pixels)):
        mask = region_mask(region, height, width, boxes[i] if boxes is not None else None)
        out[i][mask] = donors[i][mask]
    return out
