"""Tiny versions of the classic CNN families, written here because torchvision is not available.

Each keeps what makes its family hard to read from a graph, at a size an audit runs in seconds
(3x32x32 input, a few channels):

- squeezenet: fire modules (squeeze 1x1, expand 1x1 and 3x3 concatenated) and an all-convolutional
  head: conv to classes, ReLU, adaptive average pool, flatten; no linear layer;
- shufflenet: grouped 1x1 convolutions, channel shuffle by view/transpose/reshape, depthwise 3x3,
  chunk and split, cat;
- densenet: dense blocks that concatenate all previous features, transition layers;
- inception: parallel 1x1, 3x3, 5x5 (or double 3x3) and pool-projection branches concatenated;
- senet: squeeze-and-excitation (global pool, two FC layers or 1x1 convolutions, sigmoid, channel-wise
  product) in residual blocks;
- convnext: depthwise 7x7 convolutions, permute to channels-last, LayerNorm, Linear 4x, GELU, Linear,
  permute back, layer scale, residual;
- resnext: bottlenecks with grouped (groups=4) 3x3 convolutions and residuals;
- vgg (model-side tests only): a flatten of a whole map before a linear head.

The layouts follow torchvision's definitions of these families.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from auditsvc.demo.nets import ConvNeXt

INPUT = (3, 32, 32)


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The residual branch's 1x1 projection where the block changes shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


# --- SqueezeNet -------------------------------------------------------------------------------

class Fire(nn.Module):
    def __init__(self, in_channels: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1's layout: the logits are the flattened global average of a ReLU'd convolution."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(8, 4, 8), Fire(16, 4, 8),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 6, 12))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(24, num_classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        for module in self.modules():  # as torchvision: the final convolution starts small
            if isinstance(module, nn.Conv2d) and module.out_channels == num_classes:
                nn.init.normal_(module.weight, 0.0, 0.1)
                nn.init.constant_(module.bias, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- ShuffleNet -------------------------------------------------------------------------------

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


def _branch(in_channels: int, out_channels: int, stride: int, groups: int) -> nn.Sequential:
    """Grouped 1x1, depthwise 3x3, 1x1 (ShuffleNet's bottleneck with V2's branch layout)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, stride, 1, groups=out_channels, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ShuffleUnit(nn.Module):
    """Stride 1: half the channels pass through, the other half through the branch (split or chunk)."""

    def __init__(self, channels: int, use_split: bool):
        super().__init__()
        self.use_split = use_split
        self.half = channels // 2
        self.branch2 = _branch(self.half, self.half, 1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_split:
            x1, x2 = torch.split(x, self.half, dim=1)
        else:
            x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)


class ShuffleDown(nn.Module):
    """Stride 2: both halves of the output come from the whole input."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.branch1 = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False), nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        self.branch2 = _branch(in_channels, half, 2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat((self.branch1(x), self.branch2(x)), dim=1), 2)


class ShuffleNet(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                   nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(ShuffleDown(8, 16), ShuffleUnit(16, use_split=False),
                                    ShuffleUnit(16, use_split=True))
        self.conv5 = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stage2(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


# --- DenseNet ---------------------------------------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.Module):
    def __init__(self, layers: int, in_channels: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList([DenseLayer(in_channels + i * growth, growth) for i in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 3, growth: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            DenseBlock(2, 8, growth), Transition(8 + 2 * growth, 8),
            DenseBlock(2, 8, growth), nn.BatchNorm2d(8 + 2 * growth))
        self.classifier = nn.Linear(8 + 2 * growth, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# --- Inception (GoogLeNet) --------------------------------------------------------------------

class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, double_3x3: bool):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, 1))
        wide = ([BasicConv2d(ch5x5red, ch5x5, 3, 1), BasicConv2d(ch5x5, ch5x5, 3, 1)] if double_3x3
                else [BasicConv2d(ch5x5red, ch5x5, 5, 2)])
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, 1), *wide)
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(in_channels, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionNet(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 3):
        super().__init__()
        self.conv1 = BasicConv2d(in_channels, 8, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(2, 2)
        self.inception3a = Inception(8, 4, 4, 8, 2, 4, 4, double_3x3=False)      # 20 channels
        self.maxpool2 = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.inception3b = Inception(20, 6, 4, 8, 2, 4, 6, double_3x3=True)      # 24 channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool2(self.inception3a(self.maxpool1(self.conv1(x))))
        x = self.avgpool(self.inception3b(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


# --- Squeeze-and-excitation -------------------------------------------------------------------

class SqueezeExcitation(nn.Module):
    """Global pool, two fully connected layers (1x1 convolutions or Linear), sigmoid, channel-wise product."""

    def __init__(self, channels: int, squeezed: int, linear: bool):
        super().__init__()
        self.linear = linear
        if linear:
            self.fc1, self.fc2 = nn.Linear(channels, squeezed), nn.Linear(squeezed, channels)
        else:
            self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            batch, channels = x.shape[0], x.shape[1]
            scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
            return x * scale.view(batch, channels, 1, 1)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class SEBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, linear: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcitation(out_channels, max(2, out_channels // 4), linear)
        self.downsample = projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + identity)


class SENet(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = SEBlock(8, 8, 1, linear=False)
        self.layer2 = SEBlock(8, 16, 2, linear=True)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- ConvNeXt ---------------------------------------------------------------------------------

def convnext(num_classes: int = 2, in_channels: int = 3) -> ConvNeXt:
    return ConvNeXt(num_classes, in_channels, dims=(16, 32), depths=(1, 1), layer_scale=0.5)


# --- ResNeXt ----------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int, groups: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNeXt(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = Bottleneck(8, 8, 16, 1)
        self.layer2 = Bottleneck(16, 16, 32, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- VGG ---------------------------------------------------------------------------------------

class VGG(nn.Module):
    """A flatten of a whole 4x4 map before the linear head (VGG, AlexNet): the fast copy's channels-last
    map cannot be viewed as a vector."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


FAMILIES = {
    "squeezenet": SqueezeNet,
    "shufflenet": ShuffleNet,
    "densenet": DenseNet,
    "inception": InceptionNet,
    "senet": SENet,
    "convnext": convnext,
    "resnext": ResNeXt,
}
MORE = {"vgg": VGG}   # model-side tests only




def build(family: str, seed: int, num_classes: int = 2) -> nn.Module:
    """The family's tiny net with weights drawn from `seed`, in evaluation mode, BatchNorm statistics
    made non-trivial (as a trained net's are) so that folding them is tested for real."""
    torch.manual_seed(seed)
    model = (FAMILIES | MORE)[family](num_classes)
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
            module.weight.data.copy_(0.8 + 0.4 * torch.rand(channels, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(channels, generator=generator))
    return model.eval()
