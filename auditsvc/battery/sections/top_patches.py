"""Top-activating patches: for a few channels, the probe image regions that activate them most."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import figures
from ..context import AuditContext
from ..figures import Cell, mosaic
from ..model.receptive_field import ReceptiveField, receptive_fields
from ..registry import Section, register
from ..results import Figure, SectionResult

TOP = 8


@dataclass(frozen=True)
class Hit:
    value: float
    image: int
    row: int          # position of the maximum in the layer's map
    col: int


@register
class TopPatches(Section):
    name = "top_patches"
    title = "Top-activating patches"
    order = 75
    appendix = True
    intro = ("For a few channels of early, middle and deep layers, the regions of probe images that "
             "activate each channel most. Every image contributes its strongest location; the patch shown is "
             "the part of the input that unit can see (its receptive field, computed from the model graph). "
             "Patches that share an object part suggest the channel detects that part; patches that share "
             "a colour, the sky, or a position in the frame suggest it detects that instead.")

    def run(self, context: AuditContext) -> SectionResult:
        if not context.feature_channels:
            return self.result(status="skipped", reason="the model has no layer with a spatial output")
        fields = receptive_fields(context.graph)
        channels = {layer: shown for layer, shown in context.feature_channels.items() if layer in fields}
        if not channels:
            return self.result(status="skipped", reason="no receptive field could be read from the model graph")
        layers = list(channels)
        hits = top_hits(context, channels, TOP)
        needed = sorted({h.image for per_layer in hits.values() for per_channel in per_layer for h in per_channel})
        pixels = dict(zip(needed, context.probe.pixels(needed, context.spec))) if needed else {}
        blocks = [_figure(context, layer, fields[layer], channels[layer], hits[layer], pixels) for layer in layers]
        data = {layer: {"receptive_field": fields[layer].as_dict(),
                        "map": list(context.graph.layer(layer).shape[1:]),
                        "channels": [{"channel": c, "top": [_hit_json(context, fields[layer], h) for h in per_channel]}
                                     for c, per_channel in zip(channels[layer], hits[layer])],
                        "border_share": _border_share(context, layer, hits[layer])}
                for layer in layers}
        return self.result(blocks=blocks, data={"layers": data, "top": TOP})


def top_hits(context: AuditContext, channels: dict[str, list[int]], top: int) -> dict[str, list[list[Hit]]]:
    """Per layer and channel, the `top` images whose strongest location activates the channel most,
    strongest first; one pass over the probe set, a small heap per channel."""
    layers = list(channels)
    heaps = {layer: [[] for _ in channels[layer]] for layer in layers}
    with torch.inference_mode(), context.graph.rewrite(outputs=layers) as rewrite:
        for indices, batch in context.probe.batches(context.spec, context.options.batch_size):
            _, *outputs = rewrite.module(batch.to(context.device))
            for layer, output in zip(layers, outputs):
                _push(heaps[layer], output, channels[layer], indices, top)
    # Heap entries are (value, -image, row, col): on equal values the earlier image ranks first.
    return {layer: [[Hit(value, -negative, row, col) for value, negative, row, col in sorted(heap, reverse=True)]
                    for heap in heaps[layer]] for layer in layers}


def _push(heaps: list[list[tuple]], output: torch.Tensor, channels: list[int], indices: list[int], top: int) -> None:
    maps = output[:, channels].float()
    width = maps.shape[3]
    flat = torch.nan_to_num(maps.flatten(2), nan=-torch.inf)
    values, positions = flat.max(dim=2)                                  # (batch, channels)
    best = values.topk(min(top, len(indices)), dim=0)                    # this batch's candidates per channel
    for k, heap in enumerate(heaps):
        for value, row in zip(best.values[:, k].tolist(), best.indices[:, k].tolist()):
            position = int(positions[row, k])
            hit = (float(value), -indices[row], position // width, position % width)
            if len(heap) < top:
                heapq.heappush(heap, hit)
            elif hit > heap[0]:
                heapq.heapreplace(heap, hit)


def patch(pixels: np.ndarray, field: ReceptiveField, row: int,
          col: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The image region unit (row, col) sees, clipped to the image, and its (top, left, bottom, right)."""
    top, left, bottom, right = field.clipped_window(row, col, pixels.shape[0], pixels.shape[1])
    return pixels[top:bottom, left:right], (top, left, bottom, right)


def _figure(context: AuditContext, layer: str, field: ReceptiveField, channels: list[int], hits: list[list[Hit]],
            pixels: dict[int, np.ndarray]) -> Figure:
    c, h, w = context.graph.layer(layer).shape
    image_side = max(context.spec.height, context.spec.width)
    mark = max(field.size) >= image_side / 2
    cells = []
    for per_channel in hits:
        row = []
        for hit in per_channel:
            crop, (top, left, _, _) = patch(pixels[hit.image], field, hit.row, hit.col)
            cy, cx = field.center(hit.row, hit.col)
            label = figures.shorten(context.classes[context.labels[hit.image]], 10)
            row.append(Cell(figures.as_rgb(crop), f"{hit.value:.2f} {label}", (cy - top, cx - left)))
        cells.append(row)
    fig = mosaic(cells, [f"channel {ch}" for ch in channels], field.jump if mark else None,
                 cell_inches=(figures.PAGE_WIDTH_IN - 0.9) / TOP)
    whole = field.size[0] >= image_side or field.size[1] >= image_side
    marked = (" The red square marks where the unit sits (one step of its map)." if mark else "")
    scope = (" This layer's units see more than the whole image, so the patches are nearly whole images: what "
             "matters is what they have in common and where the red square falls." if whole else "")
    caption = (f"Layer {layer} ({c} channels, {h}x{w} map; receptive field {field.describe()}). Rows: the "
               "channels with the largest mean activation on the probe set (as in 'Activation maximization'); "
               f"columns: the {TOP} probe images whose strongest location activates the channel most, cropped to "
               "what that unit sees (cut at the image border, so a narrower patch lies at an edge), strongest "
               f"first. Under each patch: the activation and the image's true class.{marked}{scope} Look for "
               "what the patches of a row share: an object part is expected in deep layers; the same colour, "
               "sky, texture, or the same corner of the frame means the channel responds to that, and the "
               "model can decide from it.")
    return Figure(figures.to_png(fig), caption, f"Top-activating patches of {layer}")


def _hit_json(context: AuditContext, field: ReceptiveField, hit: Hit) -> dict:
    window = field.clipped_window(hit.row, hit.col, context.spec.height, context.spec.width)
    value = round(hit.value, 4) if math.isfinite(hit.value) else None
    return {"image": context.probe.images[hit.image].path, "value": value, "position": [hit.row, hit.col],
            "window": list(window)}


def _border_share(context: AuditContext, layer: str, hits: list[list[Hit]]) -> float:
    """Share of the top locations on the outermost ring of the map (high: the frame, not the scene)."""
    _, h, w = context.graph.layer(layer).shape
    flat = [hit for per_channel in hits for hit in per_channel]
    if not flat or h < 3 or w < 3:
        return 0.0
    on_border = sum(hit.row in (0, h - 1) or hit.col in (0, w - 1) for hit in flat)
    return round(on_border / len(flat), 3)
