"""Measurable image properties that could carry a shortcut cue.

Each property is a number per image, computed on the image as the model sees it (resized
to the model input), so a cue the resize destroys is not reported. Every property belongs
to a cue family, the plain-words name a finding uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Property:
    name: str
    cue: str          # cue family: brightness, colour, contrast, sharpness, noise, ...
    words: str        # how a reviewer reads it: "the brightness of the top of the image"


PROPERTIES = [
    Property("brightness", "brightness", "the overall brightness"),
    Property("top_brightness", "brightness", "the brightness of the top of the image (where a sky would be)"),
    Property("bottom_brightness", "brightness", "the brightness of the bottom of the image"),
    Property("left_brightness", "brightness", "the brightness of the left side"),
    Property("right_brightness", "brightness", "the brightness of the right side"),
    Property("contrast", "contrast", "the contrast (spread of brightness)"),
    # Absolute channel levels move with brightness and with colour casts alike, so they name
    # neither cue; they are measured and shown, and left out of the verdict (cue "channel").
    Property("red", "channel", "the amount of red"),
    Property("green", "channel", "the amount of green"),
    Property("blue", "channel", "the amount of blue"),
    Property("red_share", "colour", "the colour balance towards red"),
    Property("green_share", "colour", "the colour balance towards green"),
    Property("blue_share", "colour", "the colour balance towards blue"),
    Property("hue", "colour", "the dominant hue"),
    Property("saturation", "saturation", "the colour saturation"),
    Property("sharpness", "sharpness", "the sharpness (how blurred the image is)"),
    Property("entropy", "texture", "the amount of detail (brightness entropy)"),
    Property("high_frequency", "sharpness", "the fine detail (high-frequency energy)"),
    Property("noise", "noise", "the pixel noise level"),
    Property("blockiness", "compression", "JPEG-style compression artefacts (8x8 blocks)"),
    Property("border", "border", "the image border (how it differs from the inside)"),
    Property("corner_top_left", "corner", "something in the top-left corner"),
    Property("corner_top_right", "corner", "something in the top-right corner"),
    Property("corner_bottom_left", "corner", "something in the bottom-left corner"),
    Property("corner_bottom_right", "corner", "something in the bottom-right corner"),
]
BY_NAME = {p.name: p for p in PROPERTIES}
CORNER_FRACTION = 0.15
BORDER_FRACTION = 0.06


def measure(pixels: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """uint8 (n, H, W, C) -> {property name: (n,) float64}, for all properties or the named ones."""
    image = pixels.astype(np.float64) / 255.0
    rgb = image if image.shape[3] == 3 else np.repeat(image, 3, axis=3)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    colour = pixels.shape[3] == 3
    out = {}
    for name in names or [p.name for p in PROPERTIES]:
        if not colour and BY_NAME[name].cue in ("colour", "saturation", "channel"):
            out[name] = np.zeros(len(pixels))  # grey images carry no colour cue
        else:
            out[name] = _MEASURES[name](rgb, grey)
    return out


def _band(grey: np.ndarray, side: str) -> np.ndarray:
    height, width = grey.shape[1:]
    third_h, third_w = max(1, height // 3), max(1, width // 3)
    region = {"top": grey[:, :third_h], "bottom": grey[:, -third_h:],
              "left": grey[:, :, :third_w], "right": grey[:, :, -third_w:]}[side]
    return region.mean(axis=(1, 2))


def _channel(rgb: np.ndarray, index: int, share: bool) -> np.ndarray:
    means = rgb.mean(axis=(1, 2))
    return means[:, index] / (means.sum(axis=1) + 1e-6) if share else means[:, index]


def _sharpness(grey: np.ndarray) -> np.ndarray:
    laplacian = np.stack([ndimage.laplace(g) for g in grey])
    return np.log1p(1e4 * laplacian[:, 1:-1, 1:-1].var(axis=(1, 2)))


def _hue_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    high, low = rgb.max(axis=3), rgb.min(axis=3)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Hue as an angle from the opponent-colour axes; averaged as a vector weighted by chroma.
    alpha = r - 0.5 * (g + b)
    beta = np.sqrt(3) / 2 * (g - b)
    weight = chroma + 1e-9
    angle = np.arctan2((beta * weight).sum(axis=(1, 2)), (alpha * weight).sum(axis=(1, 2)))
    return np.degrees(angle) % 360, saturation.mean(axis=(1, 2))


def _entropy(grey: np.ndarray) -> float:
    counts = np.bincount(np.clip((grey * 63).astype(int), 0, 63).ravel(), minlength=64)
    share = counts[counts > 0] / counts.sum()
    return float(-(share * np.log2(share)).sum())


def _high_frequency(grey: np.ndarray) -> np.ndarray:
    spectrum = np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2
    fy = np.fft.fftfreq(grey.shape[1])[:, None]
    fx = np.fft.fftfreq(grey.shape[2])[None, :]
    high = np.sqrt(fx**2 + fy**2) > 0.25  # above half the Nyquist frequency
    return spectrum[:, high].sum(axis=1) / (spectrum.sum(axis=(1, 2)) + 1e-12)


def _noise_sigma(grey: np.ndarray) -> np.ndarray:
    """Noise from the finest diagonal wavelet band (Haar), by its median absolute deviation (Donoho
    and Johnstone 1994). An object's edges touch few of these coefficients, so the median reads the
    sensor noise and not the object; a high-pass energy would read the edges."""
    height, width = grey.shape[1] // 2 * 2, grey.shape[2] // 2 * 2
    even = grey[:, :height, :width]
    diagonal = (even[:, 0::2, 0::2] - even[:, 0::2, 1::2] - even[:, 1::2, 0::2] + even[:, 1::2, 1::2]) / 2
    return np.median(np.abs(diagonal), axis=(1, 2)) / 0.6745


def _blockiness(grey: np.ndarray) -> np.ndarray:
    """Mean jump across 8-pixel block edges over the mean jump elsewhere (1 = no blocks)."""
    scores = []
    for g in grey:
        dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
        at_x, at_y = (np.arange(dx.shape[1]) % 8) == 7, (np.arange(dy.shape[0]) % 8) == 7
        on = dx[:, at_x].mean() + dy[at_y].mean() if at_x.any() and at_y.any() else 0.0
        off = dx[:, ~at_x].mean() + dy[~at_y].mean()
        scores.append(on / (off + 1e-6))
    return np.array(scores)


def _ring_distance(rgb: np.ndarray, inner: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Colour distance between the mean of an inner region and of the ring around it, plus texture difference."""
    inside = rgb[:, inner]
    around = rgb[:, ring]
    colour = np.linalg.norm(inside.mean(axis=1) - around.mean(axis=1), axis=1)
    texture = np.abs(inside.std(axis=1).mean(axis=1) - around.std(axis=1).mean(axis=1))
    return colour + texture


def _border_distinctness(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[1:3]
    band = max(1, round(BORDER_FRACTION * min(height, width)))
    border = np.zeros((height, width), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    ring = np.zeros_like(border)
    ring[band:3 * band, band:-band], ring[-3 * band:-band, band:-band] = True, True
    ring[band:-band, band:3 * band], ring[band:-band, -3 * band:-band] = True, True
    return _ring_distance(rgb, border, ring)


def _corner_distinctness(rgb: np.ndarray) -> dict[str, np.ndarray]:
    height, width = rgb.shape[1:3]
    ch, cw = max(2, round(CORNER_FRACTION * height)), max(2, round(CORNER_FRACTION * width))
    out = {}
    for name, rows, cols in (("corner_top_left", slice(0, ch), slice(0, cw)),
                             ("corner_top_right", slice(0, ch), slice(width - cw, width)),
                             ("corner_bottom_left", slice(height - ch, height), slice(0, cw)),
                             ("corner_bottom_right", slice(height - ch, height), slice(width - cw, width))):
        inner = np.zeros((height, width), bool)
        inner[rows, cols] = True
        grown = ndimage.binary_dilation(inner, iterations=max(1, ch // 2))
        out[name] = _ring_distance(rgb, inner, grown & ~inner)
    return out


def _corner(name: str):
    return lambda rgb, grey: _corner_distinctness(rgb)[name]


_MEASURES = {
    "brightness": lambda rgb, grey: grey.mean(axis=(1, 2)),
    "top_brightness": lambda rgb, grey: _band(grey, "top"),
    "bottom_brightness": lambda rgb, grey: _band(grey, "bottom"),
    "left_brightness": lambda rgb, grey: _band(grey, "left"),
    "right_brightness": lambda rgb, grey: _band(grey, "right"),
    "contrast": lambda rgb, grey: grey.std(axis=(1, 2)),
    "red": lambda rgb, grey: _channel(rgb, 0, False),
    "green": lambda rgb, grey: _channel(rgb, 1, False),
    "blue": lambda rgb, grey: _channel(rgb, 2, False),
    "red_share": lambda rgb, grey: _channel(rgb, 0, True),
    "green_share": lambda rgb, grey: _channel(rgb, 1, True),
    "blue_share": lambda rgb, grey: _channel(rgb, 2, True),
    "hue": lambda rgb, grey: _hue_saturation(rgb)[0],
    "saturation": lambda rgb, grey: _hue_saturation(rgb)[1],
    "sharpness": lambda rgb, grey: _sharpness(grey),
    "entropy": lambda rgb, grey: np.array([_entropy(g) for g in grey]),
    "high_frequency": lambda rgb, grey: _high_frequency(grey),
    "noise": lambda rgb, grey: _noise_sigma(grey),
    "blockiness": lambda rgb, grey: _blockiness(grey),
    "border": lambda rgb, grey: _border_distinctness(rgb),
    **{name: _corner(name) for name in ("corner_top_left", "corner_top_right", "corner_bottom_left",
                                       "corner_bottom_right")},
}
