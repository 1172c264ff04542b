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

Each step costs one forward and backward pass per image, so the run does no more than it needs: a batch
of channel targets runs the model only up to the deepest of their layers (exact: the layers after it
cannot change its activations), and a run whose scores have converged stops early (`Schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.graph import ModelGraph
from ..model.meta import InputSpec
from ..progress import SectionProgress, no_progress

# Square roots of the eigen-decomposed colour correlations of natural images (Lucid's constants).
COLOUR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02],
                                   [0.27, 0.00, -0.05],
                                   [0.27, -0.09, 0.03]])
ACTIVATION_TYPES = {"relu", "relu6", "silu", "gelu", "hardswish", "mish", "leakyrelu", "leaky_relu", "elu",
                    "selu", "celu", "hardtanh", "sigmoid", "tanh", "softplus", "prelu"}
WARMUP_STEPS = 16
FADE_SHARE = 0.25


@dataclass(frozen=True)
class Target:
    """What to maximize: a class logit (layer None) or the mean activation of a channel of a layer."""

    index: int
    layer: str | None = None


@dataclass(frozen=True)
class Settings:
    steps: int = 256
    learning_rate: float | None = None   # None: 0.12 at 128 steps, larger for shorter runs (see rate())
    max_side: int = 128              # the image is parameterized at most at this side, then resampled
    jitter: float = 0.06             # largest shift, as a fraction of the image side
    scale: float = 0.08              # largest zoom in or out
    rotation: float = 8.0            # largest rotation, degrees
    total_variation: float = 0.05    # weight of the mean absolute difference between neighbouring pixels
    decay_power: float = 1.0         # spectrum scaling 1 / frequency ** decay_power

    def rate(self) -> float:
        """Shorter runs take larger steps, so they get about as far (Adam moves each variable by about
        the learning rate per step)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return min(0.3, 0.12 * math.sqrt(128 / max(self.steps, 1)))


@dataclass
class Visualization:
    targets: list[Target]
    images: np.ndarray       # (n, H, W, C) float32 in [0, 1], at the model's input size
    scores: np.ndarray       # (n,) the objective on the final, untransformed image: class probability or
                             # mean channel activation
    logits: np.ndarray       # (n, classes) of the final images
    steps: int               # optimization steps taken (at most Settings.steps: converged runs stop early)


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


def random_affine(count: int, settings: Settings, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """(count, 2, 3) affine matrices: a random shift, zoom and rotation per image, scaled by `strength`."""
    def uniform(*shape):
        return (torch.rand(*shape, generator=generator) * 2 - 1) * strength

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
             settings: Settings = Settings(), progress: SectionProgress = no_progress) -> Visualization:
    """One image per target, all optimized together. Channel targets alone run the model only up to the
    deepest of their layers (the rest cannot change their activations); the run stops early once every
    image's score has converged (see Schedule)."""
    targets = list(targets)
    layers = sorted({t.layer for t in targets if t.layer is not None})
    side_scale = min(1.0, settings.max_side / max(spec.height, spec.width))
    height, width = max(8, round(spec.height * side_scale)), max(8, round(spec.width * side_scale))
    image = FourierImage(len(targets), spec.channels, height, width, generator, settings.decay_power)
    image = image.to(graph.device)
    mean = torch.tensor(spec.mean, device=graph.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=graph.device).view(1, -1, 1, 1)

    def model_input(pixels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (resample(pixels, theta, (spec.height, spec.width)) - mean) / std

    truncate = all(t.layer is not None for t in targets)
    with _one_thread():
        steps = _ascend(graph, image, targets, layers, truncate, model_input, generator, settings, progress)
        with torch.no_grad(), graph.rewrite(outputs=layers) as rewrite:
            final = image()
            logits, activations = _forward(graph, rewrite, layers, None, False)(model_input(final, _identity(final)))
            scores = _scores(targets, logits, activations)
            final = resample(final, _identity(final), (spec.height, spec.width))
    # A model with non-finite outputs gets grey images and zero scores rather than NaNs downstream.
    images = np.nan_to_num(final.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32), nan=0.5)
    return Visualization(targets, images, np.nan_to_num(scores.cpu().numpy()), logits.float().cpu().numpy(), steps)


CONVERGENCE_WINDOW = 8         # steps whose mean score is compared with the previous as many
CONVERGENCE_TOLERANCE = 0.01   # converged: no image's mean score rose by more than this share of its size
# Never converged before this share of the steps: a class's probability saturates long before its image
# stops sharpening (on the tank demo, stopping at the first chance left visibly paler, blurrier images).
CONVERGENCE_FROM = 0.5


class Schedule:
    """How strongly each step transforms the image, and when the run ends.

    Full transformations, then a fade-out over the last quarter of the steps: the image is judged (and
    shown) untransformed, so it must also work exactly as it is. Convergence is decided on the full-strength
    steps only, where every step sees the same distribution of transformations (during the fade the
    score rises just because the image is transformed less): once every image's mean score (what the
    section reports: a class's probability, a channel's mean activation) over the last CONVERGENCE_WINDOW
    steps exceeds that of the window before by at most CONVERGENCE_TOLERANCE of its size (checked every
    CONVERGENCE_WINDOW steps from CONVERGENCE_FROM of the steps on), the fade starts, lasting a third of
    the steps taken so far (the same share as in a full run); never past `steps`. A class probability
    saturates, so class images that dominate their class stop early; a channel's activation keeps
    growing, so channel images mostly run every step."""

    def __init__(self, steps: int, warmup: int = 0):
        self.steps, self.warmup = steps, warmup
        self.fade_from, self.end = steps * (1 - FADE_SHARE), steps
        self._history: list[torch.Tensor] = []

    def strength(self, step: int) -> float:
        if step < self.fade_from:
            return 1.0
        return max(0.0, 1 - (step - self.fade_from + 1) / max(self.end - self.fade_from, 1))

    def record(self, step: int, scores: torch.Tensor) -> None:
        """The scores (per image) of `step`; a full-strength step after the warm-up may end the run early."""
        if step < self.warmup or step >= self.fade_from:
            return
        window = CONVERGENCE_WINDOW
        self._history = [*self._history[-(2 * window - 1):], scores.detach().float()]
        if len(self._history) < 2 * window or (step + 1) % window or step + 1 < CONVERGENCE_FROM * self.steps:
            return
        recent = torch.stack(self._history[-window:]).mean(0)
        before = torch.stack(self._history[-2 * window:-window]).mean(0)
        if bool(((recent - before) <= CONVERGENCE_TOLERANCE * recent.abs()).all()):
            taken = step + 1
            self.fade_from, self.end = taken, min(self.steps, taken + math.ceil(taken * FADE_SHARE / (1 - FADE_SHARE)))


def _ascend(graph: ModelGraph, image: FourierImage, targets: list[Target], layers: list[str], truncate: bool,
            model_input, generator: torch.Generator, settings: Settings, progress: SectionProgress) -> int:
    """The gradient ascent itself: Adam on the spectrum, a fresh random transformation every step.
    Returns the steps taken."""
    optimizer = torch.optim.Adam(image.parameters(), lr=settings.rate(), maximize=True)
    phases = _phases(graph, settings.steps)
    schedule = Schedule(settings.steps, phases[0][0] if len(phases) > 1 else 0)
    step = 0
    for steps, relu in phases:
        with graph.rewrite(outputs=layers, relu=relu, truncate=truncate) as rewrite:
            forward = _forward(graph, rewrite, layers, relu, truncate)
            for _ in range(steps):
                if step >= schedule.end:
                    return step
                theta = random_affine(len(targets), settings, generator, schedule.strength(step)).to(graph.device)
                pixels = image()
                logits, activations = forward(model_input(pixels, theta))
                objective = _objective(targets, logits, activations)
                penalty = settings.total_variation * total_variation(pixels) * _scale_of(objective)
                optimizer.zero_grad(set_to_none=True)
                (objective - penalty).sum().backward()
                optimizer.step()
                with torch.no_grad():
                    schedule.record(step, _scores(targets, logits, activations))
                step += 1
                progress(step / schedule.end)
    return step


@contextmanager
def _one_thread():
    """Run the ascent on one CPU thread. A step is a long chain of mid-sized ops with a backward pass;
    on a machine other work shares (audit workers do), waiting for descheduled threads made steps 2 to
    50 times slower than one thread (measured on the tank demo's PlainNet and on a ResNet-18 at 128 px),
    against at most about 1.5 times faster on an idle machine. The images are the same either way."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _phases(graph: ModelGraph, steps: int) -> list[tuple[int, str | None]]:
    """A few warm-up steps in which ReLUs pass every positive gradient, even where they are off
    (the deconvnet ReLU): from a grey image a channel may start inactive, with no gradient at all
    (Lucid's "redirected ReLU" serves the same purpose). Then plain gradients."""
    warmup = min(WARMUP_STEPS, steps // 4) if graph.relu_count else 0
    return [(count, relu) for count, relu in ((warmup, "deconv"), (steps - warmup, None)) if count]


def _forward(graph: ModelGraph, rewrite, layers: list[str], relu: str | None, truncate: bool):
    """batch -> (logits, {layer: activations}); truncated: (None, activations)."""
    def forward(batch: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        if not layers:
            return (rewrite.module(batch) if relu else graph(batch)), {}
        if truncate:
            return None, dict(zip(layers, rewrite.module(batch)))
        logits, *outputs = rewrite.module(batch)
        return logits, dict(zip(layers, outputs))
    return forward


def _objective(targets: list[Target], logits: torch.Tensor | None,
               activations: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n,) per image: for a class, its logit plus its log-probability (which fades once the class
    dominates, so the logit alone keeps pushing); for a channel, its mean activation."""
    log_probabilities = None if logits is None else logits.float().log_softmax(dim=1)
    values = []
    for row, target in enumerate(targets):
        if target.layer is None:
            values.append(logits[row, target.index] + log_probabilities[row, target.index])
        else:
            values.append(_channel_mean(activations[target.layer][row], target.index))
    return torch.stack(values)


def _scores(targets: list[Target], logits: torch.Tensor | None,
            activations: dict[str, torch.Tensor]) -> torch.Tensor:
    probabilities = None if logits is None else logits.float().softmax(dim=1)
    return torch.stack([probabilities[row, t.index] if t.layer is None
                        else _channel_mean(activations[t.layer][row], t.index) for row, t in enumerate(targets)])


def _channel_mean(activation: torch.Tensor, channel: int) -> torch.Tensor:
    return activation[channel].float().mean() if activation.dim() > 1 else activation[channel].float()


def _scale_of(objective: torch.Tensor) -> torch.Tensor:
    """Ties the total-variation weight to the objective's size, so it means the same for logits and activations."""
    return objective.detach().abs().mean().clamp(min=1.0)


def _identity(images: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, 3, device=images.device).expand(len(images), 2, 3)


SHOWN_DEPTHS = (0.2, 0.6, 1.0)   # early, middle and deepest layer with channels worth showing
SHOWN_CHANNELS = 6              # per layer; activation maximization and top patches show the same ones


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


def image_step_cost(graph: ModelGraph) -> float:
    """What one image costs per optimization step (forward and backward), in multiply-add equivalents:
    the multiply-adds, plus the elementwise work on every activation and on the input image, plus a fixed
    overhead. The weights are fitted on CPU timings of small to ResNet-18-sized nets; small nets with
    large maps spend most of their time on the elementwise part."""
    elements = sum(math.prod(layer.shape) for layer in graph.leaf_layers() if layer.is_spatial)
    pixels = graph.input_size[1] * graph.input_size[2]
    return macs_per_image(graph) + 32 * elements + 2000 * pixels + 12e6
