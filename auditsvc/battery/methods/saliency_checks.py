"""Can a saliency method be trusted? Two checks, as plain functions on tensors and graphs.

Model randomization (Adebayo et al. 2018, "Sanity checks for saliency maps"): re-initialize the
weights of the top layers, cascading from the output, and see whether a method's maps change. A
method whose maps survive the model being destroyed shows the input (edges), not the model.
`randomized_graph` builds each randomized copy from the audited `ModelGraph` without touching it.

Deletion and insertion (Petsiuk et al. 2018, RISE): remove the pixels a map ranks highest first
and watch the class probability fall (deletion: a fast fall, a low area under the curve, is
good), or reveal them first on a blurred canvas and watch it rise (insertion: a high area is
good); a random ranking is the baseline a useful map must beat.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import fx

from ..model.fast import CONV, fold_batch_norm, get_attr
from ..model.graph import ModelGraph
from ..progress import SectionProgress, no_progress

WEIGHT_OPS = CONV | {torch.ops.aten.linear.default}


# --- model randomization ------------------------------------------------------------------

@dataclass(frozen=True)
class WeightedLayer:
    name: str                 # module path, from the weight's name ("layer4.1.conv2")
    weight: str               # get_attr target of the weight
    bias: str | None          # and of the bias, if any
    macs: int                 # multiply-accumulates per image


def weighted_layers(graph: ModelGraph) -> list[WeightedLayer]:
    """Convolutions and linear layers with their weights as graph attributes, from the output backward."""
    found = []
    for node in graph.module.graph.nodes:
        if node.target not in WEIGHT_OPS or len(node.args) < 2 or not _is_attr(node.args[1]):
            continue
        weight = node.args[1].target
        bias = node.args[2].target if len(node.args) > 2 and _is_attr(node.args[2]) else None
        value = node.meta.get("val")
        positions = math.prod(value.shape[2:]) if isinstance(value, torch.Tensor) and value.dim() > 2 else 1
        macs = get_attr(graph.module, weight).numel() * positions
        found.append(WeightedLayer(weight.removesuffix(".weight"), weight, bias, macs))
    return found[::-1]


# A batch whose largest activation exceeds about this many bytes is slower per image on a CPU core (the
# maps no longer stay in cache): ConvNeXt-tiny at 224 px, one thread, forward+backward 0.40 s per image in
# batches of 8 against 0.55 s in batches of 32 (its largest map is 4.8 MB per image); a ResNet-18 at 128 px
# (1 MB) runs as fast per image in batches of 8 to 64.
CACHE_FRIENDLY_BYTES = 40 * 2**20


def efficient_batch(graph: ModelGraph, most: int) -> int:
    """Images per pass, at most `most`, small enough that the largest activation of the batch stays
    within CACHE_FRIENDLY_BYTES."""
    largest = max((math.prod(layer.shape) for layer in graph.layers if layer.leaf), default=1) * 4
    return int(max(1, min(most, CACHE_FRIENDLY_BYTES // max(largest, 1))))


def forward_macs(graph: ModelGraph) -> int:
    """Multiply-accumulates of one forward pass of one image in the convolutions and linear layers."""
    return sum(layer.macs for layer in weighted_layers(graph))


def random_weights(graph: ModelGraph, layers: Sequence[WeightedLayer], generator: torch.Generator) -> dict:
    """A fresh draw for each layer's weight and bias: Gaussian, zero mean, the original tensor's spread.

    Keeping each tensor's scale keeps activations in the range the layers after it (and their
    BatchNorm statistics) expect, so the copy is a random network, not a numerically broken one."""
    drawn = {}
    for layer in layers:
        for target in filter(None, (layer.weight, layer.bias)):
            original = get_attr(graph.module, target).detach()
            spread = original.float().std() if original.numel() > 1 else original.float().abs().max()
            noise = torch.randn(original.shape, generator=generator)
            drawn[target] = (noise * spread).to(original.dtype).to(original.device)
    return drawn


def randomized_graph(graph: ModelGraph, replacements: dict[str, torch.Tensor]) -> ModelGraph:
    """A copy of `graph` whose named weights are replaced; every other tensor is shared, not copied.

    The copy has the same layers and node names, so the attribution functions (which call the
    graph, rewrite its fast copy and tap its layers) work on it unchanged."""
    module = graph.module
    new_graph = copy.deepcopy(module.graph)
    root = {node.target: replacements.get(node.target, get_attr(module, node.target))
            for node in new_graph.nodes if node.op in ("get_attr", "call_module")}
    clone = copy.copy(graph)
    clone.module = fx.GraphModule(root, new_graph)
    clone.fast, clone._fast_names = fold_batch_norm(clone.module)
    return clone


def _is_attr(arg) -> bool:
    return isinstance(arg, fx.Node) and arg.op == "get_attr"


# --- map similarity -----------------------------------------------------------------------

def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' absolute values; 0 when either map is constant."""
    a, b = np.abs(a).ravel(), np.abs(b).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity (Wang et al. 2004) of two maps' absolute values, each scaled to [0, 1]."""
    a, b = (_unit(np.abs(m).astype(np.float64)) for m in (a, b))
    size = min(window, *a.shape)
    mean_a, mean_b = ndimage.uniform_filter(a, size), ndimage.uniform_filter(b, size)
    var_a = ndimage.uniform_filter(a * a, size) - mean_a ** 2
    var_b = ndimage.uniform_filter(b * b, size) - mean_b ** 2
    covariance = ndimage.uniform_filter(a * b, size) - mean_a * mean_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)
             / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(index.mean())


def _unit(values: np.ndarray) -> np.ndarray:
    top = values.max()
    return values / top if top > 0 else values


# --- deletion and insertion ---------------------------------------------------------------

def pixel_ranks(maps: np.ndarray, seed: int) -> np.ndarray:
    """(n, H, W) maps -> (n, H*W) rank of every pixel, 0 = highest attribution; ties in random order.

    Random tie-breaking matters: flat regions (Grad-CAM's zeros) would otherwise go in raster
    order, top rows first, which is itself a ranking."""
    rng = np.random.default_rng(seed)
    flat = np.nan_to_num(np.abs(maps.reshape(len(maps), -1)).astype(np.float64))
    ranks = np.empty(flat.shape, dtype=np.int64)
    for i, values in enumerate(flat):
        order = np.lexsort((rng.random(len(values)), -values))
        ranks[i, order] = np.arange(len(values))
    return ranks


def random_ranks(count: int, pixels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(pixels) for _ in range(count)])


def blurred(inputs: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (n, C, H, W) per channel, edges replicated: insertion's starting canvas."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    out = F.pad(inputs, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def reveal_curves(probability: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], start: torch.Tensor,
                  end: torch.Tensor, ranks: np.ndarray, targets: torch.Tensor, fractions: np.ndarray,
                  chunk: int, progress: SectionProgress = no_progress) -> np.ndarray:
    """Target-class probability as pixels switch from `start` to `end` in rank order.

    start, end: (n, C, H, W); ranks: (n, orderings, H*W); fractions: increasing from 0 to 1, the
    shares of pixels switched; returns (n, orderings, len(fractions)). Deletion: start = the image, end = the
    baseline; insertion: start = the blurred image, end = the image. Both ends are the same for
    every ordering, so they are evaluated once per image."""
    n, orderings, pixels = ranks.shape
    height, width = start.shape[2:]
    counts = np.round(np.asarray(fractions) * pixels).astype(np.int64)
    steps = len(counts) - 1
    curves = np.zeros((n, orderings, steps + 1))
    with torch.inference_mode():
        curves[:, :, 0] = _batched(probability, start, targets, chunk)[:, None]
        curves[:, :, -1] = _batched(probability, end, targets, chunk)[:, None]
        jobs = [(i, o, s) for i in range(n) for o in range(orderings) for s in range(1, steps)]
        rank_tensor = torch.as_tensor(ranks, device=start.device)
        for first in range(0, len(jobs), chunk):
            image, ordering, step = (torch.as_tensor(c, device=start.device) for c in zip(*jobs[first:first + chunk]))
            switched = rank_tensor[image, ordering] < torch.as_tensor(counts, device=start.device)[step, None]
            mask = switched.view(-1, 1, height, width)
            batch = torch.where(mask, end[image], start[image])
            values = probability(batch, targets[image]).float().cpu().numpy()
            curves[image.cpu().numpy(), ordering.cpu().numpy(), step.cpu().numpy()] = values
            progress((first + chunk) / len(jobs))
    return curves


def _batched(probability, inputs: torch.Tensor, targets: torch.Tensor, chunk: int) -> np.ndarray:
    return np.concatenate([probability(inputs[i:i + chunk], targets[i:i + chunk]).float().cpu().numpy()
                           for i in range(0, len(inputs), chunk)])


def class_probability(graph: ModelGraph) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def probability(batch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.softmax(graph(batch).float(), dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    return probability


def switch_fractions(steps: int) -> np.ndarray:
    """0 to 1 in `steps` steps, dense at the start: (i / steps)^2. The first few percent of the
    pixels decide most curves, and even steps of 1/steps would blur that into one step."""
    return (np.arange(steps + 1) / steps) ** 2


def area_under(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under curves sampled at `fractions` of [0, 1] (trapezoid rule), over the last axis."""
    return np.trapezoid(curves, x=fractions, axis=-1)
