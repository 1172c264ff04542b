"""Neurons (CNNVis, seed 004): per layer, the neuron x class mean-activation matrix with similar
neurons side by side, neuron clusters, and dead and redundant neurons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster import hierarchy
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform
from threadpoolctl import threadpool_limits

from .. import figures
from ..context import AuditContext
from ..methods.representation_layers import spread
from ..model.graph import Layer
from ..registry import Section, register
from ..results import Check, Figure, Finding, SectionResult, Table, Text, check_status

SHOWN_LAYERS = 4             # heatmaps for this many hidden layers, plus the penultimate
MAX_ROWS = 64                # wider layers are shown as bins of neighbouring (similar) neurons
MAX_CLASSES = 30             # classes shown as columns: those with the most probe images
DEAD_TOLERANCE = 1e-6        # a neuron whose largest output is below this share of the layer's largest is dead
REDUNDANT_CORRELATION = 0.98
CLUSTER_DISTANCE = 0.5       # average linkage on 1 - correlation: clusters correlate >= 0.5 on average
MAX_LEAF_ORDERING = 2048     # wider layers keep the plain dendrogram order
MIN_IMAGES = 8               # fewer images: correlations are too noisy to call neurons redundant
MOSTLY = 0.5                 # share of a layer's neurons that makes a warning
SOME_REDUNDANT = 0.25        # share of redundant neurons worth an informational finding
COLLAPSED_SIGNALS = 4        # a mostly redundant layer left with at most this many distinct signals
COLLAPSED_SHARE = 0.05       # (or this share of its channels) has collapsed rather than being too wide
SHIFT_RANGE = 1.5            # colour scale of the class shifts, in standard deviations


@dataclass
class LayerNeurons:
    layer: Layer
    class_means: np.ndarray      # (neurons, classes shown)
    class_shift: np.ndarray      # (neurons, classes shown): class mean minus overall mean, in the neuron's std
    order: np.ndarray            # neuron indices, similar neurons adjacent, dead ones last
    clusters: np.ndarray         # (neurons,) cluster id, 0 for dead or constant neurons
    dead: np.ndarray             # (neurons,) bool (all False where it cannot be told)
    dead_measured: bool
    redundant: np.ndarray        # (neurons,) bool
    redundancy_measured: bool
    distinct: int | None = None  # live channels left once near-copies are counted once (groups of near-copies)

    @property
    def neurons(self) -> int:
        return len(self.dead)

    @property
    def cluster_sizes(self) -> list[int]:
        _, counts = np.unique(self.clusters[self.clusters > 0], return_counts=True)
        return sorted(counts.tolist(), reverse=True)


@register
class Neurons(Section):
    name = "neurons"
    title = "Neurons"
    order = 85
    appendix = True
    intro = ("After CNNVis: for a few layers from early to deep and the penultimate layer, the mean activation of "
             "every neuron (channel, averaged over space) on the probe images of each class, with neurons that "
             "respond alike over the probe images placed next to each other (hierarchical clustering with optimal "
             "leaf ordering). Dead neurons never respond to any probe image; redundant neurons are near-copies of "
             "another neuron (their maps correlate at least 0.98 over every position of every probe image). Many "
             "of either mean wasted capacity: a training problem (dying ReLUs, a too-high learning rate) or a "
             "layer wider than the task needs.")

    def run(self, context: AuditContext) -> SectionResult:
        chosen = context.representation_layers
        layers = [*chosen.hidden]
        if chosen.penultimate is not None and chosen.penultimate.node not in {l.node for l in layers}:
            layers.append(chosen.penultimate)
        if not layers:
            return self.result(status="skipped", reason="the model has no hidden layer to inspect")
        names = [l.name for l in layers]
        means = context.pooled_activations(names)
        maps = _map_statistics(context, names)
        shown_classes = _shown_classes(context)
        with threadpool_limits(1, user_api="blas"):  # OpenBLAS threads beside torch's spin against each other
            results = [_analyse(layer, means[layer.name], maps[layer.name], context.labels, shown_classes)
                       for layer in layers]
        penultimate = getattr(chosen.penultimate, "node", None)
        shown = (spread([r for r in results if r.layer.node != penultimate], SHOWN_LAYERS)
                 + [r for r in results if r.layer.node == penultimate])
        class_names = [context.classes[c] for c in shown_classes]
        blocks: list = [_table(results)]
        blocks += _figures(shown, class_names, len(context.probe))
        if len(context.probe) < MIN_IMAGES:
            blocks.append(Text(f"Only {len(context.probe)} probe images: redundancy (correlation between neurons "
                               f"over the images) needs at least {MIN_IMAGES} and was not measured.", "note"))
        findings = [f for f in (_dead_finding(results), _redundant_finding(results)) if f is not None]
        return self.result(blocks=blocks, findings=findings, checks=_checks(results, findings), data={
            "layers": [_layer_data(r) for r in results], "classes": class_names,
            "shown": [r.layer.name for r in shown]})


@dataclass
class MapStatistics:
    """What one pass over a layer's full maps gives: per-image channel maxima and channel correlations."""
    maxima: np.ndarray        # (images, channels): the largest output anywhere in the map
    correlation: np.ndarray   # (channels, channels) over every position of every image; NaN for a constant channel


def _map_statistics(context: AuditContext, names: list[str]) -> dict[str, MapStatistics]:
    """One pass over the probe set: channel maxima and second moments of the full maps."""
    maxima: dict[str, list[np.ndarray]] = {n: [] for n in names}
    moments: dict[str, list] = {}
    with torch.inference_mode(), context.graph.rewrite(outputs=names) as rewrite:
        for _, batch in context.probe.batches(context.spec, context.options.batch_size):
            _, *outputs = rewrite.module(batch.to(context.device))
            for name, value in zip(names, outputs):
                value = value.float()
                spatial = value.dim() == 4
                maxima[name].append((value.amax(dim=(2, 3)) if spatial else value.flatten(1)).cpu().numpy())
                points = (value.permute(0, 2, 3, 1).reshape(-1, value.shape[1]) if spatial else value.flatten(1))
                points = points.double().cpu()
                if name not in moments:  # shift by the first batch's means: no cancellation in the variances
                    moments[name] = [points.mean(dim=0), 0, 0.0, 0.0]
                shifted = points - moments[name][0]
                moments[name][1] += len(points)
                moments[name][2] = moments[name][2] + shifted.sum(dim=0)
                moments[name][3] = moments[name][3] + shifted.T @ shifted
    return {n: MapStatistics(np.concatenate(maxima[n]), _correlation(*moments[n][1:])) for n in names}


def _correlation(count: int, sums: torch.Tensor, products: torch.Tensor) -> np.ndarray:
    mean = sums / count
    covariance = (products / count - torch.outer(mean, mean)).numpy()
    scale = np.sqrt(np.clip(np.diag(covariance), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        return covariance / np.outer(scale, scale)


def _shown_classes(context: AuditContext) -> list[int]:
    present = context.probe.present_classes
    counts = {c: int(np.sum(context.labels == c)) for c in present}
    return sorted(sorted(present, key=lambda c: -counts[c])[:MAX_CLASSES])


def _analyse(layer: Layer, means: np.ndarray, maps: MapStatistics, labels: np.ndarray,
             classes: list[int]) -> LayerNeurons:
    means = means.astype(np.float64)
    scale = max(float(np.abs(maps.maxima).max()), 1e-12)
    # A global average of a map that can go negative (SiLU, GELU) can be <= 0 although the map was
    # positive somewhere: such a layer's dead neurons are judged in the layer it pools, not here.
    dead_measured = not (_global_pool(layer) and maps.maxima.min() < -DEAD_TOLERANCE * scale)
    dead = (maps.maxima.max(axis=0) <= DEAD_TOLERANCE * scale) & dead_measured
    class_means = np.stack([means[labels == c].mean(axis=0) for c in classes], axis=1)
    deviation = means.std(axis=0)
    class_shift = np.divide(class_means - means.mean(axis=0)[:, None], deviation[:, None],
                            out=np.zeros_like(class_means), where=deviation[:, None] > 0)
    redundant = np.zeros(len(dead), dtype=bool)
    measured = len(means) >= MIN_IMAGES
    if measured:
        near = np.abs(np.nan_to_num(maps.correlation)) >= REDUNDANT_CORRELATION
        np.fill_diagonal(near, False)
        redundant = near.any(axis=1) & ~dead
        live = np.flatnonzero(~dead)
        distinct = int(connected_components(near[np.ix_(live, live)], directed=False)[0]) if len(live) else 0
    else:
        distinct = int((~dead).sum())
    # Clustering follows the rows shown: the channels' mean activations over the images.
    varying = np.flatnonzero(~dead & (deviation > 1e-8 * max(float(np.abs(means).max()), 1e-12)))
    clusters = np.zeros(len(dead), dtype=int)
    order = np.zeros(0, dtype=int)
    if len(varying):
        correlation = np.nan_to_num(np.atleast_2d(np.corrcoef(means[:, varying].T)))
        leaf_order, clusters[varying] = _cluster(correlation)
        order = varying[leaf_order]
    rest = np.setdiff1d(np.arange(len(dead)), np.concatenate([varying, np.flatnonzero(dead)]))
    order = np.concatenate([order, rest, np.flatnonzero(dead)]).astype(int)
    return LayerNeurons(layer, class_means, class_shift, order, clusters, dead, dead_measured, redundant, measured,
                        distinct)


def _cluster(correlation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leaf order (optimal leaf ordering) and cluster ids (from 1) of neurons, by 1 - correlation."""
    count = len(correlation)
    if count < 3:
        return np.arange(count), np.arange(1, count + 1)
    distance = np.clip(1 - correlation, 0, 2)
    np.fill_diagonal(distance, 0)
    condensed = squareform((distance + distance.T) / 2, checks=False)
    tree = hierarchy.linkage(condensed, "average")
    if count <= MAX_LEAF_ORDERING:  # cubic in the worst case: seconds at 2048 neurons
        tree = hierarchy.optimal_leaf_ordering(tree, condensed)
    return hierarchy.leaves_list(tree), hierarchy.fcluster(tree, CLUSTER_DISTANCE, criterion="distance")


# --- report ------------------------------------------------------------------------------------

def _table(results: list[LayerNeurons]) -> Table:
    rows = []
    for r in results:
        sizes = [s for s in r.cluster_sizes if s > 1]
        rows.append([r.layer.name, r.layer.type.removeprefix("fn:"), r.neurons,
                     _share(r.dead.sum(), r.neurons) if r.dead_measured else "n/a",
                     _share(r.redundant.sum(), r.neurons) if r.redundancy_measured else "n/a",
                     f"{len(sizes)} ({', '.join(map(str, sizes[:4]))}{', ...' if len(sizes) > 4 else ''})"
                     if sizes else "none"])
    caption = ("Per layer, input to output. Dead: the channel's output is never above zero anywhere on any probe "
               "image (n/a for a global average of maps that can go negative: see the layer it averages). "
               f"Redundant: its map correlates at least {REDUNDANT_CORRELATION} (or at most -{REDUNDANT_CORRELATION}) "
               "with another channel's map over every position of every probe image, a near-copy. Clusters: groups "
               "of at least "
               "two channels that respond alike (average correlation at least 0.5), with their sizes. A layer that "
               "is mostly dead or redundant could be much narrower, or did not train well.")
    return Table(["layer", "type", "channels", "dead", "redundant", "clusters (sizes)"], rows, caption,
                 "Dead and redundant neurons")


def _share(count, total) -> str:
    return f"{int(count)} ({count / max(1, total):.0%})"


def _figures(results: list[LayerNeurons], class_names: list[str], images: int) -> list[Figure]:
    panel_width = 1.0 + 0.13 * len(class_names)
    per_figure = max(1, min(len(results), int(figures.PAGE_WIDTH_IN // panel_width)))
    blocks = []
    for start in range(0, len(results), per_figure):
        group = results[start:start + per_figure]
        blocks.append(_heatmap_figure(group, class_names, images, panel_width))
    return blocks


def _heatmap_figure(results: list[LayerNeurons], class_names: list[str], images: int, panel_width: float) -> Figure:
    fig, axes = figures.plt.subplots(1, len(results), figsize=(panel_width * len(results), 4.6), squeeze=False)
    classes = len(class_names)
    for ax, r in zip(axes[0], results):
        values, strip, labels = _rows(r)
        image = ax.imshow(values, cmap="RdBu_r", vmin=-SHIFT_RANGE, vmax=SHIFT_RANGE, aspect="auto",
                          interpolation="nearest", extent=(-0.5, classes - 0.5, len(values) - 0.5, -0.5))
        ax.imshow(strip, aspect="auto", interpolation="nearest", extent=(-1.05, -0.6, len(values) - 0.5, -0.5))
        ax.set_xlim(-1.05, classes - 0.5)
        ax.set_xticks(range(classes), class_names, rotation=90, fontsize=6 if classes < 12 else 5)
        step = max(1, int(np.ceil(len(labels) / 32)))
        ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=4.5)
        ax.tick_params(axis="y", length=1.5, pad=1)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"{r.layer.name}\n{r.neurons} channels", fontsize=6.5)
    fig.subplots_adjust(wspace=0.5)  # room for the next panel's row labels
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.5, pad=0.02, aspect=30,
                 label="class mean - overall mean (neuron std)")
    binned = any(r.neurons > MAX_ROWS for r in results)
    caption = (f"Rows: neurons (channels) of each layer; columns: classes. Colour: how far the neuron's mean "
               f"activation on the class's probe images lies above (red) or below (blue) its mean over all "
               f"{images} images, in the neuron's standard deviations over the images (clipped at "
               f"{SHIFT_RANGE:g}). Neurons that respond alike over the images sit next to each other; the strip on "
               "the left marks their clusters (one colour per cluster, grey for a neuron on its own), dead neurons "
               "(black, at the bottom) and redundant ones (dark red). "
               + (f"Layers wider than {MAX_ROWS} channels are shown as {MAX_ROWS} bins of neighbouring neurons "
                  "(row label: first channel, +more in the bin). " if binned else "")
               + "Look for whether deep layers separate the classes (red in one column, blue in the others), long "
               "runs of identical rows (many neurons doing the same thing) and black bands (dead neurons).")
    title = "Neuron x class activations: " + ", ".join(r.layer.name for r in results)
    return Figure(figures.to_png(fig), caption, title)


def _rows(r: LayerNeurons) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Heatmap rows (neurons or bins of neighbours), the cluster/state strip (RGB) and row labels."""
    bins = np.array_split(r.order, min(MAX_ROWS, len(r.order)))
    palette = figures.plt.get_cmap("tab10")
    sizes = dict(zip(*np.unique(r.clusters, return_counts=True)))
    ranked = sorted((c for c in sizes if c > 0 and sizes[c] > 1), key=lambda c: -sizes[c])
    colour_of = {c: palette(k % 10)[:3] for k, c in enumerate(ranked)}
    values, strip, labels = [], [], []
    for members in bins:
        values.append(r.class_shift[members].mean(axis=0))
        ids, counts = np.unique(r.clusters[members], return_counts=True)
        colour = colour_of.get(int(ids[np.argmax(counts)]), (0.78, 0.78, 0.78))
        if r.redundant[members].mean() >= 0.5:
            colour = (0.55, 0.05, 0.1)
        if r.dead[members].mean() >= 0.5:
            colour = (0.0, 0.0, 0.0)
        strip.append([colour])
        labels.append(f"{members[0]}" + (f" +{len(members) - 1}" if len(members) > 1 else ""))
    return np.array(values), np.array(strip), labels


def _layer_data(r: LayerNeurons) -> dict:
    return {"layer": r.layer.name, "channels": r.neurons, "dead": int(r.dead.sum()) if r.dead_measured else None,
            "redundant": int(r.redundant.sum()) if r.redundancy_measured else None,
            "clusters": len([s for s in r.cluster_sizes if s > 1]),
            "dead_channels": np.flatnonzero(r.dead)[:64].tolist(),
            "class_means": np.round(r.class_means[:MAX_ROWS * 2], 4).tolist()}


def _checks(results: list[LayerNeurons], findings: list[Finding]) -> list[Check]:
    dead = max((float(r.dead.mean()) for r in results if r.dead_measured), default=0.0)
    redundant = max((float(r.redundant.mean()) for r in results if r.redundancy_measured), default=0.0)
    return [Check("Dead neurons (never active on the probe images) in any layer", round(dead, 4), f"{dead:.0%}",
                  f"warns at {MOSTLY:.0%} of a layer", *check_status(findings, "representation.dead_neurons")),
            Check("Redundant neurons (a copy of another) in any layer", round(redundant, 4), f"{redundant:.0%}",
                  f"noted at {SOME_REDUNDANT:.0%} of a layer, warns at {MOSTLY:.0%}",
                  *check_status(findings, "representation.redundant_neurons"))]


def _dead_finding(results: list[LayerNeurons]) -> Finding | None:
    mostly = [r for r in results if r.dead.sum() >= MOSTLY * r.neurons]
    if not mostly:
        return None
    worst = max(mostly, key=lambda r: r.dead.mean())
    layers = ", ".join(f"{r.layer.name} ({int(r.dead.sum())} of {r.neurons})" for r in mostly)
    more = f" and {len(mostly) - 1} more layer(s)" if len(mostly) > 1 else ""
    return Finding(
        "representation.dead_neurons", "representation", "warn", f"Mostly dead neurons in {worst.layer.name}{more}",
        f"At least half of the channels never respond to any probe image in: {layers}. They pass nothing on; the "
        "layer trained badly (dying ReLUs) or is far wider than it needs to be.",
        {"layer": worst.layer.name, "dead": int(worst.dead.sum()), "channels": worst.neurons,
         "layers": [{"layer": r.layer.name, "dead": int(r.dead.sum()), "channels": r.neurons} for r in mostly]},
        headline=f"{int(worst.dead.sum())} of {worst.neurons} channels of {worst.layer.name} never respond")


def _redundant_finding(results: list[LayerNeurons]) -> Finding | None:
    notable = [r for r in results if r.redundancy_measured and r.redundant.sum() >= SOME_REDUNDANT * r.neurons
               and r.redundant.sum() >= 2]
    if not notable:
        return None
    worst = max(notable, key=lambda r: r.redundant.mean())
    # A globally pooled layer only has one number per image and channel: channels that merely co-vary over
    # the images look like copies there. Its full maps are judged in the layer it pools, so it informs only.
    warned = [r for r in notable if r.redundant.mean() >= MOSTLY and not _global_pool(r.layer)]
    severity = "warn" if warned else "info"
    layers = ", ".join(f"{r.layer.name} ({int(r.redundant.sum())} of {r.neurons})" for r in notable)
    more = f" and {len(notable) - 1} more layer(s)" if len(notable) > 1 else ""
    # Collapse is about how many distinct signals the images get, which a pooled layer shows as well.
    collapsed = [r for r in notable if r.redundant.mean() >= MOSTLY and r.distinct is not None
                 and r.distinct <= max(COLLAPSED_SIGNALS, COLLAPSED_SHARE * r.neurons)]
    meaning = ("Such a layer carries less information than its width suggests; it could be narrower."
               if not collapsed else
               f"In {', '.join(f'{r.layer.name} ({r.neurons} channels, about {r.distinct} distinct)' for r in collapsed)} "
               "the channels reduce to a few distinct signals once near-copies are counted once: the representation "
               "has collapsed to a few directions. A model that decides from one or two global properties of the "
               "image (as a shortcut does) rather than many features of the object looks like this; read it with the "
               "shortcut findings.")
    return Finding(
        "representation.redundant_neurons", "representation", severity,
        f"{'Collapsed representation' if collapsed else 'Redundant neurons'} in {worst.layer.name}{more}",
        f"Channels whose output is a near-copy of another channel's (|correlation| at least {REDUNDANT_CORRELATION} "
        f"over every position of every probe image): {layers}. {meaning}"
        + ("" if warned else " No layer with spatial maps is mostly redundant, so this is for information."),
        {"layer": worst.layer.name, "redundant": int(worst.redundant.sum()), "channels": worst.neurons,
         "distinct": worst.distinct, "collapsed": [r.layer.name for r in collapsed],
         "correlation": REDUNDANT_CORRELATION,
         "layers": [{"layer": r.layer.name, "redundant": int(r.redundant.sum()), "channels": r.neurons}
                    for r in notable]},
        headline=f"{int(worst.redundant.sum())} of {worst.neurons} channels of {worst.layer.name} duplicate another")


def _global_pool(layer: Layer) -> bool:
    """A layer that averages (or maxes) whole maps to one value per channel."""
    pooled = "pool" in layer.type.lower() or layer.type in ("fn:mean", "fn:amax", "fn:sum")
    return pooled and (len(layer.shape) == 1 or (layer.is_spatial and layer.shape[1] * layer.shape[2] == 1))
