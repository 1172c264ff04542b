"""Filters: the first convolution's weights as images; weight statistics of deeper layers."""

from __future__ import annotations

import numpy as np
import torch

from .. import figures
from ..context import AuditContext
from ..registry import Section, register
from ..results import Check, Figure, Finding, SectionResult, Table, check_status

MAX_FILTERS = 32
PLANES_PER_ROW = 18   # input-channel planes side by side in a row: 6 colour filters, or 8 grey ones
MAX_PER_ROW = 8
CHANNEL_NAMES = {1: ("",), 2: ("1", "2"), 3: ("R", "G", "B")}
DEAD_FILTER_SHARE = 0.25


@register
class Filters(Section):
    name = "filters"
    title = "Filters"
    order = 30
    appendix = True
    intro = ("The weights of the first convolution, drawn weight by weight, and the spread of the weights "
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
    weight = weight.detach().float().cpu()
    shown = weight[:MAX_FILTERS].numpy()
    channels = CHANNEL_NAMES.get(shown.shape[1])
    if channels is None:   # many input channels: the first plane only
        shown, channels = shown[:, :1], CHANNEL_NAMES[1]
    per_row = max(1, min(MAX_PER_ROW, PLANES_PER_ROW // shown.shape[1]))
    fig = figures.filter_grid(shown, channels, per_row)
    count = (f"the first {len(shown)} of the {len(weight)} filters" if len(shown) < len(weight)
             else f"the {len(weight)} filters")
    planes = {3: "each filter's weights on the red, green and blue input, side by side",
              2: "each filter's weights on its two input channels, side by side",
              1: "each filter's weights" if weight.shape[1] == 1 else
                 f"each filter's weights on its first input channel (of {weight.shape[1]})"}[shown.shape[1]]
    caption = (f"{count.capitalize()} of {layer.name} ({'x'.join(map(str, weight.shape[1:]))} each): {planes}, one "
               "square per weight, on one colour scale for all (blue negative, white zero, red positive; largest "
               f"|w| {float(np.abs(shown).max()):.3g}). Look for smooth oriented edges (a red side and a blue side), "
               "centre-surround blobs and colour opponents (one input red, another blue); salt-and-pepper squares "
               "mean the layer barely learned, an all-white filter is dead.")
    return Figure(figures.to_png(fig), caption, f"First-layer filters: {layer.name}")


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
