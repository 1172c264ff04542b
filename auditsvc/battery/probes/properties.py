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


def _sharpness(grey: np.ndarray) -> np.ndarray:
    laplacian = np.stack([ndimage.laplace(g) for g in grey])
    return np.log1p(1e4 * laplacian[:, 1:-1, 1:-1].var(axis=(1, 2)))


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
    *_, diagonal, _ = _haar_blocks(grey, _everywhere(grey))
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


def _border_and_ring(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The image's border band and the ring just inside it, as (H, W) masks."""
    band = max(1, round(BORDER_FRACTION * min(height, width)))
    border = np.zeros((height, width), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    ring = np.zeros_like(border)
    ring[band:3 * band, band:-band], ring[-3 * band:-band, band:-band] = True, True
    ring[band:-band, band:3 * band], ring[band:-band, -3 * band:-band] = True, True
    return border, ring


def _border_distinctness(rgb: np.ndarray) -> np.ndarray:
    return _ring_distance(rgb, *_border_and_ring(*rgb.shape[1:3]))


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
    "red": lambda rgb, grey: _masked_channel(rgb, _everywhere(grey), 0, False),
    "green": lambda rgb, grey: _masked_channel(rgb, _everywhere(grey), 1, False),
    "blue": lambda rgb, grey: _masked_channel(rgb, _everywhere(grey), 2, False),
    "red_share": lambda rgb, grey: _masked_channel(rgb, _everywhere(grey), 0, True),
    "green_share": lambda rgb, grey: _masked_channel(rgb, _everywhere(grey), 1, True),
    "blue_share": lambda rgb, grey: _masked_channel(rgb, _everywhere(grey), 2, True),
    "hue": lambda rgb, grey: _masked_hue_saturation(rgb, _everywhere(grey))[0],
    "saturation": lambda rgb, grey: _masked_hue_saturation(rgb, _everywhere(grey))[1],
    "sharpness": lambda rgb, grey: _sharpness(grey),
    "entropy": lambda rgb, grey: np.array([_entropy(g) for g in grey]),
    "high_frequency": lambda rgb, grey: _high_frequency(grey),
    "noise": lambda rgb, grey: _noise_sigma(grey),
    "blockiness": lambda rgb, grey: _blockiness(grey),
    "border": lambda rgb, grey: _border_distinctness(rgb),
    **{name: _corner(name) for name in ("corner_top_left", "corner_top_right", "corner_bottom_left",
                                       "corner_bottom_right")},
}


# --- away from the object --------------------------------------------------------------------
# The same properties measured only on the pixels a mask keeps (the surroundings of the object).
# A property that predicts the labels on the whole image but not away from the object is the
# object itself (its colour, its edges), not a bias of the probe set. Frequency properties are
# read from 2x2 Haar blocks that lie wholly inside the mask, so the mask's own edge adds nothing.

def measure_away(pixels: np.ndarray, keep: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """uint8 (n, H, W, C) and bool (n, H, W) -> {property: (n,) float64}, NaN where too little is kept."""
    image = pixels.astype(np.float64) / 255.0
    rgb = image if image.shape[3] == 3 else np.repeat(image, 3, axis=3)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    colour = pixels.shape[3] == 3
    weights = keep.astype(np.float64)
    out = {}
    for name in names or [p.name for p in PROPERTIES]:
        if not colour and BY_NAME[name].cue in ("colour", "saturation", "channel"):
            out[name] = np.zeros(len(pixels))
        else:
            out[name] = _MASKED[name](rgb, grey, weights)
    return out


def _everywhere(grey: np.ndarray) -> np.ndarray:
    """Weights that keep every pixel: the whole-image measure is the masked one over all of it."""
    return np.ones(grey.shape)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over each image's kept pixels: values (n, H, W[, C]), weights (n, H, W)."""
    if values.ndim == 4:
        weights = weights[..., None]
    total = weights.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (values * weights).sum(axis=(1, 2)) / np.maximum(total, 1e-12), np.nan)


def _region(name: str, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    third_h, third_w = max(1, height // 3), max(1, width // 3)
    if name == "top":
        mask[:third_h] = True
    elif name == "bottom":
        mask[-third_h:] = True
    elif name == "left":
        mask[:, :third_w] = True
    elif name == "right":
        mask[:, -third_w:] = True
    return mask


def _masked_band(grey: np.ndarray, weights: np.ndarray, side: str) -> np.ndarray:
    return _weighted_mean(grey, weights * _region(side, *grey.shape[1:]))


def _masked_contrast(grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mean = _weighted_mean(grey, weights)
    return np.sqrt(np.maximum(_weighted_mean(grey**2, weights) - mean**2, 0))


def _masked_channel(rgb: np.ndarray, weights: np.ndarray, index: int, share: bool) -> np.ndarray:
    means = _weighted_mean(rgb, weights)
    return means[:, index] / (means.sum(axis=1) + 1e-6) if share else means[:, index]


def _masked_hue_saturation(rgb: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    high, low = rgb.max(axis=3), rgb.min(axis=3)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Hue as an angle from the opponent-colour axes; averaged as a vector weighted by chroma.
    weight = (chroma + 1e-9) * weights
    alpha, beta = r - 0.5 * (g + b), np.sqrt(3) / 2 * (g - b)
    angle = np.arctan2((beta * weight).sum(axis=(1, 2)), (alpha * weight).sum(axis=(1, 2)))
    return np.degrees(angle) % 360, _weighted_mean(saturation, weights)


def _masked_sharpness(grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
    # A Laplacian reads a 3x3 neighbourhood: keep only pixels whose whole neighbourhood is kept.
    inner = np.stack([ndimage.binary_erosion(w > 0, border_value=0) for w in weights]).astype(np.float64)
    laplacian = np.stack([ndimage.laplace(g) for g in grey])
    mean = _weighted_mean(laplacian, inner)
    variance = _weighted_mean(laplacian**2, inner) - mean**2
    return np.log1p(1e4 * np.maximum(variance, 0))


def _masked_entropy(grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.array([_entropy(g[w > 0]) if (w > 0).any() else np.nan for g, w in zip(grey, weights)])


def _haar_blocks(grey: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """The finest Haar coefficients (mean, horizontal, vertical, diagonal) and whether each block is kept."""
    height, width = grey.shape[1] // 2 * 2, grey.shape[2] // 2 * 2
    a, b = grey[:, 0:height:2, 0:width:2], grey[:, 0:height:2, 1:width:2]
    c, d = grey[:, 1:height:2, 0:width:2], grey[:, 1:height:2, 1:width:2]
    w = weights[:, :height, :width]
    kept = (w[:, 0::2, 0::2] * w[:, 0::2, 1::2] * w[:, 1::2, 0::2] * w[:, 1::2, 1::2]) > 0
    return (a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2, kept


def _masked_noise(grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
    *_, diagonal, kept = _haar_blocks(grey, weights)
    return np.array([np.median(np.abs(d[k])) / 0.6745 if k.any() else np.nan for d, k in zip(diagonal, kept)])


def _masked_high_frequency(grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Share of the kept blocks' variance that sits in the finest detail coefficients."""
    mean, horizontal, vertical, diagonal, kept = _haar_blocks(grey, weights)
    detail = horizontal**2 + vertical**2 + diagonal**2
    out = []
    for m, e, k in zip(mean, detail, kept):
        if k.sum() < 2:
            out.append(np.nan)
            continue
        coarse = m[k].var() * 4          # the block means' spread, on the same scale as 4 pixels
        out.append(e[k].mean() / (e[k].mean() + coarse + 1e-12))
    return np.array(out)


def _masked_blockiness(grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
    scores = []
    for g, w in zip(grey, weights > 0):
        dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
        kx, ky = w[:, 1:] & w[:, :-1], w[1:] & w[:-1]
        at_x = ((np.arange(dx.shape[1]) % 8) == 7)[None, :] & kx
        at_y = ((np.arange(dy.shape[0]) % 8) == 7)[:, None] & ky
        off_x, off_y = kx & ~at_x, ky & ~at_y
        if not (at_x.any() and at_y.any() and off_x.any() and off_y.any()):
            scores.append(np.nan)
            continue
        on = dx[at_x].mean() + dy[at_y].mean()
        scores.append(on / (dx[off_x].mean() + dy[off_y].mean() + 1e-6))
    return np.array(scores)


def _masked_ring_distance(rgb: np.ndarray, weights: np.ndarray, inner: np.ndarray, ring: np.ndarray) -> np.ndarray:
    inside, around = weights * inner, weights * ring
    colour = np.linalg.norm(_weighted_mean(rgb, inside) - _weighted_mean(rgb, around), axis=1)
    spread_in = np.sqrt(np.maximum(_weighted_mean(rgb**2, inside) - _weighted_mean(rgb, inside) ** 2, 0)).mean(axis=1)
    spread_around = np.sqrt(np.maximum(_weighted_mean(rgb**2, around) - _weighted_mean(rgb, around) ** 2, 0)).mean(axis=1)
    return colour + np.abs(spread_in - spread_around)


def _masked_border(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _masked_ring_distance(rgb, weights, *_border_and_ring(*rgb.shape[1:3]))


def _masked_corner(name: str):
    def measure_corner(rgb: np.ndarray, grey: np.ndarray, weights: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[1:3]
        ch, cw = max(2, round(CORNER_FRACTION * height)), max(2, round(CORNER_FRACTION * width))
        rows = slice(0, ch) if "top" in name else slice(height - ch, height)
        cols = slice(0, cw) if "left" in name else slice(width - cw, width)
        inner = np.zeros((height, width), bool)
        inner[rows, cols] = True
        grown = ndimage.binary_dilation(inner, iterations=max(1, ch // 2))
        return _masked_ring_distance(rgb, weights, inner, grown & ~inner)
    return measure_corner


_MASKED = {
    "brightness": lambda rgb, grey, w: _weighted_mean(grey, w),
    **{f"{side}_brightness": (lambda side: lambda rgb, grey, w: _masked_band(grey, w, side))(side)
       for side in ("top", "bottom", "left", "right")},
    "contrast": lambda rgb, grey, w: _masked_contrast(grey, w),
    "red": lambda rgb, grey, w: _masked_channel(rgb, w, 0, False),
    "green": lambda rgb, grey, w: _masked_channel(rgb, w, 1, False),
    "blue": lambda rgb, grey, w: _masked_channel(rgb, w, 2, False),
    "red_share": lambda rgb, grey, w: _masked_channel(rgb, w, 0, True),
    "green_share": lambda rgb, grey, w: _masked_channel(rgb, w, 1, True),
    "blue_share": lambda rgb, grey, w: _masked_channel(rgb, w, 2, True),
    "hue": lambda rgb, grey, w: _masked_hue_saturation(rgb, w)[0],
    "saturation": lambda rgb, grey, w: _masked_hue_saturation(rgb, w)[1],
    "sharpness": lambda rgb, grey, w: _masked_sharpness(grey, w),
    "entropy": lambda rgb, grey, w: _masked_entropy(grey, w),
    "high_frequency": lambda rgb, grey, w: _masked_high_frequency(grey, w),
    "noise": lambda rgb, grey, w: _masked_noise(grey, w),
    "blockiness": lambda rgb, grey, w: _masked_blockiness(grey, w),
    "border": lambda rgb, grey, w: _masked_border(rgb, w),
    **{name: _masked_corner(name) for name in ("corner_top_left", "corner_top_right", "corner_bottom_left",
                                               "corner_bottom_right")},
}
