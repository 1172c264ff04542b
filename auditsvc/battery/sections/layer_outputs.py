"""Layer outputs: feature maps of layers from early to deep, for sample images."""

from __future__ import annotations

import numpy as np
import torch

from .. import figures
from ..context import AuditContext
from ..model.graph import Layer
from ..registry import Section, register
from ..results import Figure, SectionResult

LAYERS = 4
CHANNELS = 8
IMAGES = 2


def pick_layers(layers: list[Layer], count: int = LAYERS) -> list[Layer]:
    """Convolutions (else any spatial layers) spread evenly from the first to the deepest."""
    candidates = [l for l in layers if l.is_conv and l.is_spatial and l.leaf] or [l for l in layers if l.is_spatial]
    if len(candidates) <= count:
        return candidates
    positions = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return [candidates[i] for i in sorted(set(positions))]


@register
class LayerOutputs(Section):
    name = "layer_outputs"
    title = "Layer outputs"
    order = 40
    appendix = True
    intro = ("What the hidden layers compute for a given image: the most active feature maps of layers "
             "from the first convolution to the deepest. Early maps follow edges and colours; deep maps "
             "are coarse and should light up on the parts of the image that matter for the class.")

    def run(self, context: AuditContext) -> SectionResult:
        layers = pick_layers(context.graph.layers)
        if not layers:
            return self.result(status="skipped", reason="the model has no layer with a spatial output")
        # One image per class where possible: the first samples are spread over classes.
        indices = context.sample_indices[:IMAGES]
        inputs = context.probe.tensors(indices, context.spec).to(context.device)
        with torch.inference_mode():
            _, outputs = context.graph.activations(inputs, [l.name for l in layers])
        pixels = context.probe.pixels(indices, context.spec)
        blocks = [_figure(context, index, pixels[row], {l.name: outputs[l.name][row].float().cpu() for l in layers})
                  for row, index in enumerate(indices)]
        return self.result(blocks=blocks, data={"layers": [l.name for l in layers], "images": len(indices)})


ACTIVATION = figures.ColourScale("viridis", "activation, scaled")


def _figure(context: AuditContext, index: int, pixels: np.ndarray, maps: dict[str, torch.Tensor]) -> Figure:
    cells, labels = [], []
    for name, activation in maps.items():
        strongest = activation.flatten(1).mean(dim=1).argsort(descending=True)[:CHANNELS]
        row = [figures.as_rgb(pixels)] if not cells else [None]
        row += [_panel(activation[c].numpy()) for c in strongest]
        cells.append(row)
        c, h, w = activation.shape
        labels.append(f"{name}\n{c} maps {h}x{w}")
    fig = figures.image_grid(cells, row_labels=labels, col_labels=["image"] + [f"#{i + 1}" for i in range(CHANNELS)],
                             label_width=1.4, scale=ACTIVATION)
    caption = (f"Image: {context.sample_label(index)} ({context.probe.images[index].path}). Each row is a layer, "
               f"early to deep; its {CHANNELS} most active channels for this image, each scaled from its own lowest "
               "to its highest value (0 and 1 on the colour bar; bright = strong). Look at where deep layers "
               "respond: on the object, or on the background. "
               + figures.panel_legend(cells, "that channel's map is the same everywhere for this image"))
    return Figure(figures.to_png(fig), caption.strip(), f"Feature maps of {context.probe.images[index].path}")


def _panel(plane: np.ndarray) -> figures.Panel:
    """The map from its lowest (0) to its highest value (1); words where it is the same everywhere."""
    low, high = plane.min(), plane.max()
    return figures.Panel((plane - low) / (high - low)) if high > low else figures.Panel(note=figures.flat_words(plane))
