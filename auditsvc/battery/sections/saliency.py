"""Saliency: gradient, guided backprop, deconvnet, SmoothGrad, integrated gradients, Grad-CAM."""

from __future__ import annotations

import numpy as np

from .. import figures
from ..context import AuditContext
from ..methods.attribution import METHODS
from ..registry import Section, register
from ..results import Figure, SectionResult, Text

FIGURE_IMAGES = 8


@register
class Saliency(Section):
    name = "saliency"
    title = "Saliency"
    order = 50
    intro = ("Which pixels the predicted class's score depends on, by six methods. Each panel overlays "
             "the attribution on the image (red = strong). Where a model has learned the object, "
             "attribution sits on the object; attribution spread over the sky, the border or the "
             "background is a sign the model uses something else.")

    def run(self, context: AuditContext) -> SectionResult:
        attributions = context.sample_attributions
        blocks = [_figure(context, attributions.maps)]
        if not context.graph.relu_count:
            blocks.insert(0, Text("The model has no ReLU, so guided backprop and deconvnet (defined by how they "
                                  "pass gradients through ReLUs) do not apply and are left out.", "note"))
        return self.result(blocks=blocks, data={
            "methods": list(attributions.maps), "grad_cam_layer": context.grad_cam_layer,
            "images": len(attributions.indices),
            "method_seconds": {k: round(v, 3) for k, v in attributions.seconds.items()}})


HEAT = figures.ColourScale("jet", "attribution, scaled")


def _figure(context: AuditContext, maps: dict[str, np.ndarray]) -> Figure:
    shown = context.sample_indices[:FIGURE_IMAGES]
    pixels = context.probe.pixels(shown, context.spec)
    boxes = context.probe.boxes(context.spec)[shown]
    methods = list(maps)
    cells = [[figures.Panel(figures.as_rgb(pixels[row]), box=boxes[row])]
             + [figures.heat_panel(maps[m][row], pixels=pixels[row], box=boxes[row]) for m in methods]
             for row in range(len(pixels))]
    labels = [context.sample_label(i, attributes=True) for i in shown]
    fig = figures.image_grid(cells, row_labels=labels, col_labels=["image"] + [METHODS[m].label for m in methods],
                             label_width=1.3, scale=HEAT)
    caption = ("Rows: probe images, labelled true class (-> predicted class), the predicted class's "
               "probability and the image's manifest attributes; every map explains the predicted class. Each map is scaled to its own 99th percentile "
               "(1 on the colour bar) and blended over the greyed image, where low values stay grey. Gradient and "
               "SmoothGrad show sensitivity, guided backprop and deconvnet sharpen it, integrated gradients (black "
               f"baseline) splits the score among pixels, Grad-CAM ({context.grad_cam_layer}) shows the coarse "
               "region. Look for whether the methods agree on the object or on something else. "
               + figures.panel_legend(cells))
    return Figure(figures.to_png(fig), caption.strip(), "Saliency maps by method")
