"""Saliency: gradient, guided backprop, deconvnet, SmoothGrad, integrated gradients, Grad-CAM."""

from __future__ import annotations

import numpy as np

from .. import figures
from ..context import AuditContext
from ..methods.attribution import IG_TOLERANCE, METHODS
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
        data = {"methods": list(attributions.maps), "grad_cam_layer": context.grad_cam_layer,
                "images": len(attributions.indices),
                "method_seconds": {k: round(v, 3) for k, v in attributions.seconds.items()}}
        if "integrated_gradients" in attributions.per_image:
            ig = _ig_steps(context, attributions.per_image["integrated_gradients"])
            blocks.append(_ig_steps_text(ig))
            data["integrated_gradients"] = ig
        return self.result(blocks=blocks, data=data)


def _ig_steps(context: AuditContext, per_image: dict[str, list]) -> dict:
    """Per sample image, the steps integrated gradients took and its completeness error, the cap and the tolerance."""
    images = [{"index": index, "image": context.probe.images[index].path, "steps": steps,
               "completeness_error": float(f"{error:.4g}")}
              for index, steps, error in zip(context.sample_indices, per_image["steps"],
                                             per_image["completeness_error"])]
    return {"images": images, "max_steps": context.attribution_settings.ig_steps, "tolerance": IG_TOLERANCE}


def _ig_steps_text(ig: dict) -> Text:
    """One sentence on the steps and the worst completeness error; a note naming the images left above the tolerance."""
    steps = [image["steps"] for image in ig["images"]]
    errors = [image["completeness_error"] for image in ig["images"]]
    worst = max(errors, key=lambda e: np.inf if np.isnan(e) else e)
    used = (f"{steps[0]} steps for every image" if min(steps) == max(steps)
            else f"{min(steps)} to {max(steps)} steps per image (median {np.median(steps):g})")
    sentence = (f"Integrated gradients used {used}; the worst completeness error (how far the attributions' "
                f"sum is from the change in the score from the black image to the image) is {_percent(worst)}.")
    above = [image["image"] for image in ig["images"] if not image["completeness_error"] <= ig["tolerance"]]
    if not above:
        return Text(sentence)
    named = ", ".join(above[:3]) + (f" and {len(above) - 3} more" if len(above) > 3 else "")
    return Text(f"{sentence} {len(above)} of {len(steps)} images stayed above {ig['tolerance']:.0%} at the limit "
                f"of {ig['max_steps']} steps ({named}): their integrated-gradients maps are approximate.", "note")


def _percent(error: float) -> str:
    if np.isnan(error):
        return "unknown (scores along the path are not finite)"
    return "under 0.01%" if error < 1e-4 else f"{error:.2%}"


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
