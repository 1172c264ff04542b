"""Figure helpers shared by sections: matplotlib (Agg) to PNG bytes, image grids, overlays."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.text import Text  # noqa: E402

PAGE_WIDTH_IN = 7.0   # printable width of an A4 page at our margins
DPI = 130

# Figures draw user strings (class names, attribute values, layer and file names): every text is
# drawn as it is, never parsed as mathtext ("$...$") or handed to LaTeX.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}

plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                     "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.dpi": DPI, **PLAIN_TEXT})


def to_png(fig) -> bytes:
    """The figure as PNG bytes (and closed). Its texts are plain whatever the global rcParams say."""
    buffer = io.BytesIO()
    try:
        with plt.rc_context(PLAIN_TEXT):  # texts made while drawing (tick labels) read these
            for text in fig.findobj(Text):
                text.set_parse_math(False)
                text.set_usetex(False)
            fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 or float (H, W, 1|3) -> float (H, W, 3) in [0, 1]."""
    image = pixels.astype(np.float32)
    if image.max() > 1.0:
        image = image / 255.0
    if image.ndim == 2:
        image = image[:, :, None]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def normalize_map(values: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Scale a non-negative map to [0, 1], clipping the top (100 - percentile)% outliers."""
    values = np.nan_to_num(values.astype(np.float32))
    top = np.percentile(values, percentile)
    if top <= 0:
        top = values.max()
    return np.clip(values / top, 0, 1) if top > 0 else np.zeros_like(values)


def overlay(pixels: np.ndarray, heat: np.ndarray, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """A heatmap in [0, 1] blended over a greyed copy of the image, (H, W, 3) floats."""
    base = as_rgb(pixels).mean(axis=2, keepdims=True).repeat(3, axis=2)
    colours = plt.get_cmap(cmap)(np.clip(heat, 0, 1))[:, :, :3]
    weight = alpha * np.clip(heat, 0, 1)[:, :, None] ** 0.5
    return np.clip(base * (1 - weight) + colours * weight, 0, 1)


def image_grid(cells: Sequence[Sequence[np.ndarray | None]], *, row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), cell_inches: float | None = None,
               cmap: str | None = None, label_width: float = 1.0):
    """A grid of images (rows x columns); None leaves a cell blank. Returns the figure."""
    rows, cols = len(cells), max(len(r) for r in cells)
    cell = cell_inches or min(1.6, (PAGE_WIDTH_IN - (label_width if row_labels else 0)) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + (label_width if row_labels else 0), rows * cell + 0.3),
                             squeeze=False)
    for r, row in enumerate(cells):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            image = row[c] if c < len(row) else None
            if image is None:
                continue
            if image.ndim == 3 and image.shape[2] == 1:
                image = image[:, :, 0]
            ax.imshow(image, cmap=cmap if image.ndim == 2 else None, interpolation="nearest")
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c])
        if r < len(row_labels):
            axes[r][0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(wspace=0.04, hspace=0.08)
    return fig


def tile(maps: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (n, H, W) or (n, H, W, 3) maps into one mosaic with a white gap between tiles."""
    count = len(maps)
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    h, w = maps.shape[1:3]
    shape = (rows * (h + pad) - pad, columns * (w + pad) - pad) + maps.shape[3:]
    mosaic = np.ones(shape, dtype=np.float32)
    for index in range(count):
        r, c = divmod(index, columns)
        mosaic[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = maps[index]
    return mosaic
