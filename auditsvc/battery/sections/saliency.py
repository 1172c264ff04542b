"""Saliency: gradient, guided backprop, deconvnet, SmoothGrad, integrated gradients, Grad-CAM."""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import figures
from ..methods import attribution
from ..context import AuditContext
from ..registry import Section, register
from ..results import Figure, SectionResult, Text

METHODS = {
    "gradient": "Gradient",
    "guided_backprop": "Guided\nbackprop",
    "deconvnet": "Deconvnet",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated\ngradients",
    "grad_cam": "Grad-CAM",
}
RELU_METHODS = ("guided_backprop", "deconvnet")
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
        inputs = context.sample_batch().requires_grad_(False)
        targets = torch.as_tensor(context.outputs.predictions[context.sample_indices], device=context.device)
        maps, seconds = compute_maps(context, inputs, targets)
        context.cache["saliency_maps"] = {"indices": list(context.sample_indices), "targets": targets.cpu(), "maps": maps}
        blocks = [_figure(context, maps)]
        if not context.graph.relu_count:
            blocks.insert(0, Text("The model has no ReLU, so guided backprop and deconvnet (defined by how they "
                                  "pass gradients through ReLUs) do not apply and are left out.", "note"))
        layer = context.cache["grad_cam_layer"]
        return self.result(blocks=blocks, data={"methods": list(maps), "grad_cam_layer": layer, "images": len(inputs),
                                                "method_seconds": {k: round(v, 3) for k, v in seconds.items()}})


def compute_maps(context: AuditContext, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[dict, dict]:
    """Every applicable method's (n, H, W) map for `inputs`, and the seconds each took."""
    options, graph, spec = context.options, context.graph, context.spec
    stdev = options.smoothgrad_noise * float(np.mean([1 / s for s in spec.std]))  # fraction of the input range
    black = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)], device=inputs.device).view(1, -1, 1, 1)
    layer = graph.last_spatial_layer().name
    context.cache["grad_cam_layer"] = layer
    chunk = options.batch_size
    runs = {
        "gradient": lambda x, t: attribution.gradient(graph, x, t),
        "guided_backprop": lambda x, t: attribution.guided_backprop(graph, x, t),
        "deconvnet": lambda x, t: attribution.deconvnet(graph, x, t),
        "smoothgrad": lambda x, t: attribution.smoothgrad(graph, x, t, samples=options.smoothgrad_samples,
                                                          stdev=stdev, chunk=chunk,
                                                          generator=context.generator("smoothgrad")),
        "integrated_gradients": lambda x, t: attribution.integrated_gradients(graph, x, t, baseline=black,
                                                                              steps=options.ig_steps, chunk=chunk),
        "grad_cam": lambda x, t: attribution.grad_cam(graph, x, t, layer),
    }
    if not graph.relu_count:
        for method in RELU_METHODS:
            runs.pop(method)
    maps, seconds = {}, {}
    for method, run in runs.items():
        started = time.perf_counter()
        parts = [attribution.heatmap(run(inputs[i:i + chunk], targets[i:i + chunk])).cpu()
                 for i in range(0, len(inputs), chunk)]
        maps[method] = torch.cat(parts).numpy()
        seconds[method] = time.perf_counter() - started
    return maps, seconds


def _figure(context: AuditContext, maps: dict[str, np.ndarray]) -> Figure:
    shown = context.sample_indices[:FIGURE_IMAGES]
    pixels = context.probe.pixels(shown, context.spec)
    methods = list(maps)
    cells = [[figures.as_rgb(pixels[row])] + [figures.overlay(pixels[row], figures.normalize_map(maps[m][row]))
                                              for m in methods] for row in range(len(pixels))]
    labels = [context.sample_label(i) for i in shown]
    fig = figures.image_grid(cells, row_labels=labels, col_labels=["image"] + [METHODS[m] for m in methods],
                             label_width=1.3)
    caption = ("Rows: probe images, labelled true class (-> predicted class) and the predicted class's "
               "probability; every map explains the predicted class. Each map is scaled to its own 99th "
               "percentile. Gradient and SmoothGrad show sensitivity, guided backprop and deconvnet sharpen "
               "it, integrated gradients (black baseline) splits the score among pixels, Grad-CAM "
               f"({context.cache['grad_cam_layer']}) shows the coarse region. Look for whether the methods "
               "agree on the object or on something else.")
    return Figure(figures.to_png(fig), caption, "Saliency maps by method")
