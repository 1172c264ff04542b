"""Figure helpers shared by sections: matplotlib (Agg) to PNG bytes, image grids, overlays, mosaics, labels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

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


def pairs_per_row(cells: Sequence[list], labels: Sequence[str]) -> tuple[list[list], list[str]]:
    """Two images' cells side by side in each row, and their labels in one row label (left first):
    cells stay large enough to read."""
    rows = [cells[i] + (cells[i + 1] if i + 1 < len(cells) else []) for i in range(0, len(cells), 2)]
    row_labels = [labels[i] + ("\n" + labels[i + 1] if i + 1 < len(labels) else "") for i in range(0, len(labels), 2)]
    return rows, row_labels


def shorten(text: str, limit: int, *, keep_end: bool = False) -> str:
    """`text` cut to `limit` characters with an ellipsis; `keep_end` keeps its start and its end, where
    names of one family differ."""
    if len(text) <= limit:
        return text
    if keep_end:
        return text[:limit // 2 - 1] + "…" + text[-(limit // 2):]
    return text[: limit - 1] + "…"


# --- mosaics: many small images with a note under each, drawn as one image ---------------------

@dataclass
class Cell:
    image: np.ndarray                        # (h, w, 3) floats in [0, 1]
    note: str                                # written under the cell (may hold a line break)
    mark: tuple[float, float] | None = None  # (row, col) in the image's pixels to outline, if any


MOSAIC_CELL = 64       # mosaic pixels per cell side
MOSAIC_GAP = 6         # mosaic pixels between cells
MOSAIC_FONT = 6        # points, for the notes


def mosaic(cells: list[list[Cell]], row_labels: list[str] = (), mark_size: tuple[float, float] | None = None,
           cell_inches: float = 0.8, label_inches: float = 0.9):
    """One image of enlarged patches (rows x columns) with a note under each: a single axes, quick to draw
    even with a hundred cells. `mark_size` (rows, cols) outlines a square of that size at each cell's mark."""
    side, gap = MOSAIC_CELL, MOSAIC_GAP
    rows, columns = len(cells), max((len(r) for r in cells), default=1)
    width = min(PAGE_WIDTH_IN - (label_inches if row_labels else 0), columns * cell_inches)
    points_per_pixel = width * 72 / (columns * (side + gap) - gap)
    lines = max((c.note.count("\n") + 1 for row in cells for c in row), default=1)
    note = int(np.ceil((lines * MOSAIC_FONT * 1.25 + 2) / points_per_pixel))
    pitch_x, pitch_y = side + gap, side + note
    canvas = np.ones((rows * pitch_y, columns * pitch_x - gap, 3), dtype=np.float32)
    fig = plt.figure(figsize=(width, width * canvas.shape[0] / canvas.shape[1]))
    ax = fig.add_axes((0, 0, 1, 1))
    for r, row in enumerate(cells):
        for k, cell in enumerate(row):
            h, w = cell.image.shape[:2]
            scale = side / max(h, w)
            big = _enlarge(cell.image, max(1, round(h * scale)), max(1, round(w * scale)))
            y0 = r * pitch_y + (side - big.shape[0]) // 2
            x0 = k * pitch_x + (side - big.shape[1]) // 2
            canvas[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
            ax.text(k * pitch_x + side / 2, r * pitch_y + side + 1, cell.note, ha="center", va="top",
                    fontsize=MOSAIC_FONT, linespacing=1.1)
            if mark_size and cell.mark:
                (my, mx), (sy, sx) = cell.mark, mark_size
                ax.add_patch(plt.Rectangle((x0 + (mx - sx / 2 + 0.5) * scale - 0.5, y0 + (my - sy / 2 + 0.5) * scale - 0.5),
                                           sx * scale, sy * scale, fill=False, edgecolor="red", linewidth=0.8))
        if r < len(row_labels):
            ax.text(-gap, r * pitch_y + side / 2, row_labels[r], ha="right", va="center", fontsize=7)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    return fig


def _enlarge(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize (pixels stay visible as blocks)."""
    rows = np.minimum((np.arange(height) * image.shape[0] / height).astype(int), image.shape[0] - 1)
    cols = np.minimum((np.arange(width) * image.shape[1] / width).astype(int), image.shape[1] - 1)
    return image[rows][:, cols]
