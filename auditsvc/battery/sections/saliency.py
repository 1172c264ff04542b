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


def _figure(context: AuditContext, maps: dict[str, np.ndarray]) -> Figure:
    shown = context.sample_indices[:FIGURE_IMAGES]
    pixels = context.probe.pixels(shown, context.spec)
    methods = list(maps)
    cells = [[figures.as_rgb(pixels[row])] + [figures.overlay(pixels[row], figures.normalize_map(maps[m][row]))
                                              for m in methods] for row in range(len(pixels))]
    labels = [context.sample_label(i) for i in shown]
    fig = figures.image_grid(cells, row_labels=labels, col_labels=["image"] + [METHODS[m].label for m in methods],
                             label_width=1.3)
    caption = ("Rows: probe images, labelled true class (-> predicted class) and the predicted class's "
               "probability; every map explains the predicted class. Each map is scaled to its own 99th "
               "percentile. Gradient and SmoothGrad show sensitivity, guided backprop and deconvnet sharpen "
               "it, integrated gradients (black baseline) splits the score among pixels, Grad-CAM "
               f"({context.grad_cam_layer}) shows the coarse region. Look for whether the methods "
               "agree on the object or on something else.")
    return Figure(figures.to_png(fig), caption, "Saliency maps by method")
