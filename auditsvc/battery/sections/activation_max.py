"""Activation maximization: synthetic images that drive a class, or a channel, as hard as possible."""

from __future__ import annotations

import time

import numpy as np

from .. import figures
from ..context import AuditContext
from ..figures import Cell, mosaic
from ..model.graph import ModelGraph
from ..model.receptive_field import receptive_fields
from ..progress import SectionProgress, shares
from ..registry import Section, register
from ..results import Figure, SectionResult, Table, Text
from ..methods.feature_visualization import SHOWN_CHANNELS, Settings, Target, image_step_cost, maximize

ALL_CLASSES_UP_TO = 16     # more classes than this: only the most often predicted ones
TOP_CLASSES = 12
CLASS_STEPS, CHANNEL_STEPS = 128, 64          # steps when the model is cheap enough
MIN_CLASS_STEPS, MIN_CHANNEL_STEPS = 32, 24  # never fewer, however costly the model
# What one optimization run may spend, in multiply-add equivalents (visualize.image_step_cost); the
# tank demo's models get the full steps, a ResNet-18 at 128 px the fewest.
CLASS_BUDGET, CHANNEL_BUDGET = 1.5e10, 2e10
REACHED = 0.9              # a class image below this probability does not show the class well
COLUMNS = 8


@register
class ActivationMax(Section):
    name = "activation_max"
    title = "Activation maximization"
    order = 70
    appendix = True
    intro = ("Synthetic images the model would most like to see: starting from a grey image, the pixels "
             "are changed step by step (gradient ascent) to raise one class's score, or one channel's "
             "activation. Random shifts, zooms and rotations at every step, a smooth (Fourier, "
             "colour-decorrelated) image parameterization and a smoothness penalty keep the result "
             "from turning into noise (Olah et al. 2017). The images show what the model looks for, "
             "not what it was meant to learn: a class drawn as a colour, a texture or a kind of sky "
             "tells that the model decides from that.")

    def run(self, context: AuditContext) -> SectionResult:
        started = time.perf_counter()
        classes = chosen_classes(context)
        generator = context.generator("activation_max:classes")
        steps = optimization_steps(context.graph, len(classes), CLASS_BUDGET, CLASS_STEPS, MIN_CLASS_STEPS)
        # progress: this model's classes, the reference's, then the channels (about a third each)
        own, other, rest = shares(context.section_progress, [1, 1 if context.reference else 0, 1])
        mine = maximize(context.graph, context.spec, [Target(c) for c in classes], generator, Settings(steps=steps),
                        own)
        reference = _reference_images(context, classes, other)
        class_seconds = time.perf_counter() - started
        started = time.perf_counter()
        channels = _channel_images(context, rest)
        channel_seconds = time.perf_counter() - started
        blocks = []
        missed = [context.classes[c] for c, p in zip(classes, mine.scores) if not p >= REACHED]
        if missed:
            blocks.append(Text(f"The optimization did not make the model's probability for {_names(missed)} "
                               f"reach {REACHED:.0%}; those images show what raises the score, but the class "
                               "does not dominate in them. When no image can drive a class, the model's scores "
                               "barely depend on the input (as in an untrained model).", "note"))
        blocks += [_class_figure(context, classes, mine, reference, steps), _class_table(context, classes, mine)]
        if channels:
            blocks.append(_channel_figure(context, channels))
            failed, shown = _failed_channels(channels)
            if failed:
                blocks.append(Text(
                    f"{failed} of {shown} channel visualizations drive their channel less than the channel's strongest "
                    "probe image does (marked 'failed'): the optimization did not find the channel's preferred "
                    "pattern there, often because the channel is off for most inputs and its gradient vanishes. "
                    "Those images do not show what the channel encodes.", "note"))
        data = _data(context, classes, mine, reference, channels) | {
            "class_steps": mine.steps, "class_step_limit": steps, "all_reached": not missed,
            "method_seconds": {"classes": round(class_seconds, 3), "channels": round(channel_seconds, 3)}}
        return self.result(blocks=blocks, data=data)


def _data(context: AuditContext, classes: list[int], mine, reference, channels: dict) -> dict:
    data = {
        "classes": [{"class": context.classes[c], "probability": round(float(mine.scores[row]), 4),
                     "logit": round(float(mine.logits[row, c]), 3)} for row, c in enumerate(classes)],
        "min_probability": round(float(mine.scores.min()), 4),
        "channels": {layer: [{"channel": t.index, "activation": round(float(s), 4), "probe_max": round(float(m), 4)}
                             for t, s, m in zip(v.targets, v.scores, maxima)]
                     for layer, (v, maxima, _) in channels.items()},
        "channel_steps": {layer: v.steps for layer, (v, _, _) in channels.items()},
        "channel_step_limits": {layer: steps for layer, (_, _, steps) in channels.items()},
    }
    if reference is not None:
        data["reference_probabilities"] = {context.classes[c]: round(float(p), 4)
                                           for c, p in zip(classes, reference.scores)}
        data["reference_steps"] = reference.steps
    return data


def chosen_classes(context: AuditContext) -> list[int]:
    """Every class of a small model; else the most often predicted ones (ties: higher mean probability)."""
    count = len(context.classes)
    if count <= ALL_CLASSES_UP_TO:
        return list(range(count))
    predicted = np.bincount(context.outputs.predictions, minlength=count)
    mean_probability = context.outputs.probabilities.mean(axis=0)
    order = np.lexsort((-mean_probability, -predicted))
    return sorted(int(c) for c in order[:TOP_CLASSES])


def optimization_steps(graph: ModelGraph, images: int, budget: float, most: int, least: int) -> int:
    """Steps for one run of `images` images: `most`, fewer (down to `least`) when the model is too costly."""
    affordable = budget / (image_step_cost(graph) * images)
    return int(max(least, min(most, affordable)) // 8 * 8)


def _reference_images(context: AuditContext, classes: list[int], progress: SectionProgress):
    """The same classes drawn by the reference model, when it has the same classes and input."""
    reference = context.reference
    if reference is None or reference.meta.classes != context.classes or reference.meta.input != context.spec:
        return None
    graph = context.reference_graph
    steps = optimization_steps(graph, len(classes), CLASS_BUDGET, CLASS_STEPS, MIN_CLASS_STEPS)
    return maximize(graph, context.spec, [Target(c) for c in classes], context.generator("activation_max:reference"),
                    Settings(steps=steps), progress)


def _channel_images(context: AuditContext, progress: SectionProgress) -> dict:
    """{layer: (visualization, strongest probe activation per channel, step limit)} for a few layers.

    One run per layer, each running the model only up to its layer: for a ResNet-18 and a ConvNeXt-tiny
    the three runs of six images cost about 0.7 times one run of all eighteen up to the deepest layer."""
    pooled = context.pooled_activations(list(context.feature_channels))
    out = {}
    layers = context.feature_channels.items()
    for (layer, channels), part in zip(layers, shares(progress, [1] * len(layers))):
        steps = optimization_steps(context.graph, len(channels), CHANNEL_BUDGET, CHANNEL_STEPS,
                                    MIN_CHANNEL_STEPS)
        visualization = maximize(context.graph, context.spec, [Target(c, layer) for c in channels],
                                 context.generator(f"activation_max:{layer}"), Settings(steps=steps), part)
        out[layer] = (visualization, np.nan_to_num(pooled[layer][:, channels]).max(axis=0), steps)
    return out


def _class_figure(context: AuditContext, classes: list[int], mine, reference, limit: int) -> Figure:
    """Per class, side by side: this model's image, the reference model's, the most typical probe image."""
    probabilities = context.outputs.probabilities
    best_probe = [int(np.argmax(probabilities[:, c])) for c in classes]
    probe_pixels = context.probe.pixels(best_probe, context.spec)
    groups = []
    for i, c in enumerate(classes):
        name = figures.shorten(context.classes[c], 16)
        group = [(mine.images[i], f"{name}\nsynthetic {_reached(mine.scores[i])}")]
        if reference is not None:
            group.append((reference.images[i], f"{name}\nreference {_reached(reference.scores[i])}"))
        group.append((probe_pixels[i], f"{name}\nprobe p={probabilities[best_probe[i], c]:.2f}"))
        groups.append(group)
    per_row = max(1, COLUMNS // len(groups[0]))
    cells = [[Cell(figures.as_rgb(image), title) for group in groups[start:start + per_row] for image, title in group]
             for start in range(0, len(groups), per_row)]
    fig = mosaic(cells, cell_inches=1.1)
    shown = "every class" if len(classes) == len(context.classes) else \
        f"the {len(classes)} classes the model predicts most often on the probe set"
    compare = (" 'reference': the same class drawn by the reference model; where the two differ, the models "
               "look for different things." if reference is not None else "")
    scores = [*mine.scores, *(reference.scores if reference is not None else [])]
    stopped = f", of at most {limit}: the probabilities had stopped rising" if mine.steps < limit else ""
    failed = (f" ('failed': below {REACHED}, the class does not dominate the image, which shows only what raises "
              "its score)" if any(not score >= REACHED for score in scores) else "")
    caption = (f"'synthetic': the image that maximizes the class's score, for {shown} ({mine.steps} steps of "
               f"gradient ascent from grey, seeded{stopped}); p is the model's probability for the class on that "
               f"image, without the random transformations{failed}. 'probe': the probe image the model is most sure "
               f"belongs to the class.{compare} Look at what fills the synthetic images: object parts and outlines "
               "mean the model learned the object; colours, brightness, texture or sky spread over the whole image "
               "mean the model decides from those. For example, a model that learned the weather instead of "
               "tanks draws 'no_tank' in the bright, saturated colours of a sunny scene and 'tank' in the dull, "
               "dark tones of an overcast one, with no tank shape in either.")
    return _figure(fig, caption, "Class visualizations")


def _class_table(context: AuditContext, classes: list[int], mine) -> Table:
    probabilities = context.outputs.probabilities
    rows = [[context.classes[c], f"{mine.scores[i]:.3f}", f"{mine.logits[i, c]:.2f}",
             f"{probabilities[:, c].max():.3f}"] for i, c in enumerate(classes)]
    return Table(["class", "probability reached", "logit reached", "highest on a probe image"], rows,
                 f"Whether each synthetic image really drives its class. Below {REACHED} the image shows what "
                 "raises the score without making the class win, and says less about the class.",
                 "Probability reached by each class image")


def _channel_figure(context: AuditContext, channels: dict) -> Figure:
    fields = receptive_fields(context.graph)
    cells, labels = [], []
    for layer, (visualization, maxima, _) in channels.items():
        cells.append([Cell(figures.as_rgb(image), f"channel {t.index}\n{_ratio(s, m)}")
                      for image, t, s, m in zip(visualization.images, visualization.targets, visualization.scores,
                                                maxima)])
        field, name = fields.get(layer), figures.shorten(layer, 18)
        labels.append(f"{name}\nfield {field.describe().split(',')[0]}" if field else name)
    fig = mosaic(cells, labels, cell_inches=(figures.PAGE_WIDTH_IN - 1.2) / SHOWN_CHANNELS, label_inches=1.2)
    caption = ("Rows: layers from early to deep (with the size of the input region one unit sees); columns: "
               f"the {SHOWN_CHANNELS} channels with the largest mean activation on the probe set (the same channels "
               "as in 'Top-activating patches'). Each image maximizes the channel's mean activation over the "
               "whole map, so it repeats the channel's preferred pattern. Under each: how far the image drives "
               "the channel, as a multiple of its strongest probe image. Early channels show colours and "
               "edges; look at the deep ones: object parts are expected, while flat colours, sky-like gradients "
               "or plain textures mean the deep features encode global image properties.")
    return _figure(fig, caption, "Channel visualizations")


def _figure(fig, caption: str, title: str) -> Figure:
    """A figure that keeps its natural size on the page when it is narrower than the page (few classes)."""
    png = figures.to_png(fig)
    inches = int.from_bytes(png[16:20], "big") / figures.DPI  # the width field of the PNG header
    return Figure(png, caption, title, width=f"{min(100, round(100 * inches / figures.PAGE_WIDTH_IN))}%")


def _reached(probability: float) -> str:
    """A class image's probability, flagged where the optimization did not get the class to dominate."""
    return f"p={probability:.2f}" + ("" if probability >= REACHED else f"\n(failed: below {REACHED})")


def _ratio(value: float, probe_max: float) -> str:
    if probe_max > 1e-6:
        return f"{value / probe_max:.1f}x probe max" + (" (failed)" if _failed(value, probe_max) else "")
    return f"mean {value:.2g}"


def _failed(value: float, probe_max: float) -> bool:
    """A visualization that drives its channel less than a real probe image does has not found its pattern."""
    return probe_max > 1e-6 and value < probe_max


def _failed_channels(channels: dict) -> tuple[int, int]:
    pairs = [(s, m) for visualization, maxima, _ in channels.values() for s, m in zip(visualization.scores, maxima)]
    return sum(_failed(float(s), float(m)) for s, m in pairs), len(pairs)


def _names(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names[:6]]
    return ", ".join(quoted) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
