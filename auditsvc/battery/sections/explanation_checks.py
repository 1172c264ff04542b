"""Explanation checks: which saliency methods can be trusted on this model.

Two checks of every saliency method (see faithfulness.py): the model-randomization sanity check
(Adebayo et al. 2018) and deletion/insertion curves against a random ranking (Petsiuk et al.
2018). Both cost many passes per image, so they run on a few of the sample images: as many as
fit a fixed compute budget (multiply-accumulates of the model's forward pass), between
MIN_IMAGES and DELETION_IMAGES (deletion/insertion) or RANDOMIZATION_IMAGES (randomization);
SmoothGrad and integrated gradients use fewer samples and steps in the randomization check than
in the saliency section, the same for the original and every randomized model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from .. import figures
from ..context import AuditContext
from ..methods import attribution
from ..methods import saliency_checks as faithfulness
from ..methods.attribution import METHODS, AttributionSettings
from ..progress import SectionProgress, no_progress, shares
from ..registry import Section, register
from ..results import Check, Figure, Finding, SectionResult, Table, Text

DELETION_IMAGES = 8
RANDOMIZATION_IMAGES = 4
MIN_IMAGES = 4
MAC_BUDGET = 4e11            # multiply-accumulates each check may spend (ResNet-18 at 128 px: 4 images, ~10 s)
MIN_ROOM = 0.1               # a curve whose ends differ by less than this in probability tells nothing
STEPS = 12                   # deletion/insertion: points on each curve after the start (see switch_fractions)
FRACTIONS = faithfulness.switch_fractions(STEPS)
RANDOMIZATION_SMOOTHGRAD_SAMPLES = 4
RANDOMIZATION_IG_STEPS = 8
SIMILARITY_LIMIT = 0.5       # rank correlation above this with the top half of the model random: fails
AUC_MARGIN = 0.05            # a map must beat the random ranking's area by this share of the curve's range
BLUR_FRACTION = 1 / 20       # insertion canvas: Gaussian blur with sigma = this x the image side
BASELINES = {"deletion": "the mean-colour image", "insertion": "the blurred image"}
NAMES = {name: method.title for name, method in METHODS.items()}


@dataclass
class MethodVerdict:
    method: str
    similarity: dict[str, float]     # stage label -> mean rank correlation with the original maps
    ssim: dict[str, float]
    decisive: float                  # rank correlation with the top half of the weighted layers random
    deletion: float | None           # mean area under the deletion curve (lower is better); None: untestable
    insertion: float | None          # mean area under the insertion curve (higher is better)
    random_deletion: float | None    # the same for the random ranking, on the same images
    random_insertion: float | None
    room: dict[str, float | None]    # kind -> mean probability change from one end of the curve to the other

    @property
    def passes_randomization(self) -> bool:
        return self.decisive <= SIMILARITY_LIMIT

    @property
    def beats_random(self) -> tuple[bool | None, bool | None]:
        """(deletion, insertion): better than the random ranking; None where the curve could not tell."""
        deletion = (None if self.deletion is None
                    else self.random_deletion - self.deletion >= AUC_MARGIN * self.room["deletion"])
        insertion = (None if self.insertion is None
                     else self.insertion - self.random_insertion >= AUC_MARGIN * self.room["insertion"])
        return deletion, insertion

    @property
    def faithful(self) -> bool:
        return any(b is True for b in self.beats_random) and all(b is not False for b in self.beats_random)

    @property
    def unfaithful(self) -> bool:
        return any(b is not None for b in self.beats_random) and not any(self.beats_random)

    @property
    def trusted(self) -> bool:
        return self.passes_randomization and self.faithful


@register
class ExplanationChecks(Section):
    name = "explanation_checks"
    title = "Explanation checks"
    order = 90
    appendix = True
    intro = ("Saliency maps can look convincing and still say nothing about the model. Two checks tell which of "
             "them to believe here. The randomization check (Adebayo et al. 2018) replaces the weights of the model's "
             "top layers with random ones, step by step from the output down, and recomputes every map: a map that "
             "barely changes when the model is destroyed shows the image (its edges), not what the model uses. "
             "Deletion and insertion (Petsiuk et al. 2018) remove the pixels a map ranks highest first and watch "
             "the predicted class's probability fall, or reveal them first on a blurred image and watch it rise; "
             "a map that knows what the model needs beats a random ranking at both.")

    def run(self, context: AuditContext) -> SectionResult:
        if not faithfulness.weighted_layers(context.graph):
            return self.result(status="skipped", reason="the graph has no convolution or linear weights to randomize")
        deletion_count, randomization_count = image_counts(context)
        indices = list(context.sample_indices[:max(deletion_count, randomization_count)])
        if not indices:
            return self.result(status="skipped", reason="there are no sample images")
        inputs = context.probe.tensors(indices, context.spec).to(context.device)
        targets = torch.as_tensor(context.outputs.predictions[indices], device=context.device)
        maps_part, curves_part, randomization_part = shares(context.section_progress, [1, 1, 2])
        seconds = {}
        started = time.perf_counter()
        with context.reporting_to(maps_part):
            context.sample_attributions   # computed here when the saliency section has not run
        seconds["maps"], started = time.perf_counter() - started, time.perf_counter()
        chosen = slice(0, deletion_count)
        curves = deletion_insertion(context, indices[chosen], inputs[chosen], targets[chosen], curves_part)
        seconds["curves"], started = time.perf_counter() - started, time.perf_counter()
        chosen = slice(0, randomization_count)
        randomization = randomization_check(context, indices[chosen], inputs[chosen], targets[chosen],
                                            randomization_part)
        seconds["randomization"] = time.perf_counter() - started
        verdicts = [MethodVerdict(m, randomization.similarity[m], randomization.ssim[m],
                                  randomization.similarity[m][randomization.decisive_stage],
                                  curves.mean_auc("deletion", m), curves.mean_auc("insertion", m),
                                  curves.mean_auc("deletion", "random"), curves.mean_auc("insertion", "random"),
                                  {kind: curves.mean_room(kind) for kind in KINDS})
                    for m in curves.methods]
        failing = [v for v in verdicts if not v.passes_randomization and v.unfaithful]
        blocks = [_conclusion(verdicts, curves),
                  _verdict_table(verdicts, randomization, curves),
                  _randomization_figure(randomization),
                  _curves_figure(curves),
                  _randomization_maps_figure(context, randomization, indices[0])]
        check = Check("Saliency methods that fail both explanation checks", len(failing),
                      f"{len(failing)} of {len(verdicts)}", "noted for any (explanations never decide the verdict)",
                      "info" if failing else "pass",
                      "representation.untrustworthy_explanations" if failing else None)
        data = _data(verdicts, randomization, curves) | {
            "method_seconds": {part: round(value, 3) for part, value in seconds.items()}}
        return self.result(blocks=blocks, data=data,
                           findings=[_finding(failing)] if failing else [], checks=[check])


def image_counts(context: AuditContext) -> tuple[int, int]:
    """Images for deletion/insertion and for randomization: as many as the compute budget allows,
    between MIN_IMAGES and the caps, never more than the sample images."""
    macs = max(1, faithfulness.forward_macs(context.graph))
    methods = attribution.applicable(context.graph)
    deletion_passes = (len(methods) + 1) * 2 * (STEPS - 1)   # every ranking and the random one, both curves
    # Gradient passes (about 3 forward passes each) per stage, for about four stages.
    randomization_passes = 4 * 3 * (len(methods) - 2 + RANDOMIZATION_SMOOTHGRAD_SAMPLES + RANDOMIZATION_IG_STEPS)
    available = len(context.sample_indices)
    return (min(available, _image_count(macs, deletion_passes, DELETION_IMAGES)),
            min(available, _image_count(macs, randomization_passes, RANDOMIZATION_IMAGES)))


def _data(verdicts: list[MethodVerdict], randomization: Randomization, curves: Curves) -> dict:
    return {
        "images": {"deletion_insertion": len(curves.testable["deletion"]), "randomization": randomization.images},
        "fractions": [round(float(f), 4) for f in FRACTIONS],
        "randomized_stages": randomization.stages[1:], "decisive_stage": randomization.decisive_stage,
        "curve_images": {kind: int(curves.testable[kind].sum()) for kind in KINDS},
        "random_auc": {kind: _rounded(curves.mean_auc(kind, "random")) for kind in KINDS},
        "methods": {v.method: {"rank_correlation": {k: round(x, 4) for k, x in v.similarity.items()},
                               "ssim": {k: round(x, 4) for k, x in v.ssim.items()},
                               "passes_randomization": v.passes_randomization,
                               "deletion_auc": _rounded(v.deletion), "insertion_auc": _rounded(v.insertion),
                               "faithful": v.faithful, "trusted": v.trusted} for v in verdicts},
        "trusted": [v.method for v in verdicts if v.trusted],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _image_count(macs: int, passes_per_image: int, most: int) -> int:
    return int(np.clip(MAC_BUDGET // (macs * passes_per_image), MIN_IMAGES, most))


# --- deletion and insertion ----------------------------------------------------------------

KINDS = ("deletion", "insertion")


@dataclass
class Curves:
    methods: list[str]
    curves: dict[str, dict[str, np.ndarray]]   # kind -> method (or "random") -> (n, STEPS + 1)
    testable: dict[str, np.ndarray]            # kind -> (n,) bool: the curve's ends differ by MIN_ROOM or more

    def mean_auc(self, kind: str, method: str) -> float | None:
        """Mean area under the curve over the images where the curve can tell anything."""
        chosen = self.testable[kind]
        if not chosen.any():
            return None
        return float(faithfulness.area_under(self.curves[kind][method][chosen], FRACTIONS).mean())

    def mean_room(self, kind: str) -> float | None:
        """Mean probability change from one end of the curve to the other, over the testable images."""
        chosen, values = self.testable[kind], self.curves[kind]["random"]
        return float(np.abs(values[chosen, 0] - values[chosen, -1]).mean()) if chosen.any() else None


def deletion_insertion(context: AuditContext, indices: list[int], inputs: torch.Tensor,
                       targets: torch.Tensor, progress: SectionProgress = no_progress) -> Curves:
    """Deletion (top pixels -> the mean colour) and insertion (top pixels revealed on a blurred copy) curves."""
    maps = context.sample_attributions.of(indices)
    methods = list(maps)
    seed = context.options.seed
    pixels = inputs.shape[2] * inputs.shape[3]
    ranks = np.stack([faithfulness.pixel_ranks(maps[m], seed) for m in methods]
                     + [faithfulness.random_ranks(len(indices), pixels, seed + 1)], axis=1)
    side = min(inputs.shape[2:])
    canvas = faithfulness.blurred(inputs, max(1.0, side * BLUR_FRACTION))
    mean_image = torch.zeros_like(inputs)   # normalized input: zero is the data set's mean colour
    probability = faithfulness.class_probability(context.graph)
    # No gradients are kept, so a batch costs half the memory; no larger than runs fastest per image.
    chunk = faithfulness.efficient_batch(context.graph, 2 * context.options.batch_size)
    names = [*methods, "random"]
    curves, testable = {}, {}
    kinds = (("deletion", inputs, mean_image), ("insertion", canvas, inputs))
    for (kind, start, end), part in zip(kinds, shares(progress, [1, 1])):
        values = faithfulness.reveal_curves(probability, start, end, ranks, targets, FRACTIONS, chunk, part)
        curves[kind] = {name: values[:, i] for i, name in enumerate(names)}
        change = values[:, 0, 0] - values[:, 0, -1]   # the ends are the same for every ranking
        testable[kind] = (change if kind == "deletion" else -change) >= MIN_ROOM
    return Curves(methods, curves, testable)


# --- model randomization -------------------------------------------------------------------

@dataclass
class Randomization:
    stages: list[str]                          # "original", then "top 1 of 21", ...
    layers: list[list[str]]                    # randomized layers per stage
    decisive_stage: str
    similarity: dict[str, dict[str, float]]    # method -> stage -> mean rank correlation
    ssim: dict[str, dict[str, float]]
    example: dict[str, list[np.ndarray]]       # method -> the first image's map at each stage
    images: int


def cascade_depths(layer_count: int) -> tuple[list[int], int]:
    """How many top layers each stage randomizes (the output layer, the top half, all), and the decisive
    one (the top half); small models get a stage per layer up to four."""
    half = math.ceil(layer_count / 2)
    depths = range(1, layer_count + 1) if layer_count <= 4 else (1, half, layer_count)
    return sorted(set(depths)), half


def randomization_check(context: AuditContext, indices: list[int], inputs: torch.Tensor,
                        targets: torch.Tensor, progress: SectionProgress = no_progress) -> Randomization:
    graph = context.graph
    layers = faithfulness.weighted_layers(graph)
    depths, decisive = cascade_depths(len(layers))
    drawn = faithfulness.random_weights(graph, layers, context.generator("explanation_checks.randomize"))
    # The saliency maps serve for the methods without samples or steps; SmoothGrad and integrated
    # gradients are recomputed with the fewer samples and steps used on the randomized copies.
    settings = _randomization_settings(context)
    shown = context.sample_attributions.of(indices)
    first, *per_stage = shares(progress, [1] * (1 + len(depths)))
    recomputed = attribution.heatmaps(graph, inputs, targets, settings, [m for m in shown if METHODS[m].sampled],
                                      first).maps
    original = shown | recomputed
    stages = ["original"] + [f"top {d} of {len(layers)}" if d < len(layers) else f"all {d}" for d in depths]
    similarity = {m: {"original": 1.0} for m in original}
    structural = {m: {"original": 1.0} for m in original}
    example = {m: [values[0]] for m, values in original.items()}
    for depth, stage, part in zip(depths, stages[1:], per_stage):
        chosen = layers[:depth]
        copy = faithfulness.randomized_graph(graph, {t: drawn[t] for l in chosen for t in (l.weight, l.bias) if t})
        maps = attribution.heatmaps(copy, inputs, targets, settings, list(original), part).maps
        for method, values in maps.items():
            similarity[method][stage] = float(np.mean([faithfulness.rank_correlation(a, b)
                                                       for a, b in zip(original[method], values)]))
            structural[method][stage] = float(np.mean([faithfulness.ssim(a, b)
                                                       for a, b in zip(original[method], values)]))
            example[method].append(values[0])
    return Randomization(stages, [[l.name for l in layers[:d]] for d in depths], stages[1 + depths.index(decisive)],
                         similarity, structural, example, len(inputs))


def _randomization_settings(context: AuditContext) -> AttributionSettings:
    """Fewer SmoothGrad samples and integrated-gradient steps, the same for the original and every copy
    (a fixed step count for every image, not as many as each needs); SmoothGrad's noise is the same on
    every call."""
    options = context.options
    # Integrated gradients' path points are spread over passes of the size that runs fastest per image (the
    # same points, so the same maps up to float rounding); SmoothGrad keeps its batches: they decide which
    # noise sample goes with which image.
    path_chunk = faithfulness.efficient_batch(context.graph, context.attribution_settings.chunk)
    return replace(context.attribution_settings, path_chunk=path_chunk,
                   smoothgrad_samples=min(options.smoothgrad_samples, RANDOMIZATION_SMOOTHGRAD_SAMPLES),
                   ig_steps=min(options.ig_steps, RANDOMIZATION_IG_STEPS), ig_fixed=True,
                   noise=partial(context.generator, "explanation_checks.smoothgrad"))


# --- report --------------------------------------------------------------------------------

def _names(methods: list[str]) -> str:
    return ", ".join(NAMES[m] for m in methods)


def _conclusion(verdicts: list[MethodVerdict], curves: Curves) -> Text:
    trusted = [v.method for v in verdicts if v.trusted]
    copies_input = [v.method for v in verdicts if not v.passes_randomization]
    unfaithful = [v.method for v in verdicts if not v.faithful]
    untestable = [kind for kind in KINDS if not curves.testable[kind].any()]
    parts = []
    if trusted:
        parts.append(f"On this model these explanations can be trusted: {_names(trusted)}. Their maps change when the "
                     "model's top layers are randomized, and their rankings find the pixels the prediction needs "
                     "faster than a random ranking.")
    else:
        parts.append("On this model no saliency method passes both checks: read the saliency maps as rough hints "
                     "only, and rely on the occlusion and intervention evidence instead.")
    if copies_input:
        parts.append(f"Not specific to the model: {_names(copies_input)} (the maps stay similar with the top half of "
                     "the layers random, so they show the image more than the model).")
    if untestable:
        parts.append(f"{' and '.join(untestable).capitalize()} could not tell anything here: "
                     + " and ".join(BASELINES[kind] for kind in untestable) + " already gets about the same "
                     "probability as the original image, as when the model decides from something spread over the "
                     "whole image (colour, brightness) rather than from a region.")
    if unfaithful and len(untestable) < len(KINDS):
        parts.append(f"No better than a random ranking at {' or '.join(k for k in KINDS if k not in untestable)}: "
                     f"{_names(unfaithful)}.")
    return Text(" ".join(parts), "plain" if trusted else "warning")


def _auc_cell(value: float | None, beats: bool | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + ("" if beats is not False else " ✗")


def _verdict_table(verdicts: list[MethodVerdict], randomization: Randomization, curves: Curves) -> Table:
    shown = randomization.stages[1:]
    rows = []
    for v in verdicts:
        deletion_ok, insertion_ok = v.beats_random
        rows.append([NAMES[v.method], *(f"{v.similarity[s]:.2f}" for s in shown),
                     "pass" if v.passes_randomization else "FAIL",
                     _auc_cell(v.deletion, deletion_ok), _auc_cell(v.insertion, insertion_ok),
                     "yes" if v.trusted else "no"])
    random_cells = [_auc_cell(curves.mean_auc(kind, "random"), None) for kind in KINDS]
    rows.append(["random ranking", *([""] * len(shown)), "", *random_cells, ""])
    counts = ", ".join(f"{kind} {int(curves.testable[kind].sum())}" for kind in KINDS)
    caption = (f"r: rank correlation (Spearman, absolute maps, mean over {randomization.images} images) between each "
               "method's maps on the "
               "audited model and on copies whose top layers have random weights; the check fails above "
               f"{SIMILARITY_LIMIT} at '{randomization.decisive_stage}' (the top half of the weighted layers). "
               "Deletion AUC: area under the predicted class's probability as the top-ranked pixels are replaced by "
               "the mean colour (lower is better); insertion AUC: the same as they are revealed on a blurred copy "
               f"(higher is better); ✗: not better than the random ranking by at least {AUC_MARGIN:.0%} of the "
               "curve's range (the probability change from one end to the other); n/a: on none "
               f"of the images does the probability change by {MIN_ROOM} or more from end to end. Trusted: passes "
               f"the randomization check and beats the random ranking wherever the curves can tell. Images with "
               f"curves that can tell: {counts} of {len(curves.testable['deletion'])}.")
    return Table(["method", *[f"r, {s}" for s in shown], "randomization", "deletion AUC", "insertion AUC",
                  "trusted"], rows, caption, "Which explanations pass")


def _randomization_figure(randomization: Randomization) -> Figure:
    methods, stages = list(randomization.similarity), randomization.stages
    fig, axes = figures.plt.subplots(1, 2, figsize=(figures.PAGE_WIDTH_IN, 2.9))
    for ax, values, label in ((axes[0], randomization.similarity, "rank correlation (Spearman)"),
                              (axes[1], randomization.ssim, "structural similarity (SSIM)")):
        for method in methods:
            ax.plot(range(len(stages)), [values[method][s] for s in stages], marker="o", markersize=3,
                    label=NAMES[method])
        lowest = min(v for per_method in values.values() for v in per_method.values())
        ax.set_ylim(min(0.0 if ax is axes[1] else -0.2, lowest - 0.05), 1.03)
        ax.set_xticks(range(len(stages)), [s.replace(" of ", "\nof ") for s in stages], fontsize=6.5)
        ax.set_ylabel(label)
        ax.set_xlabel("layers randomized, from the output", fontsize=7)
    axes[0].axhline(SIMILARITY_LIMIT, color="black", linestyle=":", linewidth=0.8)
    axes[0].axvline(stages.index(randomization.decisive_stage), color="grey", linewidth=0.6)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=6.5, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    caption = (f"How similar each method's maps (mean over {randomization.images} images) stay as the weights of more "
               "and more layers, from the output down, are replaced by random ones; randomized first: "
               f"{', '.join(randomization.layers[0])}. Dotted: the {SIMILARITY_LIMIT} limit; grey: the decisive stage "
               "(top half of the layers random). A method that shows what the model computes falls towards 0 "
               "quickly; one that stays high computes its map from the image alone.")
    return Figure(figures.to_png(fig), caption, "Model-randomization sanity check")


def _randomization_maps_figure(context: AuditContext, randomization: Randomization, index: int) -> Figure:
    """One row per method: the image, then its map at every stage."""
    methods, stages = list(randomization.similarity), randomization.stages
    pixels = context.probe.pixels([index], context.spec)[0]
    box = context.probe.boxes(context.spec)[index]
    rows = [[figures.Panel(figures.as_rgb(pixels), box=box)]
            + [figures.heat_panel(m, cmap="inferno", box=box) for m in randomization.example[method]]
            for method in methods]
    fig = figures.image_grid(rows, row_labels=[NAMES[m] for m in methods], col_labels=["image", *stages],
                             cell_inches=min(1.1, (figures.PAGE_WIDTH_IN - 2.0) / (len(stages) + 1)), label_width=1.3,
                             scale=figures.ColourScale("inferno", "attribution, scaled"))
    caption = (f"One image ({context.sample_label(index)}) and each method's map of it on the audited model "
               "('original') and on the copies with more and more layers random. Look for maps that keep the "
               "image's edges and shapes after the model is random: those show the image, not the model. Each map "
               "is scaled to its own 99th percentile (1 on the colour bar). " + figures.panel_legend(rows))
    return Figure(figures.to_png(fig), caption.strip(), "Maps of one image as the model is randomized", width="90%")


def _curves_figure(curves: Curves) -> Figure:
    fig, axes = figures.plt.subplots(1, 2, figsize=(figures.PAGE_WIDTH_IN, 2.8), sharey=True)
    for ax, kind in zip(axes, KINDS):
        chosen = curves.testable[kind]
        ax.set_xlabel("share of pixels " + ("replaced by the mean colour" if kind == "deletion" else
                                            "revealed on the blurred image"), fontsize=7)
        if not chosen.any():
            ax.set_title(f"{kind}: cannot tell on these images")
            ax.text(0.5, 0.5, f"{BASELINES[kind]} gets about the same\nprobability as the original image",
                    ha="center", va="center", transform=ax.transAxes, fontsize=7)
            continue
        for method in [*curves.methods, "random"]:
            values = curves.curves[kind][method][chosen]
            auc = faithfulness.area_under(values, FRACTIONS).mean()
            style = dict(color="black", linestyle="--") if method == "random" else {}
            ax.plot(FRACTIONS, values.mean(axis=0), label=f"{NAMES.get(method, method)} ({auc:.2f})", **style)
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} is better), "
                     f"{int(chosen.sum())} image{'s' if chosen.sum() != 1 else ''}")
        ax.legend(fontsize=6, frameon=False)
    axes[0].set_ylabel("probability of the predicted class")
    axes[0].set_ylim(0, 1.02)
    fig.tight_layout()
    caption = ("Mean predicted-class probability as pixels are switched in the order each method ranks them (most "
               "important first), with the area under each curve in brackets. A faithful map makes the deletion "
               "curve drop and the insertion curve rise faster than the random ranking (dashed); a curve close to "
               "the random one means the map's ranking tells little about what the model needs. Only images whose "
               f"probability moves by at least {MIN_ROOM} from one end of the curve to the other count.")
    return Figure(figures.to_png(fig), caption, "Deletion and insertion")


def _finding(failing: list[MethodVerdict]) -> Finding:
    """Info only: explanations are evidence for a reviewer, never a verdict."""
    names = _names([v.method for v in failing])
    summary = (f"{names} fail{'s' if len(failing) == 1 else ''} both explanation checks on this model: the maps stay "
               "similar when the top layers are randomized, and their pixel rankings are no better than random at "
               "deletion and insertion. Do not read these maps as evidence of what the model uses.")
    evidence = {"methods": [v.method for v in failing],
                "rank_correlation": {v.method: round(v.decisive, 4) for v in failing},
                "deletion_auc": {v.method: _rounded(v.deletion) for v in failing},
                "insertion_auc": {v.method: _rounded(v.insertion) for v in failing},
                "random_auc": {"deletion": _rounded(failing[0].random_deletion),
                               "insertion": _rounded(failing[0].random_insertion)}}
    return Finding("representation.untrustworthy_explanations", "representation", "info",
                   "Saliency methods that fail the explanation checks", summary, evidence,
                   headline=f"{names}: similar after randomization, no better than random at deletion/insertion.")
