"""Keras layers as torch modules that compute what Keras computes on its PyTorch backend.

`build_layer` takes a layer's config, the loaded Keras layer (for its weights) and the layer's
input values (channels-first, as the converted model holds every map) and returns a torch module,
or None for a layer that does nothing at inference (dropout, noise). A Keras layer that is more
than one torch op becomes an `nn.Sequential` of named parts: `conv1` with `activation='relu'` is
`conv1.conv` then `conv1.relu`, so the audit's layer list reads like the Keras summary.

Padding follows Keras's PyTorch backend exactly: 'same' pads (k - 1) in total at stride 1 and
what TensorFlow pads otherwise, the odd pixel at the end; convolutions pad with zeros, pooling
with the edge values where the two sides differ (keras.src.backend.torch.nn._apply_same_padding).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import BadInput
from .keras_archive import ONNX_ROUTE

ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid, "tanh": nn.Tanh,
    "silu": nn.SiLU, "swish": nn.SiLU, "hard_silu": nn.Hardswish, "hard_swish": nn.Hardswish, "gelu": nn.GELU,
    "elu": nn.ELU, "selu": nn.SELU, "softplus": nn.Softplus, "softsign": nn.Softsign, "mish": nn.Mish,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),   # Keras's default slope for the activation (0.3 for the layer)
}
NO_OPS = {"Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
          "Identity"}


class Refused(Exception):
    """A layer option the converter does not reproduce; the caller names the layer."""


class Layout:
    """Where Keras keeps the channels. The converted model holds 4-d maps channels-first (N, C, H, W);
    `keras` and `torch` move a map between that and Keras's order, `axis` maps a Keras axis."""

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last

    def keras(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.channels_last and x.dim() == 4 else x

    def torch(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last and x.dim() == 4 else x

    def axis(self, axis: int, rank: int) -> int:
        axis = axis % rank
        if self.channels_last and rank == 4:
            return (0, 2, 3, 1)[axis]
        return axis

    def channel_axis(self, rank: int) -> int:
        return 1 if rank == 4 else rank - 1


# --- modules for what torch.nn has no single module for -------------------------------------------

class KerasOrderFlatten(nn.Module):
    """Flatten in Keras's order (height, width, channels for a channels-last model), so that the Dense
    layer after it reads its weights as Keras does."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout

    def forward(self, x):
        return self.layout.keras(x).flatten(1)


class KerasOrderReshape(nn.Module):
    def __init__(self, shape: tuple[int, ...], layout: Layout):
        super().__init__()
        self.shape, self.layout = shape, layout

    def forward(self, x):
        return self.layout.torch(self.layout.keras(x).reshape(x.shape[0], *self.shape))


class GlobalPool2d(nn.Module):
    def __init__(self, reduce: str, keepdims: bool):
        super().__init__()
        self.reduce, self.keepdims = reduce, keepdims

    def forward(self, x):
        if self.reduce == "max":
            return x.amax(dim=(2, 3), keepdim=self.keepdims)
        return x.mean(dim=(2, 3), keepdim=self.keepdims)


class Crop2d(nn.Module):
    def __init__(self, top: int, bottom: int, left: int, right: int):
        super().__init__()
        self.box = (top, bottom, left, right)

    def forward(self, x):
        top, bottom, left, right = self.box
        return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


class Affine(nn.Module):
    """x * scale + offset (Rescaling)."""

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)

    def forward(self, x):
        return x * self.scale + self.offset


class Standardize(nn.Module):
    """(x - mean) / max(sqrt(variance), epsilon) (Normalization)."""

    def __init__(self, mean: torch.Tensor, denominator: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("denominator", denominator)

    def forward(self, x):
        return (x - self.mean) / self.denominator


class Merge(nn.Module):
    """Keras's merge layers: inputs combined left to right, as Keras does."""

    combine = staticmethod(torch.add)

    def forward(self, *inputs):
        out = inputs[0]
        for x in inputs[1:]:
            out = self.combine(out, x)
        return out


class Add(Merge):
    combine = staticmethod(torch.add)


class Subtract(Merge):
    combine = staticmethod(torch.sub)


class Multiply(Merge):
    combine = staticmethod(torch.mul)


class Maximum(Merge):
    combine = staticmethod(torch.maximum)


class Minimum(Merge):
    combine = staticmethod(torch.minimum)


class Average(Merge):
    def forward(self, *inputs):
        return super().forward(*inputs) / len(inputs)


class Concatenate(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *inputs):
        return torch.cat(inputs, dim=self.dim)


MERGES = {"Add": Add, "Subtract": Subtract, "Multiply": Multiply, "Average": Average, "Maximum": Maximum,
          "Minimum": Minimum}


# --- building ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Build:
    """What every layer's conversion reads besides its own config and weights."""

    layout: Layout
    weight: Callable          # a Keras variable as a float32 torch tensor
    epsilon: float            # Keras's backend epsilon (Normalization divides by at least this)
    drop_softmax: bool = False  # leave a softmax activation out (the model's last layer)


def build_layer(class_name: str, config: dict, layer, inputs: list[torch.Tensor], build: Build) -> nn.Module | None:
    """The torch module for one Keras layer call, None for a layer that does nothing at inference.
    Raises Refused for options the converter does not reproduce."""
    if class_name in NO_OPS:
        return None
    if class_name in MERGES:
        _same_ranks(inputs)
        return MERGES[class_name]()
    if class_name == "Concatenate":
        _same_ranks(inputs)
        return Concatenate(build.layout.axis(int(config.get("axis", -1)), inputs[0].dim()))
    if len(inputs) != 1:
        raise Refused(f"takes {len(inputs)} inputs")
    builder = BUILDERS.get(class_name)
    if builder is None:
        raise Refused("is not a layer the converter knows")
    _check_data_format(config, build.layout)
    return builder(config, layer, inputs[0], build)


def _conv2d(config, layer, x, build):
    kernel = build.weight(layer.kernel)   # (kh, kw, in / groups, out)
    conv_weight = kernel.permute(3, 2, 0, 1)
    return _convolution(config, layer, x, build, conv_weight, int(config.get("groups", 1)))


def _depthwise_conv2d(config, layer, x, build):
    kernel = build.weight(layer.kernel)   # (kh, kw, in, multiplier)
    height, width, channels, multiplier = kernel.shape
    conv_weight = kernel.reshape(height, width, channels * multiplier).permute(2, 0, 1).unsqueeze(1)
    return _convolution(config, layer, x, build, conv_weight, channels)


def _convolution(config, layer, x, build, conv_weight, groups):
    strides, dilation = _pair(config.get("strides", 1)), _pair(config.get("dilation_rate", 1))
    pads = _padding(config, x, conv_weight.shape[2:], strides, dilation)
    conv = nn.Conv2d(conv_weight.shape[1] * groups, conv_weight.shape[0], tuple(conv_weight.shape[2:]),
                     stride=strides, dilation=dilation, groups=groups, bias=layer.bias is not None,
                     padding=_symmetric(pads) or 0)
    _set(conv, conv_weight, build.weight(layer.bias) if layer.bias is not None else None)
    pad = None if _symmetric(pads) is not None else nn.ZeroPad2d(_torch_pads(pads))
    return _parts(pad=pad, conv=conv, **_activation(config, x.dim(), build))


def _separable_conv2d(config, layer, x, build):
    kernel = build.weight(layer.depthwise_kernel)   # (kh, kw, in, multiplier)
    height, width, channels, multiplier = kernel.shape
    strides, dilation = _pair(config.get("strides", 1)), _pair(config.get("dilation_rate", 1))
    pads = _padding(config, x, (height, width), strides, dilation)
    depthwise = nn.Conv2d(channels, channels * multiplier, (height, width), stride=strides, dilation=dilation,
                          groups=channels, bias=False, padding=_symmetric(pads) or 0)
    _set(depthwise, kernel.reshape(height, width, channels * multiplier).permute(2, 0, 1).unsqueeze(1), None)
    pointwise_kernel = build.weight(layer.pointwise_kernel)   # (1, 1, in * multiplier, filters)
    pointwise = nn.Conv2d(channels * multiplier, pointwise_kernel.shape[3], 1, bias=layer.bias is not None)
    _set(pointwise, pointwise_kernel.permute(3, 2, 0, 1), build.weight(layer.bias) if layer.bias is not None else None)
    pad = None if _symmetric(pads) is not None else nn.ZeroPad2d(_torch_pads(pads))
    return _parts(pad=pad, depthwise=depthwise, pointwise=pointwise,
                  **_activation(config, x.dim(), build))


def _dense(config, layer, x, build):
    if x.dim() != 2:
        raise Refused(f"is applied to a {x.dim()}-dimensional input (the converter reads Dense layers after "
                      "Flatten or global pooling)")
    kernel = build.weight(layer.kernel)   # (in, out)
    linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=layer.bias is not None)
    _set(linear, kernel.t(), build.weight(layer.bias) if layer.bias is not None else None)
    return _parts(linear=linear, **_activation(config, x.dim(), build))


def _batch_norm(config, layer, x, build):
    axes = config.get("axis", -1)
    axes = axes if isinstance(axes, list) else [axes]
    if x.dim() not in (2, 4) or len(axes) != 1 or build.layout.axis(int(axes[0]), x.dim()) != 1:
        raise Refused(f"normalizes axis {axes} of a {x.dim()}-dimensional input, not its channels")
    channels = x.shape[1]
    norm = (nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm1d)(channels, eps=float(config.get("epsilon", 1e-3)))
    with torch.no_grad():
        norm.weight.copy_(build.weight(layer.gamma) if layer.gamma is not None else torch.ones(channels))
        norm.bias.copy_(build.weight(layer.beta) if layer.beta is not None else torch.zeros(channels))
        norm.running_mean.copy_(build.weight(layer.moving_mean))
        norm.running_var.copy_(build.weight(layer.moving_variance))
    return norm


def _activation_layer(config, layer, x, build):
    parts = _activation(config, x.dim(), build)
    return next(iter(parts.values())) if parts else None


def _relu(config, layer, x, build):
    maximum, slope = config.get("max_value"), float(config.get("negative_slope") or 0.0)
    if float(config.get("threshold") or 0.0) != 0.0 or (slope and maximum is not None):
        raise Refused("uses a threshold, or a negative slope with a maximum")
    if slope:
        return nn.LeakyReLU(slope)
    if maximum is None:
        return nn.ReLU()
    return nn.ReLU6() if float(maximum) == 6.0 else nn.Hardtanh(0.0, float(maximum))


def _leaky_relu(config, layer, x, build):
    return nn.LeakyReLU(float(config.get("negative_slope", config.get("alpha", 0.3))))


def _elu(config, layer, x, build):
    return nn.ELU(float(config.get("alpha", 1.0)))


def _softmax(config, layer, x, build):
    if build.drop_softmax:
        return None
    axis = config.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise Refused("takes the softmax over several axes")
        axis = axis[0]
    return nn.Softmax(dim=build.layout.axis(int(axis), x.dim()))


def _max_pool(config, layer, x, build):
    return _pool(config, x, nn.MaxPool2d, {})


def _average_pool(config, layer, x, build):
    return _pool(config, x, nn.AvgPool2d, {"count_include_pad": False})


def _pool(config, x, pool_class, options):
    _spatial(x)
    size = _pair(config.get("pool_size", 2))
    strides = _pair(config.get("strides") or size)
    pads = _padding(config, x, size, strides, (1, 1))
    symmetric = _symmetric(pads)
    pool = pool_class(size, strides, padding=symmetric or 0, **options)
    # Keras's PyTorch backend pads with the edge values where the sides differ (a max is unchanged by it).
    return _parts(pad=None if symmetric is not None else nn.ReplicationPad2d(_torch_pads(pads)), pool=pool)


def _global_pool(reduce):
    def build(config, layer, x, build):
        _spatial(x)
        return GlobalPool2d(reduce, bool(config.get("keepdims", False)))
    return build


def _flatten(config, layer, x, build):
    return KerasOrderFlatten(build.layout)


def _reshape(config, layer, x, build):
    return KerasOrderReshape(tuple(int(v) for v in config["target_shape"]), build.layout)


def _zero_padding(config, layer, x, build):
    _spatial(x)
    (top, bottom), (left, right) = _box(config["padding"])
    return nn.ZeroPad2d((left, right, top, bottom))


def _cropping(config, layer, x, build):
    _spatial(x)
    (top, bottom), (left, right) = _box(config["cropping"])
    return Crop2d(top, bottom, left, right)


def _upsampling(config, layer, x, build):
    _spatial(x)
    if config.get("interpolation", "nearest") != "nearest":
        raise Refused(f"interpolates {config.get('interpolation')!r} (only 'nearest' is converted)")
    return nn.Upsample(scale_factor=tuple(float(v) for v in _pair(config.get("size", 2))), mode="nearest")


def _rescaling(config, layer, x, build):
    return Affine(_per_channel(config.get("scale", 1.0), x, build.layout),
                  _per_channel(config.get("offset", 0.0), x, build.layout))


def _normalization(config, layer, x, build):
    if config.get("invert"):
        raise Refused("inverts the normalization")
    mean, variance = build.weight(layer.mean), build.weight(layer.variance)   # shaped to broadcast in Keras's order
    if mean.dim() == 4:
        mean, variance = build.layout.torch(mean), build.layout.torch(variance)
    return Standardize(mean, torch.clamp(torch.sqrt(variance), min=build.epsilon))


BUILDERS = {
    "Conv2D": _conv2d, "DepthwiseConv2D": _depthwise_conv2d, "SeparableConv2D": _separable_conv2d,
    "Dense": _dense, "BatchNormalization": _batch_norm, "Activation": _activation_layer, "ReLU": _relu,
    "LeakyReLU": _leaky_relu, "ELU": _elu, "Softmax": _softmax, "MaxPooling2D": _max_pool,
    "AveragePooling2D": _average_pool, "GlobalAveragePooling2D": _global_pool("mean"),
    "GlobalMaxPooling2D": _global_pool("max"), "Flatten": _flatten, "Reshape": _reshape,
    "ZeroPadding2D": _zero_padding, "Cropping2D": _cropping, "UpSampling2D": _upsampling,
    "Rescaling": _rescaling, "Normalization": _normalization,
}


# --- helpers ----------------------------------------------------------------------------------------

def _activation(config: dict, rank: int, build: "Build") -> dict[str, nn.Module]:
    """A layer's activation as a named part ({} for linear or a dropped softmax)."""
    name = config.get("activation") or "linear"
    if name == "linear" or (name == "softmax" and build.drop_softmax):
        return {}
    if name == "softmax":
        return {"softmax": nn.Softmax(dim=build.layout.axis(-1, rank))}
    if name not in ACTIVATIONS:
        raise Refused(f"uses the activation {name!r}")
    return {name: ACTIVATIONS[name]()}


def _parts(**parts: nn.Module | None) -> nn.Module:
    named = OrderedDict((name, module) for name, module in parts.items() if module is not None)
    return next(iter(named.values())) if len(named) == 1 else nn.Sequential(named)


def _set(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if tuple(module.weight.shape) != tuple(weight.shape):
        raise Refused(f"has weights of shape {tuple(weight.shape)} where {tuple(module.weight.shape)} was expected")
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise Refused(f"has a 2-d option with {len(value)} values")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _box(value) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) from an int, a pair, or a pair of pairs."""
    if isinstance(value, int):
        return (value, value), (value, value)
    rows, columns = value
    return (_pair(rows), _pair(columns))


def _padding(config: dict, x: torch.Tensor, kernel, strides, dilation) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) as Keras's PyTorch backend pads."""
    padding = config.get("padding", "valid")
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding != "same":
        raise Refused(f"uses padding {padding!r}")
    return tuple(_same(int(size), int(k), s, d) for size, k, s, d in zip(x.shape[2:], kernel, strides, dilation))


def _same(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    total = effective - 1 if stride == 1 else max(0, (math.ceil(size / stride) - 1) * stride + effective - size)
    return total // 2, total - total // 2


def _symmetric(pads) -> tuple[int, int] | None:
    (top, bottom), (left, right) = pads
    return (top, left) if top == bottom and left == right else None


def _torch_pads(pads) -> tuple[int, int, int, int]:
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def _per_channel(value, x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A scalar, or a list along Keras's last axis, shaped to broadcast against x."""
    tensor = torch.as_tensor(value, dtype=torch.float32)
    if tensor.dim() == 0:
        return tensor
    if x.dim() == 4 and layout.channels_last:
        return tensor.reshape(-1, 1, 1)
    return tensor


def _spatial(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise Refused(f"is applied to a {x.dim()}-dimensional input, not to an image map")


def _same_ranks(inputs: list[torch.Tensor]) -> None:
    if len({x.dim() for x in inputs}) != 1:
        raise Refused("combines inputs of different ranks")


def _check_data_format(config: dict, layout: Layout) -> None:
    expected = "channels_last" if layout.channels_last else "channels_first"
    if config.get("data_format", expected) != expected:
        raise Refused(f"uses data_format {config.get('data_format')!r} where the model's other layers use {expected!r}")


def refused(file_name: str, layer_name: str, class_name: str, reason: str) -> BadInput:
    return BadInput(f"{file_name}: layer {layer_name[:80]!r} ({class_name[:40]}) {reason}, which this service cannot "
                    f"convert exactly; {ONNX_ROUTE}")
