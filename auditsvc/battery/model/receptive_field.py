"""Receptive fields of every layer, read from the model graph (never assumed from the architecture).

A unit of a spatial layer sees a window of the input: `size` pixels wide, centred at
`start + index * jump` (pixel coordinates, pixel centres at integers). Walking the fx graph in
order, each convolution or pooling node widens the field by (kernel - 1) * dilation input
jumps, multiplies the jump by its stride and shifts the centre by its padding; elementwise ops
(BatchNorm, activations) keep it; a node with several spatial inputs (residual add, cat) takes
the union of their fields. The rows and columns are followed through views, permutes, transposes,
splits and concatenations (layout.py): a channel shuffle or a channels-last block keeps its field.
A map scaled by something the whole image sets (a squeeze-and-excitation gate) keeps its field,
marked not exact. An op that resamples in a way we do not model covers the whole input and marks
the field as not exact.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from .fast import get_attr
from .graph import ModelGraph
from .layout import spatial_axes, spatial_size

aten = torch.ops.aten
CONVOLUTIONS = {aten.conv2d.default, aten.conv2d.padding, aten.convolution.default, aten._convolution.default}
WINDOW_POOLS = {aten.max_pool2d.default, aten.max_pool2d_with_indices.default, aten.avg_pool2d.default}
ADAPTIVE_POOLS = {aten.adaptive_avg_pool2d.default, aten.adaptive_max_pool2d.default,
                  aten._adaptive_avg_pool2d.default}


@dataclass(frozen=True)
class ReceptiveField:
    size: tuple[float, float]    # (rows, columns) of input pixels one unit sees
    jump: tuple[float, float]    # input pixels between neighbouring units (the cumulative stride)
    start: tuple[float, float]   # centre of unit (0, 0) in input pixel coordinates
    exact: bool = True           # False when an op was approximated (uneven adaptive pooling, resampling)

    def center(self, row: int, col: int) -> tuple[float, float]:
        return (self.start[0] + row * self.jump[0], self.start[1] + col * self.jump[1])

    def window(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input pixels of unit (row, col); bottom and right exclusive, unclipped."""
        (cy, cx), (h, w) = self.center(row, col), self.size
        top, left = math.floor(cy - (h - 1) / 2 + 1e-6), math.floor(cx - (w - 1) / 2 + 1e-6)
        return top, left, top + int(round(h)), left + int(round(w))

    def clipped_window(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The window cut to an image of height x width (never empty)."""
        top, left, bottom, right = self.window(row, col)
        top, left = min(max(top, 0), height - 1), min(max(left, 0), width - 1)
        return top, left, max(min(bottom, height), top + 1), max(min(right, width), left + 1)

    def describe(self) -> str:
        """'38x38 px, stride 8' (the size rounded to whole pixels)."""
        h, w = (int(round(s)) for s in self.size)
        jh, jw = (_number(j) for j in self.jump)
        size = f"{h}x{w} px" if h != w else f"{h}x{h} px"
        stride = f"stride {jh}" if jh == jw else f"stride {jh}x{jw}"
        return f"{size}{'' if self.exact else ' (approx.)'}, {stride}"

    def as_dict(self) -> dict[str, Any]:
        return {"size": [_number(s) for s in self.size], "jump": [_number(j) for j in self.jump],
                "start": [_number(s) for s in self.start], "exact": self.exact}


INPUT_FIELD = ReceptiveField((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))


def receptive_fields(graph: ModelGraph) -> dict[str, ReceptiveField]:
    """Receptive field of every spatial layer of the model, by layer name."""
    fields = node_fields(graph.module, graph.input_size[1:])
    return {layer.name: fields[layer.node] for layer in graph.layers if layer.is_spatial and layer.node in fields}


def node_fields(module: fx.GraphModule, input_hw: tuple[int, int]) -> dict[str, ReceptiveField]:
    """Receptive field of every node that carries a spatial map derived from the input, by node name.

    The map's rows and columns are followed through reshapes, permutes, splits and concatenations
    (layout.py), so channel shuffles and channels-last blocks keep their fields."""
    whole = _whole_input(input_hw)
    axes = spatial_axes(module)
    fields: dict[str, ReceptiveField] = {}
    derived: set[str] = set()   # every node computed from the input, spatial or not
    for node in module.graph.nodes:
        if node.op == "placeholder":
            derived.add(node.name)
            if node.name in axes:
                fields[node.name] = INPUT_FIELD
            continue
        if node.op not in ("call_function", "call_module"):
            continue
        if any(a.name in derived for a in node.all_input_nodes) and _carries_tensors(node):
            derived.add(node.name)
        inputs = [a for a in node.all_input_nodes if a.name in fields]
        if not inputs or node.name not in axes:
            continue
        if node.target is operator.getitem:  # an item of a tuple-returning op (batch norm, pool with indices, split)
            fields[node.name] = fields[inputs[0].name]
            continue
        context = [a for a in node.all_input_nodes if a.name in derived and a.name not in fields]
        fields[node.name] = _through(node, module, inputs, context, fields, axes, whole)
    return fields


def _through(node: fx.Node, module: fx.GraphModule, inputs: list[fx.Node], context: list[fx.Node],
             fields: dict[str, ReceptiveField], axes: dict, whole: ReceptiveField) -> ReceptiveField:
    """The field of a node's output, from its spatial inputs (and inputs computed from the input
    image that no longer carry its rows and columns, such as a squeeze-and-excitation gate)."""
    target = node.target
    first = fields[inputs[0].name]
    planar = axes.get(inputs[0].name) == (2, 3) and axes.get(node.name) == (2, 3)
    if planar and target in CONVOLUTIONS:
        args = _arguments(node)
        if args.get("transposed"):
            return _joined(node, inputs, context, fields, axes, whole)
        kernel = _kernel_of(node.args[1], module)
        return _window_op(first, kernel, _pair(args["stride"]), _padding(args["padding"], kernel,
                          _pair(args["dilation"])), _pair(args["dilation"]))
    if planar and target in WINDOW_POOLS:
        args = _arguments(node)
        kernel = _pair(args["kernel_size"])
        stride = _pair(args["stride"]) if args["stride"] else kernel
        return _window_op(first, kernel, stride, _pair(args["padding"]), _pair(args.get("dilation", 1)))
    if planar and target in ADAPTIVE_POOLS:
        return _adaptive(node, first, whole, axes)
    if planar and target is aten.constant_pad_nd.default:
        return _padded(first, list(node.args[1]))
    return _joined(node, inputs, context, fields, axes, whole)


def _window_op(field: ReceptiveField, kernel, stride, padding, dilation, exact: bool = True) -> ReceptiveField:
    size, jump, start = [], [], []
    for axis in range(2):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        size.append(field.size[axis] + (extent - 1) * field.jump[axis])
        start.append(field.start[axis] + ((extent - 1) / 2 - padding[axis]) * field.jump[axis])
        jump.append(field.jump[axis] * stride[axis])
    return ReceptiveField(tuple(size), tuple(jump), tuple(start), field.exact and exact)


def _adaptive(node: fx.Node, field: ReceptiveField, whole: ReceptiveField, axes: dict) -> ReceptiveField:
    """Adaptive pooling as the smallest fixed window and stride that contain every one of its windows."""
    before, after = spatial_size(node.args[0], axes), spatial_size(node, axes)
    if before is None or after is None:
        return _union([field, whole], exact=False)
    kernel, stride = [], []
    for n_in, n_out in zip(before, after):
        step = n_in // n_out
        stride.append(max(step, 1))
        kernel.append(n_in - (n_out - 1) * step if n_out > 1 else n_in)
    even = all(n_in % n_out == 0 for n_in, n_out in zip(before, after))
    return _window_op(field, kernel, stride, (0, 0), (1, 1), exact=even)


def _padded(field: ReceptiveField, pad: list[int]) -> ReceptiveField:
    """constant_pad_nd: pad = [left, right, top, bottom, ...]; only the first four act on the map."""
    left = pad[0] if len(pad) > 0 else 0
    top = pad[2] if len(pad) > 2 else 0
    start = (field.start[0] - top * field.jump[0], field.start[1] - left * field.jump[1])
    return ReceptiveField(field.size, field.jump, start, field.exact)


def _joined(node: fx.Node, inputs: list[fx.Node], context: list[fx.Node], fields: dict[str, ReceptiveField],
            axes: dict, whole: ReceptiveField) -> ReceptiveField:
    """Elementwise, joining and layout ops (add, cat, view, permute, split, LayerNorm, Linear on the
    channels) keep the union of the fields of their inputs of the same map size. An input broadcast
    from a 1x1 map, or computed from the input but no longer a map (a squeeze-and-excitation gate),
    scales the map by something the whole image sets: the field stays, marked not exact. Anything
    that changes the map size in a way not modelled here is taken to see the whole input."""
    if not isinstance(node.meta.get("val"), torch.Tensor):  # a tuple of maps (split, batch norm): items pick
        return _union([fields[a.name] for a in inputs])
    shape = spatial_size(node, axes)
    sizes = {a.name: spatial_size(a, axes) for a in inputs}
    same = [a for a in inputs if shape is not None and sizes[a.name] == shape]
    gates = [a for a in inputs if sizes[a.name] == (1, 1) and shape != (1, 1)]
    if same and len(same) + len(gates) == len(inputs):
        return _union([fields[a.name] for a in same], exact=not gates and not context)
    return _union([fields[a.name] for a in inputs] + [whole], exact=False)


def _union(fields: list[ReceptiveField], exact: bool = True) -> ReceptiveField:
    if len(fields) == 1 and exact:
        return fields[0]
    size, jump, start = [], [], []
    for axis in range(2):
        low = min(f.start[axis] - (f.size[axis] - 1) / 2 for f in fields)
        high = max(f.start[axis] + (f.size[axis] - 1) / 2 for f in fields)
        size.append(high - low + 1)
        start.append((low + high) / 2)
        jump.append(max(f.jump[axis] for f in fields))
    same_jump = len({f.jump for f in fields}) == 1
    return ReceptiveField(tuple(size), tuple(jump), tuple(start), exact and same_jump and all(f.exact for f in fields))


def _whole_input(input_hw) -> ReceptiveField:
    h, w = input_hw
    return ReceptiveField((float(h), float(w)), (float(h), float(w)), ((h - 1) / 2, (w - 1) / 2))


def _arguments(node: fx.Node) -> dict[str, Any]:
    """The op's arguments by schema name, defaults filled in."""
    values: dict[str, Any] = {}
    for index, argument in enumerate(node.target._schema.arguments):
        if index < len(node.args):
            values[argument.name] = node.args[index]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def _kernel_of(weight: fx.Node, module: fx.GraphModule) -> tuple[int, int]:
    value = weight.meta.get("val") if isinstance(weight, fx.Node) else None
    if not isinstance(value, torch.Tensor) and isinstance(weight, fx.Node) and weight.op == "get_attr":
        value = get_attr(module, weight.target)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"cannot read the kernel size of convolution weight {weight}")
    return int(value.shape[-2]), int(value.shape[-1])


def _padding(padding, kernel, dilation) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    if padding == "same":  # torch pads the extra pixel (for even kernels) at the end
        return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
    return _pair(padding)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        values = [int(v) for v in value]
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    return int(value), int(value)


def _carries_tensors(node: fx.Node) -> bool:
    """A tensor or tuple of tensors; not a size (sym_size) or other Python value."""
    value = node.meta.get("val")
    values = value if isinstance(value, (tuple, list)) else [value]
    return any(isinstance(v, torch.Tensor) and v.is_floating_point() for v in values)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 3)
