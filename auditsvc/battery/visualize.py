"""Activation maximization: the image a model would most like to see for a class or a channel.

Gradient ascent from a neutral grey image, with the regularizers of Olah et al. (2017,
"Feature Visualization") that keep it from collapsing into high-frequency noise:
- a decorrelated Fourier parameterization: the optimized variables are the image's spectrum,
  scaled by 1/frequency so all frequencies learn at a similar pace, mapped through a fixed
  colour-correlation matrix (RGB only) and a sigmoid into pixel values in [0, 1];
- transformation robustness: each step sees the image randomly shifted, scaled and rotated
  (an affine resampling), so the result must work wherever it lands;
- a small total-variation penalty against pixel-level noise.
The image lives in pixel space [0, 1] and is normalized with the model's mean and std before the
forward pass. Every image of a batch is optimized at once (rows are independent under Adam), and
the run is seeded: the same generator state gives the same images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .graph import ModelGraph
from .loading import InputSpec

# Square roots of the eigen-decomposed colour correlations of natural images (Lucid's constants).
COLOUR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02],
                                   [0.27, 0.00, -0.05],
                                   [0.27, -0.09, 0.03]])
ACTIVATION_TYPES = {"relu", "relu6", "silu", "gelu", "hardswish", "mish", "leakyrelu", "leaky_relu", "elu",
                    "selu", "celu", "hardtanh", "sigmoid", "tanh", "softplus", "prelu"}


@dataclass(frozen=True)
class Target:
    """What to maximize: a class logit (layer None) or the mean activation of a channel of a layer."""

    index: int
    layer: str | None = None


@dataclass(frozen=True)
class Settings:
    steps: int = 256
    learning_rate: float = 0.08
    max_side: int = 128              # the image is parameterized at most at this side, then resampled
    jitter: float = 0.06             # largest shift, as a fraction of the image side
    scale: float = 0.08              # largest zoom in or out
    rotation: float = 8.0            # largest rotation, degrees
    total_variation: float = 0.05    # weight of the mean absolute difference between neighbouring pixels
    decay_power: float = 1.0         # spectrum scaling 1 / frequency ** decay_power


@dataclass
class Visualization:
    targets: list[Target]
    images: np.ndarray       # (n, H, W, C) float32 in [0, 1], at the model's input size
    scores: np.ndarray       # (n,) the objective on the final, untransformed image: class probability or
                             # mean channel activation
    logits: np.ndarray       # (n, classes) of the final images


class FourierImage(nn.Module):
    """A batch of images parameterized by their decorrelated, frequency-scaled spectrum."""

    def __init__(self, count: int, channels: int, height: int, width: int, generator: torch.Generator,
                 decay_power: float = 1.0, init_std: float = 0.01):
        super().__init__()
        self.height, self.width = height, width
        frequencies = torch.sqrt(torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2)
        self.register_buffer("scale", 1.0 / frequencies.clamp(min=1.0 / max(height, width)) ** decay_power)
        spectrum = torch.randn(count, channels, height, width // 2 + 1, 2, generator=generator) * init_std
        self.spectrum = nn.Parameter(spectrum)
        if channels == 3:
            colour = COLOUR_CORRELATION / COLOUR_CORRELATION.norm(dim=0).max()
        else:
            colour = torch.eye(channels)
        self.register_buffer("colour", colour)

    def forward(self) -> torch.Tensor:
        """(n, C, H, W) pixels in [0, 1]."""
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho") / 4
        return torch.sigmoid(torch.einsum("nchw,dc->ndhw", decorrelated, self.colour))


def random_affine(count: int, settings: Settings, generator: torch.Generator) -> torch.Tensor:
    """(count, 2, 3) affine matrices: a random shift, zoom and rotation per image."""
    def uniform(*shape):
        return torch.rand(*shape, generator=generator) * 2 - 1

    angle = uniform(count) * math.radians(settings.rotation)
    zoom = 1 + uniform(count) * settings.scale
    shift = uniform(count, 2) * settings.jitter * 2  # affine_grid coordinates span 2 per image side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def resample(images: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    grid = F.affine_grid(theta, [len(images), images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """(n,) mean absolute difference between neighbouring pixels."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return dx + dy


def maximize(graph: ModelGraph, spec: InputSpec, targets: Sequence[Target], generator: torch.Generator,
             settings: Settings = Settings()) -> Visualization:
    """One image per target, all optimized together."""
    targets = list(targets)
    device = graph.device
    layers = sorted({t.layer for t in targets if t.layer is not None})
    side_scale = min(1.0, settings.max_side / max(spec.height, spec.width))
    height, width = max(8, round(spec.height * side_scale)), max(8, round(spec.width * side_scale))
    image = FourierImage(len(targets), spec.channels, height, width, generator, settings.decay_power).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=settings.learning_rate)
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    model_size = (spec.height, spec.width)
    with graph.rewrite(outputs=layers) as rewrite:
        forward = _forward(graph, rewrite, layers)
        for _ in range(settings.steps):
            pixels = image()
            theta = random_affine(len(targets), settings, generator).to(device)
            logits, activations = forward((resample(pixels, theta, model_size) - mean) / std)
            objective = _objective(targets, logits, activations)
            loss = -objective.sum() + settings.total_variation * total_variation(pixels).sum() * _scale_of(objective)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            final = resample(image(), _identity(len(targets), device), model_size)
            logits, activations = forward((final - mean) / std)
            scores = _scores(targets, logits, activations)
    return Visualization(targets, final.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
                         scores.cpu().numpy(), logits.float().cpu().numpy())


def _forward(graph: ModelGraph, rewrite, layers: list[str]):
    def forward(batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not layers:
            return graph(batch), {}
        logits, *outputs = rewrite.module(batch)
        return logits, dict(zip(layers, outputs))
    return forward


def _objective(targets: list[Target], logits: torch.Tensor, activations: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n,) per image: for a class, its logit plus its log-probability (which fades once the class
    dominates, so the logit alone keeps pushing); for a channel, its mean activation."""
    log_probabilities = logits.float().log_softmax(dim=1)
    values = []
    for row, target in enumerate(targets):
        if target.layer is None:
            values.append(logits[row, target.index] + log_probabilities[row, target.index])
        else:
            values.append(_channel_mean(activations[target.layer][row], target.index))
    return torch.stack(values)


def _scores(targets: list[Target], logits: torch.Tensor, activations: dict[str, torch.Tensor]) -> torch.Tensor:
    probabilities = logits.float().softmax(dim=1)
    return torch.stack([probabilities[row, t.index] if t.layer is None
                        else _channel_mean(activations[t.layer][row], t.index) for row, t in enumerate(targets)])


def _channel_mean(activation: torch.Tensor, channel: int) -> torch.Tensor:
    return activation[channel].float().mean() if activation.dim() > 1 else activation[channel].float()


def _scale_of(objective: torch.Tensor) -> torch.Tensor:
    """Ties the total-variation weight to the objective's size, so it means the same for logits and activations."""
    return objective.detach().abs().mean().clamp(min=1.0)


def _identity(count: int, device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).expand(count, 2, 3)


def feature_layers(graph: ModelGraph, fractions: Sequence[float]) -> list[str]:
    """Layers with channels worth looking at, at the given relative depths (0 = first, 1 = deepest):
    the outputs of activation functions with a spatial map, else convolutions."""
    spatial = [l for l in graph.layers if l.leaf and l.is_spatial and l.shape[1] * l.shape[2] > 1]
    candidates = [l for l in spatial if l.type.removeprefix("fn:").lower() in ACTIVATION_TYPES
                  and graph.fast_node(l.name)] or [l for l in spatial if l.is_conv]
    if not candidates:
        return []
    positions = sorted({round(f * (len(candidates) - 1)) for f in fractions})
    return [candidates[p].name for p in positions]


def strongest_channels(pooled: np.ndarray, count: int) -> list[int]:
    """The channels with the largest mean activation over the probe set ((N, C) pooled activations)."""
    means = np.nan_to_num(pooled.astype(np.float64)).mean(axis=0)
    return [int(c) for c in np.argsort(-means, kind="stable")[:count]]


def macs_per_image(graph: ModelGraph) -> int:
    """Multiply-adds of one forward pass through the convolutions and linear layers."""
    total = 0
    for layer in graph.leaf_layers():
        weight = graph.layer_weight(layer) if layer.type in ("Conv2d", "Linear") or layer.is_conv else None
        if weight is None:
            continue
        positions = layer.shape[1] * layer.shape[2] if layer.is_spatial else 1
        total += weight.numel() * positions
    return int(total)
