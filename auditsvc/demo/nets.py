"""Small CNN definitions for the demo, the tests and the benchmarks.

torchvision is not available beside the pinned CPU build of torch, so the few
architectures we need are written here: a plain conv/BN/ReLU stack, a residual net with
functional in-place ReLU (ResNet-18 layout at full width), a depthwise-separable net
with SiLU or Hardswish, and ConvNeXt (tiny layout by default; the tests use a two-block one).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class PlainNet(nn.Module):
    """conv-BN-ReLU blocks with max pooling, then global average pooling and a linear head."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        blocks, channels = [], in_channels
        for width in widths:
            blocks += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu_(out)


class ResNet(nn.Module):
    """ResNet with BasicBlocks; functional, in-place ReLU throughout (no nn.ReLU modules)."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 256, 512),
                 blocks_per_stage: int = 2, stem_stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7 if stem_stride > 1 else 3, stem_stride,
                               3 if stem_stride > 1 else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.pool = nn.MaxPool2d(3, 2, 1) if stem_stride > 1 else nn.Identity()
        stages, channels = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride)] + [BasicBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = (stages + [nn.Identity()] * 4)[:4]
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu_(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    return ResNet(num_classes, in_channels)


def tiny_resnet(num_classes: int, in_channels: int = 3) -> ResNet:
    return ResNet(num_classes, in_channels, widths=(8, 16), blocks_per_stage=1, stem_stride=1)


class SeparableBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: type[nn.Module]):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = activation()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.pointwise(self.act1(self.bn1(self.depthwise(x))))))


class SeparableNet(nn.Module):
    """MobileNet-style depthwise-separable blocks with SiLU or Hardswish."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64),
                 activation: type[nn.Module] = nn.Hardswish):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), activation())
        blocks, channels = [], widths[0]
        for width in widths:
            blocks.append(SeparableBlock(channels, width, 2, activation))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, through channels-last (as torchvision's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, then channels-last LayerNorm, Linear 4x, GELU, Linear, layer scale, residual."""

    def __init__(self, dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.layer_scale * y).permute(0, 3, 1, 2)


class ConvNeXtHead(nn.Module):
    """Global average pool, LayerNorm, Linear."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean(dim=(2, 3))))


class ConvNeXt(nn.Sequential):
    """ConvNeXt (Liu et al. 2022) without stochastic depth; the defaults are the tiny layout.
    Its parts are named stem, stage1, down2, stage2, ..., head."""

    def __init__(self, num_classes: int, in_channels: int = 3, dims: tuple[int, ...] = (96, 192, 384, 768),
                 depths: tuple[int, ...] = (3, 3, 9, 3), layer_scale: float = 0.1):
        parts = {"stem": nn.Sequential(nn.Conv2d(in_channels, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))}
        for index, (dim, depth) in enumerate(zip(dims, depths), start=1):
            if index > 1:
                parts[f"down{index}"] = nn.Sequential(LayerNorm2d(dims[index - 2], eps=1e-6),
                                                      nn.Conv2d(dims[index - 2], dim, 2, stride=2))
            parts[f"stage{index}"] = nn.Sequential(*[ConvNeXtBlock(dim, layer_scale) for _ in range(depth)])
        parts["head"] = ConvNeXtHead(dims[-1], num_classes)
        super().__init__(OrderedDict(parts))


def export(model: nn.Module, input_size: tuple[int, int, int]) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension, as the model contract asks."""
    example = torch.randn(2, *input_size)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
