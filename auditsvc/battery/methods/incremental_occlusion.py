"""Exact incremental occlusion (Krypton: Nakandala et al., "Incremental and Approximate Inference for
Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019).

Greying out one window of the image changes only a small part of each early layer's map: the
projective field of the window. The unoccluded images run once through the fast graph with every
node's output kept; then, for a batch of window positions, each node recomputes only the rectangle
of its map the window can have changed and leaves the rest to the kept output:

- a convolution or pooling maps the changed rows [a, b) of its input to the output rows
  [ceil((a + p - d(k - 1)) / s), floor((b - 1 + p) / s) + 1), clipped to the map, and reads them from a
  slice of its patched input with its halo (the padding written in where the slice leaves the map);
- elementwise ops, BatchNorm, LayerNorm and Linear over the channels act on the rectangle; add, mul
  and cat of two maps take the union of their rectangles;
- layout ops that move channels but not pixels (a channel shuffle's view/transpose/view, permutes to
  channels-last, split, chunk) keep the rectangle.

Every window's rectangle at a node has the same size (the largest, moved inside the map at the
borders, where a window's own is smaller), so all windows and images of a batch go through each op in
one call. Where a rectangle cannot be bounded (global pooling, flatten, a gate computed from the whole
map, an op not listed here) or covers most of the map, that node and everything after it runs in
full on the patched maps. The plan of rectangles depends only on the shapes, so it is made once.

The result is Captum's `Occlusion` with windows spanning the channels: per pixel, the drop in the
target class probability averaged over the windows covering it; window positions every `stride`
pixels, the last one cut off by the right or bottom edge.

Krypton's two approximate modes (`Approximation`) trade exactness for speed:
- projective-field thresholding: each map's changed rectangle is cut to at most `threshold` of the
  map's side, around its centre; beyond it the unoccluded values stand in (the window's effect there
  is small, and dropping it keeps deep layers incremental);
- adaptive drill-down: the windows at every `coarse`-th position per axis run first; the other
  positions are estimated from them by bilinear interpolation, and the `drill_share` of them next to
  the largest coarse drops are computed.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from ..model.graph import ModelGraph
from ..model.layout import spatial_axes
from ..model.receptive_field import _arguments, _padding, _pair
from ..progress import SectionProgress, no_progress, shares

aten = torch.ops.aten
FULL_ABOVE = 0.5   # a node whose changed rectangle covers more of its map than this runs in full

CONVOLUTIONS = {aten.conv2d.default, aten.conv2d.padding, aten.convolution.default}
MAX_POOLS = {aten.max_pool2d.default}
AVG_POOLS = {aten.avg_pool2d.default}
# Ops whose every output element depends on the input elements at the same place (and on constants).
POINTWISE = {
    aten.relu.default, aten.hardswish.default, aten.hardsigmoid.default, aten.silu.default, aten.sigmoid.default,
    aten.tanh.default, aten.gelu.default, aten.leaky_relu.default, aten.elu.default, aten.hardtanh.default,
    aten.mish.default, aten.softplus.default, aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default,
    aten.neg.default, aten.abs.default, aten.exp.default, aten.sqrt.default, aten.rsqrt.default, aten.erf.default,
    aten.pow.Tensor_Scalar, aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar, aten.rsub.Scalar,
    aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar, aten.maximum.default,
    aten.minimum.default, aten.clone.default, aten.alias.default, aten.detach.default, aten.contiguous.default,
    aten.dropout.default,
}
CATS = {aten.cat.default, aten.concat.default}
SPLITS = {aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default}
RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
PERMUTES = {aten.permute.default, aten.transpose.int}
BATCH_NORM = aten._native_batch_norm_legit_no_training.default
ADAPTIVE_POOLS = {aten.adaptive_avg_pool2d.default, aten.adaptive_max_pool2d.default, aten._adaptive_avg_pool2d.default}
REDUCTIONS = {aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default}


@dataclass(frozen=True)
class Approximation:
    """Krypton's approximate modes; the defaults are exact."""
    threshold: float | None = None   # a changed rectangle at most this share of its map's side (None: whole)
    coarse: int = 1                  # first pass on every `coarse`-th window position per axis (1: all of them)
    drill_share: float = 1.0         # then computed: this share of the other positions, next to the largest drops

    def __post_init__(self):
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"the projective-field threshold is a share of the map's side in (0, 1], "
                             f"not {self.threshold}")
        if self.coarse < 1 or not 0 <= self.drill_share <= 1:
            raise ValueError(f"drill-down needs coarse >= 1 and a share in [0, 1], not {self.coarse}, "
                             f"{self.drill_share}")

    @property
    def drills_down(self) -> bool:
        return self.coarse > 1 and self.drill_share < 1

    @property
    def exact(self) -> bool:
        return self.threshold is None and not self.drills_down

    def describe(self) -> str:
        parts = []
        if self.threshold is not None:
            parts.append(f"projective fields cut to {self.threshold:.0%} of each map's side")
        if self.drills_down:
            parts.append(f"every {_ordinal(self.coarse)} window position per axis first, then the "
                         f"{self.drill_share:.0%} of the others next to the largest drops (the rest interpolated)")
        return "; ".join(parts) or "exact"


EXACT = Approximation()


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")


# --- geometry: which rectangle of each map a window can change ------------------------------------

@dataclass(frozen=True)
class Region:
    """Per window, the rectangle rows [top, top + height) x columns [left, left + width) of a map outside
    which its values are the unoccluded ones. The same size for every window."""
    tops: np.ndarray     # (windows,)
    lefts: np.ndarray
    height: int
    width: int
    map_size: tuple[int, int]

    @property
    def coverage(self) -> float:
        return self.height * self.width / (self.map_size[0] * self.map_size[1])

    def same_as(self, other: Region) -> bool:
        return (self.height, self.width, self.map_size) == (other.height, other.width, other.map_size) and (
            np.array_equal(self.tops, other.tops) and np.array_equal(self.lefts, other.lefts))

    def rows(self, windows: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(len(windows), height): the rows of these windows' rectangles."""
        return (torch.from_numpy(self.tops)[windows, None] + torch.arange(self.height)).to(device)

    def cols(self, windows: torch.Tensor, device: torch.device) -> torch.Tensor:
        return (torch.from_numpy(self.lefts)[windows, None] + torch.arange(self.width)).to(device)


def capped(region: Region, threshold: float) -> Region:
    """The region cut to at most `threshold` of its map's side per axis, around each rectangle's centre."""
    height = min(region.height, max(1, math.ceil(threshold * region.map_size[0])))
    width = min(region.width, max(1, math.ceil(threshold * region.map_size[1])))
    if (height, width) == (region.height, region.width):
        return region
    tops = np.clip(region.tops + (region.height - height) // 2, 0, region.map_size[0] - height)
    lefts = np.clip(region.lefts + (region.width - width) // 2, 0, region.map_size[1] - width)
    return Region(tops, lefts, height, width, region.map_size)


def _fitted(starts: np.ndarray, stops: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """One length for all the ranges [start, stop) of a map `size` long: the longest (at least 1),
    each range grown to it and moved inside the map."""
    length = int(max(1, (stops - starts).max()))
    return np.clip(starts, 0, size - length), length


def _region(tops, bottoms, lefts, rights, map_size) -> Region:
    tops, height = _fitted(tops, bottoms, map_size[0])
    lefts, width = _fitted(lefts, rights, map_size[1])
    return Region(tops, lefts, height, width, tuple(map_size))


def projective_range(starts, stops, kernel: int, stride: int, padding: int, dilation: int, out_size: int):
    """The output rows [first, last) of a convolution or pooling whose windows meet input rows [start, stop):
    output row o reads input rows o * stride - padding + dilation * j, j < kernel."""
    first = np.maximum(0, -((dilation * (kernel - 1) - np.asarray(starts) - padding) // stride))  # ceil division
    last = np.minimum(out_size, (np.asarray(stops) - 1 + padding) // stride + 1)
    return first, last


@dataclass(frozen=True)
class WindowOp:
    """A convolution or pooling over the rows and columns: kernel, stride, padding before, dilation."""
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def projected(self, changed: Region, out_size: tuple[int, int]) -> Region:
        """The output rectangle whose units' windows meet the changed input rectangle."""
        tops, bottoms = projective_range(changed.tops, changed.tops + changed.height, self.kernel[0],
                                         self.stride[0], self.padding[0], self.dilation[0], out_size[0])
        lefts, rights = projective_range(changed.lefts, changed.lefts + changed.width, self.kernel[1],
                                         self.stride[1], self.padding[1], self.dilation[1], out_size[1])
        return _region(tops, bottoms, lefts, rights, out_size)

    def reads(self, output: Region, windows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The input rows (windows, h) and columns (windows, w) the output rectangle reads; they may reach
        into the padding."""
        spans = []
        for axis, (starts, length) in enumerate(((output.tops, output.height), (output.lefts, output.width))):
            first = torch.from_numpy(starts)[windows] * self.stride[axis] - self.padding[axis]
            extent = (length - 1) * self.stride[axis] + self.dilation[axis] * (self.kernel[axis] - 1) + 1
            spans.append((first[:, None] + torch.arange(extent)).to(device))
        return spans[0], spans[1]


@dataclass
class Step:
    """How one node runs for the occluded images."""
    mode: str                        # "const": the same for every window; "size": an int; "patch"; "full"
    region: Region | None = None     # "patch": the rectangle each window can change
    kind: str = ""                   # "patch": which rule computes it (_Pass._patch_<kind>)
    window: WindowOp | None = None   # kind "window"
    fill: float = 0.0                # kind "window": the value its padding holds
    reason: str = ""                 # "full": why


class _Planner:
    """Walks the graph once, deciding for every node the rectangle each window can change, or full."""

    def __init__(self, module: fx.GraphModule, input_region: Region, full_above: float, threshold: float | None):
        self.module, self.axes, self.full_above = module, spatial_axes(module), full_above
        self.threshold = threshold
        self.input_region = input_region
        self.steps: dict[str, Step] = {}

    def run(self) -> dict[str, Step]:
        derived: set[str] = set()
        for node in self.module.graph.nodes:
            if node.op == "placeholder":
                derived.add(node.name)
                self.steps[node.name] = Step("patch", self.input_region, kind="input")
            elif node.op != "output" and any(a.name in derived for a in node.all_input_nodes):
                derived.add(node.name)
                self.steps[node.name] = self._step(node)
            elif node.op != "output":
                self.steps[node.name] = Step("const")
        return self.steps

    def _step(self, node: fx.Node) -> Step:
        value = node.meta.get("val")
        if isinstance(value, (int, float, torch.SymInt, torch.SymFloat)):
            return Step("size")   # the batch size, or arithmetic on it
        if node.target is operator.getitem and node.args[0].target is BATCH_NORM and node.args[1] > 0:
            return Step("const")   # a statistic, not the normalized map
        inputs = [a for a in node.all_input_nodes if self.steps[a.name].mode in ("patch", "full")]
        if any(self.steps[a.name].mode == "full" for a in inputs):
            return Step("full", reason="after an op run in full")
        if self._reduces_map(node, inputs):
            return Step("full", reason="it reads the whole map")
        if node.name not in self.axes or any(a.name not in self.axes for a in inputs):
            return Step("full", reason="it reads or makes values the whole map sets")
        out_size = self._map_size(node)
        step = self._patch_step(node, inputs, out_size) if out_size else Step("full", reason="map size unknown")
        if step.mode == "patch" and self.threshold is not None:
            step.region = capped(step.region, self.threshold)
        if step.mode == "patch" and step.region.coverage > self.full_above:
            return Step("full", reason=f"what a window changes covers {step.region.coverage:.0%} of its "
                                       f"{out_size[0]}x{out_size[1]} map")
        return step

    def _patch_step(self, node: fx.Node, inputs: list[fx.Node], out_size: tuple[int, int]) -> Step:
        target, regions = node.target, [self.steps[a.name].region for a in inputs]
        same_axes = len({self.axes[a.name] for a in [node, *inputs]}) == 1
        if target in CONVOLUTIONS | MAX_POOLS | AVG_POOLS:
            op, fill = _window_op(node, self.module)
            if op is None or inputs != [node.args[0]] or self.axes[node.name] != (2, 3) or not same_axes:
                return Step("full", reason=f"this {_op_name(node)} is not followed incrementally")
            return Step("patch", op.projected(regions[0], out_size), kind="window", window=op, fill=fill)
        if target is operator.getitem:
            return Step("patch", regions[0], kind="item")
        if target in SPLITS and _dim(node) not in (0, *self.axes[node.name]):
            return Step("patch", regions[0], kind="split")
        if (target in CATS and same_axes and all(a in inputs for a in node.args[0])
                and _dim(node) not in (0, *self.axes[node.name])):
            return Step("patch", _union(regions, out_size), kind="cat")
        if target in RESHAPES | PERMUTES and _keeps_batch(node) and _static_beyond_batch(node):
            return Step("patch", regions[0], kind="layout")
        pointwise = target in POINTWISE or _acts_on_channels(node, self.axes[node.name])
        if (pointwise and same_axes and all(self._map_size(a) == out_size for a in inputs)
                and len({_rank(a) for a in [node, *inputs]}) == 1):
            return Step("patch", _union(regions, out_size), kind="pointwise")
        return Step("full", reason=f"{_op_name(node)} is not followed incrementally")

    def _reduces_map(self, node: fx.Node, inputs: list[fx.Node]) -> bool:
        """Global or adaptive pooling, or a mean, sum, max or flatten over the rows or columns."""
        if node.target in ADAPTIVE_POOLS:
            return True
        if not inputs or inputs[0].name not in self.axes:
            return False
        axes, rank = self.axes[inputs[0].name], _rank(inputs[0])
        if node.target in REDUCTIONS and len(node.args) > 1 and node.args[1]:
            return any(dim % rank in axes for dim in node.args[1])
        if node.target is aten.flatten.using_ints:
            first = node.args[1] if len(node.args) > 1 else 0
            last = node.args[2] if len(node.args) > 2 else -1
            return any(first % rank <= axis <= last % rank for axis in axes)
        return False

    def _map_size(self, node: fx.Node) -> tuple[int, int] | None:
        value = _first_tensor(node)
        if value is None or node.name not in self.axes:
            return None
        row, col = self.axes[node.name]
        try:
            return int(value.shape[row]), int(value.shape[col])
        except TypeError:   # a symbolic size
            return None


def input_region(image_size: tuple[int, int], window: int, stride: int) -> Region:
    """The windows as Captum places them, row-major: every `stride` pixels, ceil((side - window) / stride) + 1
    of them per axis, the last cut off by the edge. Each rectangle is `window` pixels, moved inside."""
    starts = [np.arange(_positions(side, window, stride)) * stride for side in image_size]
    tops, lefts = (a.ravel() for a in np.meshgrid(*starts, indexing="ij"))
    return _region(tops, tops + window, lefts, lefts + window, image_size)


def _positions(side: int, window: int, stride: int) -> int:
    return -(-(side - window) // stride) + 1


def _union(regions: list[Region], map_size: tuple[int, int]) -> Region:
    if all(r.same_as(regions[0]) for r in regions):
        return regions[0]
    tops = np.min([r.tops for r in regions], axis=0)
    lefts = np.min([r.lefts for r in regions], axis=0)
    bottoms = np.max([r.tops + r.height for r in regions], axis=0)
    rights = np.max([r.lefts + r.width for r in regions], axis=0)
    return _region(tops, bottoms, lefts, rights, map_size)


def _window_op(node: fx.Node, module: fx.GraphModule) -> tuple[WindowOp | None, float]:
    """The op's geometry and the value its padding holds; None for variants not followed here."""
    args = _arguments(node)
    if node.target in CONVOLUTIONS:
        if args.get("transposed"):
            return None, 0.0
        weight = node.args[1]
        shape = _get_attr(module, weight.target).shape if weight.op == "get_attr" else weight.meta["val"].shape
        kernel, dilation = (int(shape[-2]), int(shape[-1])), _pair(args["dilation"])
        return WindowOp(kernel, _pair(args["stride"]), _padding(args["padding"], kernel, dilation), dilation), 0.0
    kernel = _pair(args["kernel_size"])
    stride = _pair(args["stride"]) if args["stride"] else kernel
    padding = _pair(args["padding"])
    if node.target in MAX_POOLS:   # ceil mode only adds windows that run past the padding: -inf there too
        return WindowOp(kernel, stride, padding, _pair(args["dilation"])), -math.inf
    if args["ceil_mode"] or (any(padding) and not args["count_include_pad"]):
        return None, 0.0   # the divisor would change at the border
    return WindowOp(kernel, stride, padding, (1, 1)), 0.0


def _get_attr(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _first_tensor(node: fx.Node) -> torch.Tensor | None:
    value = node.meta.get("val")
    values = value if isinstance(value, (tuple, list)) else [value]
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def _rank(node: fx.Node) -> int:
    return _first_tensor(node).dim()


def _dim(node: fx.Node) -> int:
    """The dim a cat joins along or a split cuts, non-negative."""
    if node.target in CATS:
        dim, rank = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)), _rank(node.args[0][0])
    else:
        dim, rank = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)), _rank(node.args[0])
    return dim % rank


def _keeps_batch(node: fx.Node) -> bool:
    rank = _rank(node)
    if node.target is aten.permute.default:
        return node.args[1][0] % rank == 0
    if node.target is aten.transpose.int:
        return 0 not in (node.args[1] % rank, node.args[2] % rank)
    return True


def _static_beyond_batch(node: fx.Node) -> bool:
    try:
        [int(s) for s in _first_tensor(node).shape[1:]]
        return True
    except TypeError:
        return False


def _acts_on_channels(node: fx.Node, axes: tuple[int, int]) -> bool:
    """BatchNorm (channels on axis 1), LayerNorm and Linear over trailing axes that hold no pixels."""
    rank = _rank(node)
    if node.target is BATCH_NORM:
        return 1 not in axes
    if node.target is aten.layer_norm.default:
        return all(axis < rank - len(node.args[1]) for axis in axes)
    if node.target is aten.linear.default:
        return rank - 1 not in axes
    return False


def _op_name(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


# --- running it -------------------------------------------------------------------------------------

def read_region(source: torch.Tensor, axes: tuple[int, int], rows: torch.Tensor, cols: torch.Tensor,
                patch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                fill: float | None = None) -> torch.Tensor:
    """(windows * batch, ...): each window's rectangle (`rows` (windows, h) by `cols` (windows, w)) of the
    source (batch, ...), with `patch` (values (windows * batch, ...), their rows, their columns) written
    over it where they overlap, and `fill` where the rectangle leaves the map."""
    row, col = axes
    moved = source.movedim((row, col), (1, 2))   # (batch, H, W, rest): a map's channels-last layout
    batch, height, width = moved.shape[:3]
    windows, h, w = rows.shape[0], rows.shape[1], cols.shape[1]
    in_window = torch.arange(windows, device=rows.device).view(windows, 1, 1, 1)
    in_batch = torch.arange(batch, device=rows.device).view(1, batch, 1, 1)
    values = moved[in_batch, rows.clamp(0, height - 1).view(windows, 1, h, 1),
                   cols.clamp(0, width - 1).view(windows, 1, 1, w)]   # (windows, batch, h, w, rest)
    trailing = (1,) * (values.dim() - 4)
    if patch is not None:
        patch_values, patch_rows, patch_cols = patch
        ph, pw = patch_rows.shape[1], patch_cols.shape[1]
        at_rows, at_cols = patch_rows - rows[:, :1], patch_cols - cols[:, :1]
        over = patch_values.movedim((row, col), (1, 2)).reshape(windows, batch, ph, pw, *moved.shape[3:])
        if at_rows.min() >= 0 and at_rows.max() < h and at_cols.min() >= 0 and at_cols.max() < w:
            values[in_window, in_batch, at_rows.view(windows, 1, ph, 1), at_cols.view(windows, 1, 1, pw)] = over
        else:   # a patch reaching past the rectangle (a strided 1x1 convolution skips rows): where they overlap
            values = _overlaid(values, over, rows - patch_rows[:, :1], cols - patch_cols[:, :1])
    if fill is not None:
        outside = ~(((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])
        if outside.any():
            values.masked_fill_(outside.view(windows, 1, h, w, *trailing), fill)
    return values.view(windows * batch, h, w, *values.shape[4:]).movedim((1, 2), (row, col))


def _overlaid(values: torch.Tensor, over: torch.Tensor, at_rows: torch.Tensor, at_cols: torch.Tensor) -> torch.Tensor:
    """values (windows, batch, h, w, rest) with over (windows, batch, ph, pw, rest) where each rectangle
    position (`at_rows`, `at_cols`: its row and column in the patch) falls inside the patch."""
    windows, batch, h, w = values.shape[:4]
    ph, pw = over.shape[2:4]
    inside = (((at_rows >= 0) & (at_rows < ph))[:, :, None] & ((at_cols >= 0) & (at_cols < pw))[:, None, :])
    picked = over[torch.arange(windows, device=at_rows.device).view(windows, 1, 1, 1),
                  torch.arange(batch, device=at_rows.device).view(1, batch, 1, 1),
                  at_rows.clamp(0, ph - 1).view(windows, 1, h, 1), at_cols.clamp(0, pw - 1).view(windows, 1, 1, w)]
    return torch.where(inside.view(windows, 1, h, w, *(1,) * (values.dim() - 4)), picked, values)


def paste(source: torch.Tensor, axes: tuple[int, int], patch: torch.Tensor, rows: torch.Tensor,
          cols: torch.Tensor) -> torch.Tensor:
    """(windows * batch, ...): the source (batch, ...) once per window, the window's patch written in at
    its `rows` (windows, h) and `cols` (windows, w)."""
    row, col = axes
    moved = source.movedim((row, col), (1, 2))
    windows, batch, h, w = rows.shape[0], moved.shape[0], rows.shape[1], cols.shape[1]
    full = moved.repeat(windows, *(1,) * (moved.dim() - 1)).view(windows, *moved.shape)   # a copy, even of one
    full[torch.arange(windows, device=rows.device).view(windows, 1, 1, 1),
         torch.arange(batch, device=rows.device).view(1, batch, 1, 1),
         rows.view(windows, 1, h, 1), cols.view(windows, 1, 1, w)] = (
        patch.movedim((row, col), (1, 2)).reshape(windows, batch, h, w, *moved.shape[3:]))
    return full.view(windows * batch, *moved.shape[1:]).movedim((1, 2), (row, col))


class IncrementalOcclusion:
    """Occlusion maps of one model for one window and stride: the plan is made once, then `attribute`."""

    def __init__(self, graph: ModelGraph, *, window: int, stride: int, full_above: float = FULL_ABOVE,
                 approximation: Approximation = EXACT):
        self.image_size = tuple(graph.input_size[1:])
        if not 0 < stride <= window <= min(self.image_size):
            raise ValueError(f"occlusion needs 0 < stride <= window <= image side; got window {window}, stride "
                             f"{stride}, image {self.image_size[0]}x{self.image_size[1]}")
        self.graph, self.module = graph, graph.fast
        self.window, self.stride = window, stride
        self.axes = spatial_axes(self.module)
        self.nodes = [n for n in self.module.graph.nodes if n.op != "output"]
        self.output = next(n for n in self.module.graph.nodes if n.op == "output").args[0]
        self.input_region = input_region(self.image_size, window, stride)
        self.grid = tuple(_positions(side, window, stride) for side in self.image_size)
        self.positions = len(self.input_region.tops)
        self.approximation = approximation
        self.steps = _Planner(self.module, self.input_region, full_above, approximation.threshold).run()
        order = {node: index for index, node in enumerate(self.nodes)}
        self.last_use = {n.name: max((order[u] for u in n.users if u.op != "output"), default=-1) for n in self.nodes}
        self.kept_needed = {n.name for n in self.nodes if self._kept_needed(n)} | {self.output.name}

    def _kept_needed(self, node: fx.Node) -> bool:
        """Whether the passes read the node's unoccluded output: a constant, or a patch that an op reads
        with a halo, over another rectangle or pasted into the whole map."""
        step = self.steps[node.name]
        if step.mode in ("const", "size"):
            return True
        if step.mode != "patch":
            return False
        for user in node.users:
            used = self.steps.get(user.name)
            if used is None or used.mode != "patch" or used.kind == "window":
                return True
            if used.kind in ("pointwise", "cat") and not used.region.same_as(step.region):
                return True
        return False

    @property
    def incremental_ops(self) -> int:
        return sum(1 for n in self.nodes if n.op == "call_function" and self.steps[n.name].mode == "patch")

    @property
    def mode(self) -> str:
        """Where the walk went from incremental to full, and why, in words for the report."""
        ops = sum(1 for n in self.nodes if n.op == "call_function" and self.steps[n.name].mode in ("patch", "full"))
        first_full = next((n for n in self.nodes if self.steps[n.name].mode == "full"), None)
        where = (f"full from {self._describe(first_full)} on ({self.steps[first_full.name].reason})"
                 if first_full is not None else "no op in full")
        exact = "" if self.approximation.exact else f"; approximate: {self.approximation.describe()}"
        return f"incremental for {self.incremental_ops} of {ops} ops; {where}{exact}"

    def _describe(self, node: fx.Node) -> str:
        """The layer the node computes, as the report names layers (a convolution with its BatchNorm folded
        in: the convolution), else the node's name."""
        leaves = [layer for layer in self.graph.layers if layer.leaf]
        same = [layer for layer in leaves if layer.node == node.name]
        folded = [layer for layer in leaves if self.graph.fast_node(layer.name) == node.name]
        return (same or folded or [node])[0].name

    def attribute(self, inputs: torch.Tensor, targets: torch.Tensor, baseline: torch.Tensor, *, chunk: int,
                  progress: SectionProgress = no_progress) -> torch.Tensor:
        """(n, C, H, W): per pixel, the mean drop in the target class probability, the same in every channel."""
        with torch.inference_mode():
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            baseline = baseline.expand_as(inputs).contiguous(memory_format=torch.channels_last)
            targets = targets.view(-1, 1)
            if self.approximation.drills_down:
                drops = self._drilled_drops(inputs, targets, baseline, chunk, progress)
            else:
                drops = self._drops(inputs, targets, baseline, torch.arange(self.positions), chunk, progress)
            return self._averaged(drops, inputs.shape[1])

    def _drops(self, inputs: torch.Tensor, targets: torch.Tensor, baseline: torch.Tensor, windows: torch.Tensor,
               chunk: int, progress: SectionProgress) -> torch.Tensor:
        """(n, len(windows)): the drop in each image's target probability with each of these windows greyed."""
        kept = self._forward(inputs)
        unoccluded = F.softmax(kept[self.output.name], dim=1).gather(1, targets)[:, 0]
        per_pass = self._windows_per_pass(len(inputs), chunk)
        drops = torch.empty(len(inputs), len(windows), dtype=unoccluded.dtype, device=inputs.device)
        for start in range(0, len(windows), per_pass):
            batch = windows[start:start + per_pass]
            logits = _Pass(self, kept, inputs, baseline, batch).run()
            occluded = F.softmax(logits, dim=1).gather(1, targets.repeat(len(batch), 1))[:, 0]
            drops[:, start:start + len(batch)] = unoccluded[:, None] - occluded.view(len(batch), -1).T
            progress((start + len(batch)) / max(len(windows), 1))
        return drops

    def _drilled_drops(self, inputs: torch.Tensor, targets: torch.Tensor, baseline: torch.Tensor, chunk: int,
                       progress: SectionProgress) -> torch.Tensor:
        """(n, positions): the coarse positions computed, the others interpolated from them, and the
        `drill_share` of the others next to the largest coarse drops computed, per image."""
        rows, cols = self.grid
        knots = [_knots(side, self.approximation.coarse) for side in self.grid]
        coarse = torch.from_numpy((knots[0][:, None] * cols + knots[1][None, :]).ravel())
        others = torch.ones(self.positions, dtype=torch.bool)
        others[coarse] = False
        drilled = round(self.approximation.drill_share * int(others.sum()))
        first, rest = shares(progress, [len(coarse), drilled])
        coarse_drops = self._drops(inputs, targets, baseline, coarse, chunk, first)
        grid = coarse_drops.view(len(inputs), len(knots[0]), len(knots[1]))
        weights = [_interpolation(side, k).to(grid) for side, k in zip(self.grid, knots)]
        drops = torch.einsum("rk,nkl,cl->nrc", weights[0], grid, weights[1]).reshape(len(inputs), -1)
        drops[:, coarse] = coarse_drops
        if drilled:
            priority = _corner_max(grid.abs(), knots, self.grid).reshape(len(inputs), -1)
            priority[:, ~others] = -1
            for image, part in zip(range(len(inputs)), shares(rest, [1] * len(inputs))):
                chosen = priority[image].topk(drilled).indices.sort().values
                drops[image, chosen] = self._drops(inputs[image:image + 1], targets[image:image + 1],
                                                   baseline[image:image + 1], chosen, chunk, part)[0]
        return drops

    def _forward(self, inputs: torch.Tensor) -> dict[str, object]:
        """The outputs the passes read, for the unoccluded images (the fast graph's forward, op by op)."""
        values: dict[str, object] = {}
        for index, node in enumerate(self.nodes):
            if node.op == "placeholder":
                values[node.name] = inputs
            elif node.op == "get_attr":
                values[node.name] = _get_attr(self.module, node.target)
            else:
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: values[a.name])
                values[node.name] = node.target(*args, **kwargs)
            for source in node.all_input_nodes:
                if self.last_use[source.name] == index and source.name not in self.kept_needed:
                    del values[source.name]
        return values

    def _windows_per_pass(self, images: int, chunk: int) -> int:
        """As many windows as keep a pass's largest tensor within the largest map of `chunk` images."""
        largest_map, per_window = 1, 1
        for node in self.nodes:
            step, value = self.steps[node.name], _first_tensor(node)
            if step.mode not in ("patch", "full") or value is None or not _static_beyond_batch(node):
                continue
            elements = math.prod(int(s) for s in value.shape[1:])
            largest_map = max(largest_map, elements)
            per_window = max(per_window, int(elements * (step.region.coverage if step.mode == "patch" else 1)))
        return max(1, min(self.positions, chunk * largest_map // (images * per_window)))

    def _averaged(self, drops: torch.Tensor, channels: int) -> torch.Tensor:
        """Each pixel's drops summed over the windows covering it, divided by their number."""
        height, width = self.image_size
        rows = _coverage(height, self.window, self.stride).to(drops)
        cols = _coverage(width, self.window, self.stride).to(drops)
        grid = drops.view(len(drops), rows.shape[0], cols.shape[0])
        total = torch.einsum("ry,irc,cx->iyx", rows, grid, cols)
        counts = rows.sum(0)[:, None] * cols.sum(0)[None, :]
        return (total / counts).unsqueeze(1).expand(-1, channels, -1, -1).contiguous()


def _knots(positions: int, every: int) -> np.ndarray:
    """The coarse positions along an axis: every `every`-th, and the last."""
    return np.unique(np.r_[np.arange(0, positions, every), positions - 1])


def _interpolation(positions: int, knots: np.ndarray) -> torch.Tensor:
    """(positions, len(knots)): linear interpolation weights from the values at the knots."""
    weights = torch.zeros(positions, len(knots), dtype=torch.float64)
    if len(knots) == 1:
        return weights + 1
    x = np.arange(positions)
    low = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    share = (x - knots[low]) / (knots[low + 1] - knots[low])
    weights[x, low] = torch.from_numpy(1 - share)
    weights[x, low + 1] += torch.from_numpy(share)
    return weights


def _corner_max(grid: torch.Tensor, knots: list[np.ndarray], sizes: tuple[int, int]) -> torch.Tensor:
    """(n, rows, cols): for each position, the largest of the coarse values at the corners of its cell."""
    corners = []
    for side, k in zip(sizes, knots):
        x = np.arange(side)
        low = np.clip(np.searchsorted(k, x, side="right") - 1, 0, len(k) - 1)
        corners.append((torch.from_numpy(low), torch.from_numpy(np.minimum(low + 1, len(k) - 1))))
    (top, bottom), (left, right) = corners
    return torch.stack([grid[:, r][:, :, c] for r in (top, bottom) for c in (left, right)]).amax(dim=0)


def _coverage(side: int, window: int, stride: int) -> torch.Tensor:
    """(positions, side): 1 where the window at that position covers the pixel."""
    starts = torch.arange(_positions(side, window, stride))[:, None] * stride
    pixels = torch.arange(side)
    return ((pixels >= starts) & (pixels < starts + window)).float()


class _Pass:
    """One batch of window positions through the graph: each node's value for every (window, image) pair,
    window-major. A "patch" node's value holds only its rectangle; the kept output holds the rest."""

    def __init__(self, engine: IncrementalOcclusion, kept: dict, inputs: torch.Tensor, baseline: torch.Tensor,
                 windows: torch.Tensor):
        self.engine, self.kept, self.windows = engine, kept, windows
        self.inputs, self.baseline = inputs, baseline
        self.steps, self.axes = engine.steps, engine.axes
        self.values: dict[str, object] = {}
        self.whole: dict[str, torch.Tensor] = {}   # patch nodes pasted into whole maps, for the ops run in full

    def run(self) -> torch.Tensor:
        for index, node in enumerate(self.engine.nodes):
            step = self.steps[node.name]
            if step.mode != "const":
                self.values[node.name] = self._run(node, step)
            for source in node.all_input_nodes:
                if self.engine.last_use[source.name] == index:
                    self.values.pop(source.name, None)
                    self.whole.pop(source.name, None)
        return self._full(self.engine.output)

    def _run(self, node: fx.Node, step: Step):
        if step.mode == "size":
            return self._size(node)
        if step.mode == "full":
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), self._full)
            return node.target(*args, **kwargs)
        return getattr(self, f"_patch_{step.kind}")(node, step)

    def _full(self, node: fx.Node):
        """The node's value for every (window, image), whole maps."""
        step = self.steps[node.name]
        if step.mode == "const":
            return self.kept[node.name]
        if step.mode != "patch":
            return self.values[node.name]
        if node.name not in self.whole:
            self.whole[node.name] = paste(self.kept[node.name], self.axes[node.name], self.values[node.name],
                                          *self._index(step.region))
        return self.whole[node.name]

    def _size(self, node: fx.Node):
        if node.target is aten.sym_size.int and node.args[1] == 0:
            return len(self.windows) * len(self.inputs)
        if node.target is aten.sym_size.int:
            return self.kept[node.name]
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self._full)
        return node.target(*args, **kwargs)

    def _index(self, region: Region) -> tuple[torch.Tensor, torch.Tensor]:
        return region.rows(self.windows, self.inputs.device), region.cols(self.windows, self.inputs.device)

    def _read(self, node: fx.Node, region: Region) -> torch.Tensor:
        """A node's values over each window's rectangle `region`: its patch, or the kept output with its
        patch written over it."""
        step = self.steps[node.name]
        if step.region.same_as(region):
            return self.values[node.name]
        return read_region(self.kept[node.name], self.axes[node.name], *self._index(region),
                           patch=(self.values[node.name], *self._index(step.region)))

    def _patch_input(self, node: fx.Node, step: Step) -> torch.Tensor:
        """The images with the baseline in each window, over the window's rectangle."""
        rows, cols = self._index(step.region)
        images = read_region(self.inputs, (2, 3), rows, cols)
        grey = read_region(self.baseline, (2, 3), rows, cols)
        window, stride = self.engine.window, self.engine.stride
        per_row = _positions(self.engine.image_size[1], window, stride)
        top = (self.windows // per_row * stride)[:, None].to(rows.device)
        left = (self.windows % per_row * stride)[:, None].to(rows.device)
        inside = (((rows >= top) & (rows < top + window))[:, :, None]
                  & ((cols >= left) & (cols < left + window))[:, None, :])
        inside = inside.repeat_interleave(len(self.inputs), dim=0).unsqueeze(1)   # (windows * images, 1, h, w)
        return torch.where(inside, grey, images)

    def _patch_window(self, node: fx.Node, step: Step) -> torch.Tensor:
        op, source = step.window, node.args[0]
        sliced = read_region(self.kept[source.name], (2, 3), *op.reads(step.region, self.windows, self.inputs.device),
                             patch=(self.values[source.name], *self._index(self.steps[source.name].region)),
                             fill=step.fill)
        args = _arguments(node)
        if node.target in CONVOLUTIONS:
            bias = self._constant(node.args[2]) if len(node.args) > 2 else None
            return F.conv2d(sliced, self._constant(node.args[1]), bias, op.stride, 0, op.dilation, args["groups"])
        if node.target in MAX_POOLS:
            return F.max_pool2d(sliced, op.kernel, op.stride, 0, op.dilation)
        return F.avg_pool2d(sliced, op.kernel, op.stride, 0, False, True, args["divisor_override"])

    def _constant(self, arg):
        return self.kept[arg.name] if isinstance(arg, fx.Node) else arg

    def _patch_item(self, node: fx.Node, step: Step):
        return self.values[node.args[0].name][node.args[1]]

    def _patch_split(self, node: fx.Node, step: Step):
        return node.target(self.values[node.args[0].name], *node.args[1:], **node.kwargs)

    def _patch_layout(self, node: fx.Node, step: Step):
        source = self.values[node.args[0].name]
        if node.target in PERMUTES:
            return node.target(source, *node.args[1:])
        shape = [source.shape[0], *(int(s) for s in node.meta["val"].shape[1:])]
        row, col = self.axes[node.name]
        shape[row], shape[col] = step.region.height, step.region.width
        return source.reshape(shape)

    def _patch_cat(self, node: fx.Node, step: Step):
        return node.target([self._read(a, step.region) for a in node.args[0]], *node.args[1:], **node.kwargs)

    def _patch_pointwise(self, node: fx.Node, step: Step):
        maps = [a for a in node.all_input_nodes if self.steps[a.name].mode == "const" and self._is_map(a, node)]
        if maps and node.target in POINTWISE:   # (BatchNorm's, LayerNorm's and Linear's weights are no maps)
            return self._pointwise_with_maps(node, step, maps)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: self._operand(a, step.region))
        return node.target(*args, **kwargs)

    def _operand(self, node: fx.Node, region: Region):
        mode = self.steps[node.name].mode
        if mode == "const":
            return self.kept[node.name]
        return self.values[node.name] if mode == "size" else self._read(node, region)

    def _pointwise_with_maps(self, node: fx.Node, step: Step, maps: list[fx.Node]):
        """With a constant map (a fixed mask) cut to each window's rectangle, on (windows, images, ...)."""
        windows, images = len(self.windows), len(self.inputs)
        rows, cols = self._index(step.region)
        row, col = self.axes[node.name]

        def value(a: fx.Node):
            if a in maps:
                constant = self._ranked(self.kept[a.name], node)
                cut = read_region(constant, (row, col), rows if constant.shape[row] > 1 else rows[:, :1] * 0,
                                  cols if constant.shape[col] > 1 else cols[:, :1] * 0)
                return cut.view(windows, constant.shape[0], *cut.shape[1:])
            value = self._operand(a, step.region)
            if self.steps[a.name].mode != "patch":
                return value
            return value.reshape(windows, images, *value.shape[1:])
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), value)
        result = node.target(*args, **kwargs)
        return result.reshape(windows * images, *result.shape[2:])

    @staticmethod
    def _ranked(constant: torch.Tensor, node: fx.Node) -> torch.Tensor:
        """The constant with leading 1s up to the node's rank, as broadcasting reads it."""
        return constant.reshape((1,) * (_rank(node) - constant.dim()) + tuple(constant.shape))

    def _is_map(self, constant: fx.Node, node: fx.Node) -> bool:
        """A constant tensor that varies over the node's rows or columns."""
        value = self.kept[constant.name]
        if not isinstance(value, torch.Tensor) or value.dim() > _rank(node):
            return False
        value, (row, col) = self._ranked(value, node), self.axes[node.name]
        return value.shape[row] > 1 or value.shape[col] > 1
