"""Figure helpers shared by sections: matplotlib (Agg) to PNG bytes, image grids, overlays, mosaics, labels."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import LogFormatter, LogFormatterMathtext  # noqa: E402

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
        _plain_log_ticks(fig)
        with plt.rc_context(PLAIN_TEXT):  # texts made while drawing (tick labels) read these
            for text in fig.findobj(Text):
                text.set_parse_math(False)
                text.set_usetex(False)
            fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    finally:
        plt.close(fig)
    return buffer.getvalue()


class PlainLogFormatter(LogFormatter):
    """The ticks a log axis labels, labelled as plain numbers (0.02): its default labels are mathtext
    ($10^{-2}$), which figures never parse."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _plain_log_ticks(fig) -> None:
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), LogFormatterMathtext):
                axis.set_major_formatter(PlainLogFormatter())
            if isinstance(axis.get_minor_formatter(), LogFormatterMathtext):
                axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


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


@dataclass
class Panel:
    """One cell of an image grid: an image, or in its place a note that says in words why there is none
    (a map that is the same everywhere would draw as a uniform square); a title above it; the object's
    box outlined on it."""
    image: np.ndarray | None = None
    note: str = ""
    title: str = ""
    box: Sequence[float] | None = None      # x0, y0, x1, y1 in the image's pixels; None or NaN: no box


@dataclass(frozen=True)
class ColourScale:
    """What the colours of a grid's heatmaps stand for, drawn as a colour bar beside the grid. A 2-D image
    in the grid is drawn through it; an RGB one (a heatmap blended over the photo) is drawn as it is."""
    cmap: str
    label: str
    low: float = 0.0
    high: float = 1.0

    def mappable(self) -> ScalarMappable:
        return ScalarMappable(Normalize(self.low, self.high), plt.get_cmap(self.cmap))


TITLE_FONT = 6.5          # points, the titles above single panels
TITLE_LINE_INCHES = 0.12
NOTE_FONT = 6.5
COLOUR_BAR_INCHES = 0.7   # room the colour bar and its label take beside a grid
COLOUR_BAR_FONT = 6.5     # a short label: one row of images makes a short bar


def image_grid(cells: Sequence[Sequence[np.ndarray | Panel | None]], *, row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), cell_inches: float | None = None, label_width: float = 1.0,
               scale: ColourScale | None = None):
    """A grid of images (rows x columns); None leaves a cell blank, a Panel adds a title, a box or a note in
    place of its image. With a `scale`, a colour bar says what the heatmaps' colours mean. Returns the figure."""
    panels = [[cell if isinstance(cell, Panel) or cell is None else Panel(cell) for cell in row] for row in cells]
    rows, cols = len(panels), max(len(r) for r in panels)
    labels = label_width if row_labels else 0
    bar = COLOUR_BAR_INCHES if scale else 0
    cell = cell_inches or min(1.6, (PAGE_WIDTH_IN - labels - bar) / cols)
    lines = max([p.title.count("\n") + 1 for row in panels for p in row if p and p.title], default=0)
    titles = lines * TITLE_LINE_INCHES
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + labels + bar, rows * (cell + titles) + 0.3),
                             squeeze=False)
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c])
            panel = row[c] if c < len(row) else None
            if panel is not None:
                _draw_panel(ax, panel, scale, cell)
        if r < len(row_labels):
            axes[r][0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(wspace=0.04, hspace=0.08 + titles / cell)
    if scale:
        add_colour_bar(fig, axes.ravel().tolist(), scale)
    return fig


def add_colour_bar(fig, axes, scale: ColourScale):
    """A colour bar beside `axes` (one or a list) for `scale`."""
    bar = fig.colorbar(scale.mappable(), ax=axes, fraction=0.04, pad=0.02, shrink=0.9, aspect=25)
    bar.set_label(scale.label, fontsize=COLOUR_BAR_FONT)
    bar.ax.tick_params(labelsize=COLOUR_BAR_FONT)
    return bar


def _draw_panel(ax, panel: Panel, scale: ColourScale | None, inches: float) -> None:
    if panel.title:
        title = ax.get_title()
        ax.set_title(f"{title}\n{panel.title}" if title else panel.title, fontsize=TITLE_FONT)
    if panel.image is None:
        _draw_note(ax, panel.note, inches)
        return
    image = panel.image[:, :, 0] if panel.image.ndim == 3 and panel.image.shape[2] == 1 else panel.image
    if image.ndim == 2 and scale:
        ax.imshow(image, cmap=scale.cmap, vmin=scale.low, vmax=scale.high, interpolation="nearest")
    else:
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    outline(ax, panel.box)


def _draw_note(ax, note: str, inches: float) -> None:
    """Words in a light frame where an image would show nothing."""
    ax.set_box_aspect(1)
    ax.set_facecolor("#f4f4f4")
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#bbbbbb")
    width = max(8, int(0.85 * inches * 72 / (NOTE_FONT * 0.6)))   # characters a line
    wrapped = "\n".join(textwrap.fill(line, width) for line in note.split("\n"))
    ax.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize=NOTE_FONT, color="#333333",
            transform=ax.transAxes, linespacing=1.15)


def outline(ax, box: Sequence[float] | None) -> None:
    """The object's box (x0, y0, x1, y1 in image pixels) drawn on an image: white with a dark edge, to
    stand out on any heatmap. Nothing when there is no box (None or NaN)."""
    if box is None or np.isnan(np.asarray(box, dtype=float)).any():
        return
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=0.8,
                           path_effects=[patheffects.withStroke(linewidth=1.8, foreground="black")]))


def heat_panel(values: np.ndarray, *, pixels: np.ndarray | None = None, cmap: str = "jet", percentile: float = 99.0,
               box: Sequence[float] | None = None) -> Panel:
    """A heatmap scaled to its `percentile` (blended over the image when `pixels` are given), or, when it
    would draw as a uniform square, a note saying what the map holds."""
    heat = normalize_map(values, percentile)
    if np.ptp(heat) == 0:
        return Panel(note=flat_words(values))
    image = overlay(pixels, heat, cmap) if pixels is not None else plt.get_cmap(cmap)(heat)[:, :, :3]
    return Panel(image, box=box)


def panel_legend(cells: Sequence[Sequence[np.ndarray | Panel | None]],
                 note_words: str = "the map is the same everywhere and would draw as a uniform square") -> str:
    """Caption sentences for what a grid's panels show beyond images: object boxes, words in place of a map."""
    panels = [cell for row in cells for cell in row if isinstance(cell, Panel)]
    sentences = []
    if any(p.box is not None and not np.isnan(np.asarray(p.box, dtype=float)).any() for p in panels):
        sentences.append("White boxes: the object's box from the probe set's manifest.")
    if any(p.image is None for p in panels):
        sentences.append(f"Words in place of a map: {note_words}.")
    return " ".join(sentences)


def flat_words(values: np.ndarray) -> str:
    """What a map with nothing to draw holds, in words."""
    values = np.nan_to_num(values.astype(np.float64))
    if not values.any():
        return "zero everywhere: nothing to show"
    if np.ptp(values) == 0:
        return f"the same everywhere ({values.max():.2g}): nothing to show"
    return "no positive value: nothing to show"


def filter_grid(weights: np.ndarray, channel_names: Sequence[str], per_row: int):
    """Convolution filters (n, C, kh, kw) as enlarged blocks of weights, each filter's input channels side by
    side, drawn pixel by pixel on one colour scale symmetric about zero that all share, with a colour bar."""
    limit = float(np.abs(weights).max()) or 1.0
    scale = ColourScale("RdBu_r", "weight", -limit, limit)
    blocks = [_weight_block(planes) for planes in weights]
    rows, inches = -(-len(blocks) // per_row), (PAGE_WIDTH_IN - COLOUR_BAR_INCHES) / per_row
    block_height = inches * blocks[0].shape[0] / blocks[0].shape[1]
    labels = (2 if any(channel_names) else 1) * TITLE_LINE_INCHES + 0.08   # title above, channel names under
    fig, axes = plt.subplots(rows, per_row, figsize=(PAGE_WIDTH_IN, rows * (block_height + labels)), squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        if index < len(blocks):
            _draw_filter(ax, blocks[index], f"filter {index}", channel_names, weights.shape[3], scale)
        else:
            ax.set_axis_off()
    fig.subplots_adjust(wspace=0.15, hspace=labels / block_height)
    add_colour_bar(fig, axes.ravel().tolist(), scale)
    return fig


def _weight_block(planes: np.ndarray) -> np.ndarray:
    """A filter's planes (C, kh, kw) side by side, each framed by a line of NaN (drawn grey, so that a zero,
    white, weight still shows)."""
    gap = np.full((planes.shape[1], 1), np.nan)
    return np.pad(np.hstack([part for plane in planes for part in (gap, plane)][1:]), 1, constant_values=np.nan)


def _draw_filter(ax, block: np.ndarray, title: str, channel_names: Sequence[str], width: int,
                 scale: ColourScale) -> None:
    colours = plt.get_cmap(scale.cmap).with_extremes(bad="#c8c8c8")
    ax.imshow(np.ma.masked_invalid(block), cmap=colours, vmin=scale.low, vmax=scale.high, interpolation="nearest")
    ax.set_title(title, fontsize=TITLE_FONT, pad=2)
    ax.set_xticks([1 + k * (width + 1) + (width - 1) / 2 for k in range(len(channel_names))], channel_names,
                  fontsize=TITLE_FONT)
    ax.set_yticks([])
    ax.tick_params(length=0, pad=1)
    for spine in ax.spines.values():
        spine.set_visible(False)


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
