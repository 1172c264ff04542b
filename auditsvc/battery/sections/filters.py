"""Filters: the first convolution's weights as images; weight statistics of deeper layers."""

from __future__ import annotations

import numpy as np
import torch

from .. import figures
from ..context import AuditContext
from ..registry import Section, register
from ..results import Check, Figure, Finding, SectionResult, Table, check_status

MAX_FILTERS = 64
DEAD_FILTER_SHARE = 0.25


@register
class Filters(Section):
    name = "filters"
    title = "Filters"
    order = 30
    appendix = True
    intro = ("The weights of the first convolution, drawn as small images, and the spread of the weights "
             "of every deeper layer. A well-trained first layer usually shows smooth edge, colour and "
             "blob detectors; noisy or blank filters point to undertraining or dead units.")

    def run(self, context: AuditContext) -> SectionResult:
        graph = context.graph
        weighted = [(layer, graph.layer_weight(layer)) for layer in graph.leaf_layers()
                    if layer.type in ("Conv2d", "Linear") or layer.type.startswith("Conv")]
        weighted = [(layer, w) for layer, w in weighted if w is not None and w.dim() in (2, 4)]
        if not weighted:
            return self.result(status="skipped", reason="the graph has no convolution or linear weights")
        first_conv = next(((l, w) for l, w in weighted if w.dim() == 4), None)
        blocks = []
        if first_conv:
            blocks.append(_first_layer_figure(*first_conv))
        stats = [_stats(layer.name, w) for layer, w in weighted]
        blocks.append(_stats_figure(stats))
        blocks.append(Table(["layer", "shape", "mean", "std", "mean |w|", "dead filters"],
                            [[s["layer"], s["shape"], f"{s['mean']:+.3g}", f"{s['std']:.3g}",
                              f"{s['mean_abs']:.3g}", f"{s['dead']} of {s['filters']}"] for s in stats],
                            "A dead filter has all weights (near) zero: it passes nothing on.", "Weight statistics"))
        findings = [_dead_filter_finding(s) for s in stats if s["dead"] > DEAD_FILTER_SHARE * s["filters"]]
        deadest = max((s["dead"] / max(s["filters"], 1) for s in stats), default=0.0)
        checks = [Check("Dead filters (all-zero weights) in any layer", round(deadest, 4), f"{deadest:.0%}",
                        f"warns above {DEAD_FILTER_SHARE:.0%} of a layer's filters",
                        *check_status(findings, "health.dead_filters"))]
        return self.result(blocks=blocks, findings=findings, checks=checks,
                           data={"first_layer": first_conv[0].name if first_conv else None,
                                 "layers": [{k: v for k, v in s.items()} for s in stats]})


def _first_layer_figure(layer, weight: torch.Tensor) -> Figure:
    weight = weight.detach().float().cpu()[:MAX_FILTERS]
    if weight.shape[1] == 3:
        tiles = weight.permute(0, 2, 3, 1).numpy()
    else:
        tiles = weight[:, 0].numpy()  # grey input or depthwise: one plane per filter
    tiles = np.stack([_scale(t) for t in tiles])
    scale = max(1, 24 // tiles.shape[1])  # draw 3x3 kernels big enough to see
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    mosaic = figures.tile(tiles, columns=min(8, len(tiles)), pad=2)
    side = figures.PAGE_WIDTH_IN * 0.55
    fig, ax = figures.plt.subplots(figsize=(side, side * mosaic.shape[0] / mosaic.shape[1]))
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, interpolation="nearest")
    ax.axis("off")
    shape = "x".join(map(str, weight.shape[1:]))
    caption = (f"The {len(weight)} filters of {layer.name} ({shape} each), each scaled to its own range"
               f"{'; colour shows which input channel a weight reads' if weight.shape[1] == 3 else ''}. "
               "Look for smooth oriented edges and colour blobs; salt-and-pepper noise means the layer "
               "barely learned.")
    return Figure(figures.to_png(fig), caption, f"First-layer filters: {layer.name}", width="55%")


def _scale(tile: np.ndarray) -> np.ndarray:
    low, high = tile.min(), tile.max()
    return (tile - low) / (high - low) if high > low else np.full_like(tile, 0.5)


def _stats(name: str, weight: torch.Tensor) -> dict:
    w = weight.detach().float().cpu()
    per_filter = w.flatten(1).abs().amax(dim=1)
    dead = int((per_filter <= 1e-6 * max(float(w.abs().max()), 1e-12)).sum()) if w.abs().max() > 0 else len(w)
    return {"layer": name, "shape": "x".join(map(str, w.shape)), "mean": float(w.mean()), "std": float(w.std()),
            "mean_abs": float(w.abs().mean()), "filters": int(w.shape[0]), "dead": dead}


def _stats_figure(stats: list[dict]) -> Figure:
    fig, ax = figures.plt.subplots(figsize=(figures.PAGE_WIDTH_IN * 0.8, 2.2))
    x = np.arange(len(stats))
    ax.plot(x, [s["std"] for s in stats], marker="o", markersize=3, label="std")
    ax.plot(x, [s["mean_abs"] for s in stats], marker="s", markersize=3, label="mean |w|")
    ax.set_yscale("log")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("weight scale")
    if len(stats) <= 24:
        ax.set_xticks(x, [s["layer"] for s in stats], rotation=60, ha="right", fontsize=6)
    ax.legend(frameon=False)
    caption = ("Scale of the weights through depth. Smooth curves are normal; a layer far off the trend "
               "(orders of magnitude) points to a training or export problem.")
    return Figure(figures.to_png(fig), caption, "Weight scale by layer")


def _dead_filter_finding(stats: dict) -> Finding:
    return Finding("health.dead_filters", "health", "warn", f"Many dead filters in {stats['layer']}",
                   f"{stats['dead']} of {stats['filters']} filters of {stats['layer']} have all-zero weights.",
                   {"layer": stats["layer"], "dead": stats["dead"], "filters": stats["filters"]})
