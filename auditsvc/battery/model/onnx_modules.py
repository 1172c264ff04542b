"""The torch modules ONNX nodes become where torch has none of its own (onnx_ops.py converts).

Each is named after the ONNX op it stands for: the audit's layer list shows the class name as the
layer's type (`layer1.0.Add`: Add).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Binary(nn.Module):
    """An elementwise op of two tensors, or of a tensor and a constant (a float or a buffer)."""
    function: Callable = staticmethod(torch.add)

    def __init__(self, constant: torch.Tensor | float | None = None, constant_first: bool = False):
        super().__init__()
        self.scalar = constant if isinstance(constant, float) else None
        if isinstance(constant, torch.Tensor):
            self.register_buffer("constant", constant)
        else:
            self.constant = None
        self.constant_first = constant_first

    def forward(self, a, b=None):
        if b is None:
            b = self.scalar if self.scalar is not None else self.constant
            if self.constant_first:
                a, b = b, a
        return self.function(a, b)


class Add(Binary):
    function = staticmethod(torch.add)


class Sub(Binary):
    function = staticmethod(torch.sub)


class Mul(Binary):
    function = staticmethod(torch.mul)


class Div(Binary):
    function = staticmethod(torch.div)


class Pow(Binary):
    function = staticmethod(torch.pow)


class Sqrt(nn.Module):
    def forward(self, x):
        return torch.sqrt(x)


class Erf(nn.Module):
    def forward(self, x):
        return torch.erf(x)


class Selu(nn.Module):
    """SELU with other constants than torch's."""

    def __init__(self, alpha: float, gamma: float):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, x):
        return self.gamma * torch.where(x > 0, x, self.alpha * torch.expm1(x))


class PRelu(nn.Module):
    """PReLU with a slope that is not one per channel (nn.PReLU's): broadcast over the input."""

    def __init__(self, slope: torch.Tensor):
        super().__init__()
        self.register_buffer("slope", slope)

    def forward(self, x):
        return torch.where(x >= 0, x, x * self.slope)


class Clip(nn.Module):
    def __init__(self, low: float | None, high: float | None):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        return torch.clamp(x, self.low, self.high)


class HardSigmoid(nn.Module):
    def __init__(self, alpha: float, beta: float):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, x):
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *tensors):
        return torch.cat(tensors, self.axis)


class Flatten(nn.Module):
    """ONNX Flatten: to 2-D, the dims before `axis` into the first."""

    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        if self.axis == 0:
            return x.reshape(1, -1)
        return x.flatten(self.axis).flatten(0, self.axis - 1) if self.axis > 1 else x.flatten(1)


class Reshape(nn.Module):
    def forward(self, x, shape: list):
        return x.reshape(shape)


class Transpose(nn.Module):
    def __init__(self, perm: list[int]):
        super().__init__()
        self.perm = perm

    def forward(self, x):
        return x.permute(self.perm)


class Squeeze(nn.Module):
    def __init__(self, axes: list[int]):
        super().__init__()
        self.axes = tuple(axes)

    def forward(self, x):
        return x.squeeze(self.axes) if self.axes else x


class Unsqueeze(nn.Module):
    def __init__(self, axes: list[int]):
        super().__init__()
        self.axes = sorted(axes)

    def forward(self, x):
        for axis in self.axes:
            x = x.unsqueeze(axis)
        return x


class Softmax(nn.Module):
    """Softmax or LogSoftmax along `axis`; `flatten`: opset < 13's softmax over every dim from `axis` on."""

    def __init__(self, axis: int, log: bool = False, flatten: bool = False):
        super().__init__()
        self.axis, self.log, self.flatten = axis, log, flatten

    def forward(self, x):
        function = torch.log_softmax if self.log else torch.softmax
        if not self.flatten:
            return function(x, self.axis)
        return function(x.flatten(self.axis), self.axis).reshape(x.shape)


class LogSoftmax(Softmax):
    pass


class Reduce(nn.Module):
    function: Callable = staticmethod(torch.mean)

    def __init__(self, axes: list[int], keepdims: bool):
        super().__init__()
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        return self.function(x, dim=self.axes, keepdim=self.keepdims)


class ReduceMean(Reduce):
    function = staticmethod(torch.mean)


class ReduceMax(Reduce):
    function = staticmethod(torch.amax)


class ReduceSum(Reduce):
    function = staticmethod(torch.sum)


class Split(nn.Module):
    def __init__(self, axis: int, sizes: list[int]):
        super().__init__()
        self.axis, self.sizes = axis, sizes

    def forward(self, x):
        return torch.split(x, self.sizes, self.axis)


class Slice(nn.Module):
    """x[start:end:step] along each of `axes`; starts and ends may be sizes computed when the graph runs."""

    def __init__(self, axes: list[int], steps: list[int]):
        super().__init__()
        self.axes, self.steps = axes, steps

    def forward(self, x, starts: list, ends: list):
        index = [slice(None)] * x.dim()
        for axis, start, end, step in zip(self.axes, starts, ends, self.steps):
            index[axis] = slice(start, end, step)
        return x[tuple(index)]


class Gather(nn.Module):
    def __init__(self, axis: int, indices: list[int], scalar: bool):
        super().__init__()
        self.axis, self.indices, self.scalar = axis, indices, scalar

    def forward(self, x):
        if self.scalar:
            return x.select(self.axis, self.indices[0])
        return torch.index_select(x, self.axis, torch.tensor(self.indices, device=x.device))


class MatMul(nn.Module):
    def __init__(self, constant: torch.Tensor | None = None, constant_first: bool = False):
        super().__init__()
        if constant is None:
            self.constant = None
        else:
            self.register_buffer("constant", constant)
        self.constant_first = constant_first

    def forward(self, a, b=None):
        if b is None:
            a, b = (self.constant, a) if self.constant_first else (a, self.constant)
        return torch.matmul(a, b)


class Gemm(nn.Module):
    """alpha * A' B' + beta * C, for a Gemm that is not a linear layer (computed B, transposed A)."""

    def __init__(self, trans_a: bool, trans_b: bool, alpha: float, beta: float, b: torch.Tensor | None,
                 c: torch.Tensor | None):
        super().__init__()
        self.trans_a, self.trans_b, self.alpha, self.beta = trans_a, trans_b, alpha, beta
        self.register_buffer("b", b)
        self.register_buffer("c", c)

    def forward(self, a, b=None, c=None):
        b = self.b if b is None else b
        c = self.c if c is None else c
        y = torch.matmul(a.t() if self.trans_a else a, b.t() if self.trans_b else b) * self.alpha
        return y if c is None else y + self.beta * c


class Pad(nn.Module):
    """F.pad with torch's order of pads (last dim first)."""

    def __init__(self, pads: list[int], mode: str = "constant", value: float = 0.0):
        super().__init__()
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x):
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self.mode)


class AveragePool(nn.Module):
    """Average pooling with asymmetric pads: a padded copy pooled, divided by how many of the window's
    values count (the input's only, unless count_include_pad)."""

    def __init__(self, dims: int, kernel, stride, ceil_mode: bool, pads: list[int], divisor: torch.Tensor):
        super().__init__()
        self.pool = getattr(F, f"avg_pool{dims}d")
        self.kernel, self.stride, self.ceil_mode, self.pads = kernel, stride, ceil_mode, pads
        self.register_buffer("divisor", divisor)

    def forward(self, x):
        padded = F.pad(x, self.pads)
        total = self.pool(padded, self.kernel, self.stride, 0, self.ceil_mode, True)
        return total if self.divisor is None else total / self.divisor


class Resize(nn.Module):
    def __init__(self, mode: str, scale: list[float] | None, align_corners: bool | None):
        super().__init__()
        self.mode, self.scale, self.align_corners = mode, scale, align_corners

    def forward(self, x, size: list | None = None):
        if size is not None:
            return F.interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners)
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=self.align_corners,
                             recompute_scale_factor=False)


class Upsample(Resize):
    pass
