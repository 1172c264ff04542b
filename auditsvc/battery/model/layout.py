"""Where the input image's rows and columns are in every tensor of a model graph.

Convolutions read and write (N, C, H, W), but the classic families move those axes around
between them: ConvNeXt blocks permute to channels-last (N, H, W, C) around their LayerNorm and
Linear layers and back; ShuffleNet's channel shuffle views a map as (N, groups, C / groups, H, W),
transposes the two channel axes and views it back; SqueezeNet, DenseNet and Inception split and
concatenate maps along the channels. Walking the graph from the input, `spatial_axes` follows
the two axes through every op, so the receptive fields (receptive_field.py) go on through these
ops and a channels-last layer can be shown channels-first (`channels_first`).

An op whose output keeps the number of dimensions of a spatial input keeps its axes (elementwise
ops, normalization, Linear on the last axis, broadcasting); reshapes keep the axes whose extent
and position in memory order they leave alone; permutes and transposes move them; reductions
and reshapes that merge or split the rows or columns lose them.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx

aten = torch.ops.aten
Axes = tuple[int, int]   # (row axis, column axis)

RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
            aten.unflatten.int, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default}
PERMUTES = {aten.permute.default}
TRANSPOSES = {aten.transpose.int, aten.swapaxes.default, aten.swapdims.default}
SPLITS = {aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.unsafe_split.Tensor,
          aten.unsafe_split_with_sizes.default, aten.tensor_split.sections, aten.tensor_split.indices}
CATS = {aten.cat.default, aten.concat.default, aten.concatenate.default}


def spatial_axes(module: fx.GraphModule) -> dict[str, Axes]:
    """{node name: (row axis, column axis)} for every node whose output carries the input's rows and
    columns (a tuple-returning op such as split: the axes of its items)."""
    axes: dict[str, Axes] = {}
    for node in module.graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                axes[node.name] = (2, 3)
            continue
        if node.op not in ("call_function", "call_module"):
            continue
        tracked = [a for a in node.all_input_nodes if a.name in axes]
        if not tracked:
            continue
        found = _through(node, tracked, axes)
        if found is not None:
            axes[node.name] = found
    return axes


def spatial_size(node: fx.Node, axes: dict[str, Axes]) -> tuple[int, int] | None:
    """(rows, columns) of the node's output, if it carries the input's spatial axes and their sizes are known."""
    if node.name not in axes:
        return None
    value = _value(node)
    if value is None:
        return None
    row, col = axes[node.name]
    sizes = _sizes([value.shape[row], value.shape[col]])
    return None if sizes is None else (sizes[0], sizes[1])


def channels_first(node: fx.Node, axes: dict[str, Axes]) -> tuple[int, ...] | None:
    """The permutation that makes a 4-D channels-last output (N, H, W, C) (or any other order of the three
    non-batch axes) channels-first (N, C, H, W); None when it already is, or carries no spatial axes."""
    value = _value(node)
    if node.name not in axes or value is None or value.dim() != 4:
        return None
    row, col = axes[node.name]
    if (row, col) == (2, 3) or 0 in (row, col):
        return None
    (channel,) = {1, 2, 3} - {row, col}
    return (0, channel, row, col)


def inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(permutation.index(axis) for axis in range(len(permutation)))


def _through(node: fx.Node, tracked: list[fx.Node], axes: dict[str, Axes]) -> Axes | None:
    target = node.target
    source = tracked[0]
    if target is operator.getitem:
        return _item(node, source, axes)
    if isinstance(node.meta.get("val"), (tuple, list)):
        if target in SPLITS and _split_dim(node) in axes[source.name]:
            return None  # pieces of rows or columns: not modelled
        return axes[source.name]  # split pieces; batch norm's output, max pool's values (see _item)
    out = _value(node)
    if out is None:
        return None
    if target in PERMUTES:
        dims = [d % out.dim() for d in node.args[1]]
        return tuple(dims.index(a) for a in axes[source.name])
    if target in TRANSPOSES:
        a, b = (d % out.dim() for d in node.args[1:3])
        swap = {a: b, b: a}
        return tuple(swap.get(axis, axis) for axis in axes[source.name])
    if target in RESHAPES:
        return _reshaped(_value(source), out, axes[source.name])
    if target in CATS:
        found = {axes[a.name] for a in tracked}
        dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % out.dim()
        if len(found) != 1 or dim in next(iter(found)):
            return None  # maps joined along their rows or columns: not modelled
        return found.pop()
    # Everything else (convolutions, pooling, elementwise and broadcasting ops, normalization, Linear on
    # the last axis): the output keeps the axes of a spatial input with as many dimensions.
    for candidate in tracked:
        value = _value(candidate)
        if value is not None and value.dim() == out.dim():
            return axes[candidate.name]
    return None


def _item(node: fx.Node, source: fx.Node, axes: dict[str, Axes]) -> Axes | None:
    """An item of a tuple: split pieces, batch norm's output (not its statistics), max pool's values
    keep the axes: the items with as many dimensions as the op's spatial input."""
    value = _value(node)
    inputs = [_value(a) for a in source.all_input_nodes if a.name in axes]
    if value is None or not any(v is not None and v.dim() == value.dim() for v in inputs):
        return None
    return axes[source.name]


def _reshaped(before: torch.Tensor | None, after: torch.Tensor, found: Axes) -> Axes | None:
    """The axes a reshape keeps: an axis survives when an output axis has its extent and the same
    number of elements before it (in row-major order), the batch axis left alone."""
    if before is None or before.dim() == 0 or after.dim() == 0 or not _same(before.shape[0], after.shape[0]):
        return None
    if 0 in found:
        return None
    inner_before, inner_after = _sizes(before.shape[1:]), _sizes(after.shape[1:])
    if inner_before is None or inner_after is None:
        return None
    mapped = []
    for axis in found:
        size, prefix = inner_before[axis - 1], math.prod(inner_before[:axis - 1])
        match = next((j for j in range(len(inner_after))
                      if inner_after[j] == size and math.prod(inner_after[:j]) == prefix), None)
        if match is None:
            return None
        mapped.append(match + 1)
    return tuple(mapped) if mapped[0] != mapped[1] else None


def _split_dim(node: fx.Node) -> int:
    value = _value(node.args[0]) if isinstance(node.args[0], fx.Node) else None
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    return dim % value.dim() if value is not None else dim


def _value(node) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _sizes(sizes) -> list[int] | None:
    """Sizes as ints; a symbolic size (a TorchScript conversion leaves rows and columns symbolic) by the
    value it had for the example input, which has the declared input size; None if it has none."""
    try:
        return [int(s) for s in sizes]
    except Exception:  # an unbacked or otherwise unknowable size
        return None


def _same(a, b) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return str(a) == str(b)
