"""Occlusion: grey out a sliding window and watch the predicted class's probability."""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import spearmanr

from .. import figures
from ..methods.incremental_occlusion import EXACT, Approximation, IncrementalOcclusion
from ..context import AuditContext
from ..progress import shares
from ..registry import Section, register
from ..results import Figure, SectionResult, Text

FIGURE_IMAGES = 8
MASK_KEEP = 0.25  # the grey mask leaves visible the top quarter of pixels by importance
MIN_DROP = 0.02   # a region whose hiding costs less probability than this does not matter
# Krypton's approximate mode as offered: adaptive drill-down. Projective-field thresholding is left out:
# on a residual net it dropped effects the skip connections carry (bench/occlusion_quality.py, README).
APPROXIMATE = Approximation(coarse=2, drill_share=0.25)
VISIBLE_DROP = 0.1   # a probability map whose largest drop is smaller looks uniform on the 0-1 colour scale


def window_and_stride(context: AuditContext) -> tuple[int, int]:
    side = min(context.spec.height, context.spec.width)
    window = context.options.occlusion_window or max(3, round(side / 8))
    stride = context.options.occlusion_stride or max(1, window // 2)
    return min(window, side), stride


@register
class OcclusionSection(Section):
    name = "occlusion"
    title = "Occlusion"
    order = 60
    intro = ("A grey square slides over each image; at each position the model's probability for its "
             "predicted class is measured again. Where the probability falls, the model needed that "
             "region. Unlike gradients, this measures what the model does when the evidence is gone.")

    def run(self, context: AuditContext) -> SectionResult:
        window, stride = window_and_stride(context)
        inputs = context.sample_batch()
        indices = context.sample_indices
        targets = torch.as_tensor(context.outputs.predictions[indices], device=context.device)
        spec = context.spec
        grey = torch.tensor([(0.5 - m) / s for m, s in zip(spec.mean, spec.std)], device=inputs.device).view(1, -1, 1, 1)
        started = time.perf_counter()
        step = context.options.batch_size
        batches = range(0, len(inputs), step)
        approximation = APPROXIMATE if context.options.occlusion_approximate else EXACT
        engine = IncrementalOcclusion(context.graph, window=window, stride=stride, approximation=approximation)
        drops = torch.cat([
            engine.attribute(inputs[i:i + step], targets[i:i + step], grey, chunk=step, progress=part)
            for i, part in zip(batches, shares(context.section_progress, [1] * len(batches)))
        ]).mean(dim=1).cpu().numpy()
        seconds = time.perf_counter() - started
        how = (f" Computed incrementally, with the same numbers as one whole forward pass per window position: "
               f"{engine.mode}.")
        error = None
        if not approximation.exact:
            error = approximation_error(context, engine, inputs[:1], targets[:1], grey, drops[0])
            how = (f" Computed incrementally and approximately: {engine.mode}. On the first sample image the "
                   f"approximate map's rank correlation with the exact one is {error['rank_correlation']:.3f}, "
                   f"its largest difference {error['max_abs_difference']:.4f}.")
        original = context.outputs.probabilities[indices, context.outputs.predictions[indices]]
        occluded = np.clip(original[:, None, None] - drops, 0, 1)
        shown = drops[:FIGURE_IMAGES]
        block = _figure(context, occluded, drops, window, stride, how) if shown.max() >= MIN_DROP else Text(
            f"Hiding any {window}x{window} region of the {len(shown)} sample images lowers the predicted class's "
            f"probability by at most {max(float(shown.max()), 0.0):.4f}: no single region matters to these answers, "
            "as when the model decides from something spread over the whole image (the lighting, a colour cast, a "
            "texture) or its probabilities are saturated. The heatmaps would be uniformly green and are not drawn."
            + how, "note")
        return self.result(blocks=[block], data={"window": window, "stride": stride, "images": len(indices),
                                                  "max_drop": round(float(drops.max()), 4),
                                                  "occlusion_mode": engine.mode, "approximation_error": error,
                                                  "method_seconds": {"occlusion": round(seconds, 3)}})


def approximation_error(context: AuditContext, approximate: IncrementalOcclusion, inputs: torch.Tensor,
                        targets: torch.Tensor, baseline: torch.Tensor, drops: np.ndarray) -> dict:
    """The approximate map of one image against its exact map: rank correlation and largest difference."""
    exact = IncrementalOcclusion(context.graph, window=approximate.window, stride=approximate.stride)
    truth = exact.attribute(inputs, targets, baseline, chunk=context.options.batch_size)[0].mean(dim=0).cpu().numpy()
    correlation = spearmanr(drops.ravel(), truth.ravel())[0]
    return {"rank_correlation": round(float(np.nan_to_num(correlation, nan=1.0)), 4),
            "max_abs_difference": round(float(np.abs(drops - truth).max()), 5)}


def grey_mask(pixels: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """The image with everything but the most needed regions greyed out (all grey if no region matters)."""
    threshold = np.quantile(drop, 1 - MASK_KEEP)
    keep = (drop >= threshold) & (drop >= MIN_DROP)
    image = figures.as_rgb(pixels)
    return np.where(keep[:, :, None], image, 0.5 + 0.15 * (image - 0.5))


PROBABILITY = figures.ColourScale("RdYlGn", "probability, region hidden")


def _figure(context: AuditContext, occluded: np.ndarray, drops: np.ndarray, window: int, stride: int,
            how: str) -> Figure:
    shown = context.sample_indices[:FIGURE_IMAGES]
    pixels = context.probe.pixels(shown, context.spec)
    boxes = context.probe.boxes(context.spec)[shown]
    cells = [_panels(pixels[i], occluded[i], drops[i], boxes[i], context.sample_label(index, attributes=True))
             for i, index in enumerate(shown)]
    rows = [sum(cells[i:i + 2], []) for i in range(0, len(cells), 2)]   # two images a row, large enough to read
    fig = figures.image_grid(rows, col_labels=["image", "probability", "grey mask"] * 2, scale=PROBABILITY)
    caption = (f"A {window}x{window} grey window moved in steps of {stride} pixels; above each image its true class "
               "(-> predicted class), the predicted class's probability and the largest drop of it that hiding one "
               "region causes. 'probability': the predicted class's "
               "probability with the region around each pixel hidden (green = unchanged, red = falls to zero). "
               f"'grey mask': only the {MASK_KEEP:.0%} of the image whose hiding lowers the probability most (by "
               f"at least {MIN_DROP}) is left visible. If the visible part is not the object, the model decides "
               "from something else. " + figures.panel_legend(
                   rows, f"the map would look uniform: hiding any region lowers that image's probability by less "
                         f"than {VISIBLE_DROP} (too little to see on the colour scale) or less than {MIN_DROP} "
                         "(no region matters: the model decides from something spread over the whole image, or its "
                         "probability is saturated)")) + how
    return Figure(figures.to_png(fig), caption.strip(), "Occlusion sensitivity")


def _panels(pixels: np.ndarray, occluded: np.ndarray, drop: np.ndarray, box: np.ndarray,
            label: str) -> list[figures.Panel]:
    """The image, its probability map and its grey mask; words in place of a map that would look uniform."""
    largest = max(float(drop.max()), 0.0)
    image = figures.Panel(figures.as_rgb(pixels), title=f"{label}\nlargest drop {largest:.2g}", box=box)
    if largest < MIN_DROP:
        return [image, figures.Panel(note=f"no region matters: every drop is below {MIN_DROP}"),
                figures.Panel(note="nothing to keep visible")]
    probability = (figures.Panel(occluded, box=box) if largest >= VISIBLE_DROP else
                   figures.Panel(note="drops too small to see on the colour scale: the grey mask shows where"))
    return [image, probability, figures.Panel(grey_mask(pixels, drop), box=box)]
