"""Representation similarity (SVCCA blog, seed 002): layers of the model compared with each other
and, given a reference model, with every layer of the reference; per-class similarity at the output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .. import figures
from ..context import AuditContext
from ..methods.representation_layers import RepresentationLayers
from ..model.graph import Layer
from ..registry import Section, register
from ..results import Figure, Finding, SectionResult, Table, Text
from ..sampling import sample_record, sample_words, stratified_subsample
from ..methods.representation_similarity import DATAPOINTS_PER_NEURON, Decomposition, debiased_cka, decompose, similarity_matrix

MAX_IMAGES = 2048            # a larger probe set is sampled (stratified by class, seeded): every layer's
                             # decomposition (images x neurons) is held at once
EARLY_OUTPUT_CKA = 0.5       # output this similar to the first layer: it follows global image statistics
DIVERGENCE_CKA = 0.8         # matched layers below this linear CKA: the models represent the input differently
SHALLOW_MARGIN = 0.2         # a deep layer matching an earlier reference layer this much better is worth saying
PER_CLASS_MAX = 12
MIN_CLASS_IMAGES = 4         # debiased CKA needs at least four datapoints
WITHIN_MEASURES = ("linear_cka", "svcca", "debiased_cka")
REFERENCE_MEASURES = ("svcca", "pwcca", "linear_cka", "debiased_cka")
MEASURE_TITLES = {"svcca": "SVCCA", "pwcca": "PWCCA", "linear_cka": "linear CKA", "debiased_cka": "debiased CKA"}
# The heatmaps show the one measure not biased upwards at the probe set's size; the others go to tables.
DRAWN = "debiased_cka"
SIMILARITY = figures.ColourScale("viridis", "debiased CKA (below 0 drawn as 0)")


@register
class RepresentationSimilarity(Section):
    name = "similarity"
    title = "Representation similarity"
    order = 80
    appendix = True
    intro = ("Each layer is described by its neurons' activations over the probe images (feature maps averaged "
             "over space), and two layers are compared with measures that ignore how neurons are ordered or "
             "scaled: linear CKA (and its debiased form, which stays near 0 for unrelated layers even with few "
             "images), SVCCA (canonical correlation between the directions that carry 99% of each layer's "
             "variance) and PWCCA (canonical correlations weighted by how much of the layer they account for). "
             "1 means the same information, up to a rotation. The heatmaps show debiased CKA alone; the other "
             "measures, which read too high when the probe set is small, are in tables. Compared within the model, "
             "the measures show how "
             "fast the representation changes with depth; compared with a reference model, where the two "
             "models start to see the input differently. Similarity is informational: it never sets the verdict "
             "on its own.")

    def run(self, context: AuditContext) -> SectionResult:
        chosen = context.representation_layers
        layers = chosen.all
        if len(layers) < 2:
            return self.result(status="skipped", reason="fewer than two layers to compare")
        if len(context.probe) < 3:
            return self.result(status="skipped", reason="needs at least three probe images")
        names = [l.name for l in layers]
        pooled = context.pooled_activations(names)
        finite = np.all([np.isfinite(v).all(axis=1) for v in pooled.values()], axis=0)
        if context.reference_graph is not None:  # the forward passes first, the linear algebra after
            theirs = context.pooled_activations([l.name for l in context.reference_representation_layers.all],
                                                graph=context.reference_graph)
            finite &= np.all([np.isfinite(v).all(axis=1) for v in theirs.values()], axis=0)
        rows = stratified_subsample(context.labels, MAX_IMAGES, context.options.seed)
        sampled = len(rows)
        rows = rows[finite[rows]]
        if len(rows) < 3:
            return self.result(status="skipped", reason="fewer than three probe images with finite activations")
        # One BLAS thread: beside torch's thread pool, OpenBLAS threads spin against each other and a
        # small SVD takes a second instead of milliseconds.
        with threadpool_limits(1, user_api="blas"):
            result = self._compare(context, chosen, pooled, rows)
        result.data["sample_cap"] = {"similarity": MAX_IMAGES}
        if sampled < len(context.probe):
            result.data["sample"] = sample_record(MAX_IMAGES, sampled, len(context.probe))
            result.blocks.insert(0, Text(f"Every measure here is computed {sample_words(sampled, len(context.probe))} "
                                         f"(at most {MAX_IMAGES:,}, each class keeping its share): every compared "
                                         "layer's decomposition, images by neurons, is held at once, and more images "
                                         "than this change the measures little.",
                                         "note"))
        return result

    def _compare(self, context: AuditContext, chosen: RepresentationLayers, pooled: dict[str, np.ndarray],
                 rows: np.ndarray) -> SectionResult:
        layers, names = chosen.all, [l.name for l in chosen.all]
        model = {name: decompose(pooled[name][rows]) for name in names}
        within = {m: similarity_matrix(list(model.values()), list(model.values()), m) for m in WITHIN_MEASURES}
        blocks: list = [_layer_table(layers, model, len(rows)), _within_figure(names, within[DRAWN]),
                        _neighbour_table(names, within)]
        blocks += _early_output_text(chosen, within["linear_cka"])
        data = {"images": int(len(rows)), "layers": names,
                "within": {m: _rounded(matrix) for m, matrix in within.items()}}
        findings: list[Finding] = []
        crowded = [name for name, d in model.items() if d.datapoints < DATAPOINTS_PER_NEURON * d.neurons]
        if context.reference_graph is None:
            blocks.append(Text("No reference model was given: the comparison with a reference and the per-class "
                               "similarity are skipped. Audit with a reference (for example the previous release, "
                               "or a model trained on curated data) to see where the two diverge.", "note"))
        else:
            compared = _compare_with_reference(context, chosen, model, rows)
            blocks += compared.blocks
            data["reference"] = compared.data
            findings += compared.findings
            crowded += [f"{name} (reference)" for name in compared.crowded]
        if crowded:
            blocks.insert(0, _crowded_warning(crowded, len(rows)))
        data["few_datapoints"] = crowded
        return self.result(blocks=blocks, data=data, findings=findings)


# --- the model against its reference ------------------------------------------------------------

@dataclass
class Comparison:
    blocks: list
    data: dict
    findings: list[Finding]
    crowded: list[str]


def _compare_with_reference(context: AuditContext, chosen: RepresentationLayers, model: dict[str, Decomposition],
                            rows: np.ndarray) -> Comparison:
    reference_chosen = context.reference_representation_layers
    reference_layers = reference_chosen.all
    reference_names = [l.name for l in reference_layers]
    pooled = context.pooled_activations(reference_names, graph=context.reference_graph)
    reference = {name: decompose(pooled[name][rows]) for name in reference_names}
    matrices = {m: similarity_matrix(list(model.values()), list(reference.values()), m) for m in REFERENCE_MEASURES}
    matches = _matches(chosen, reference_chosen)
    model_names = list(model)
    divergence = _divergence(model_names, reference_names, matrices, matches)
    blocks = [_reference_figure(model_names, reference_names, matrices, matches), _divergence_text(divergence),
              _match_table(model_names, reference_names, matrices, matches)]
    data = {"layers": reference_names, "matched": [[i, j] for i, j in matches],
            "divergence": divergence, **{m: _rounded(matrix) for m, matrix in matrices.items()}}
    per_class = _per_class(context, chosen, reference_chosen, rows)
    if per_class["classes"]:
        blocks.append(_per_class_figure(per_class))
    else:
        blocks.append(Text(per_class["note"], "note"))
    data["per_class"] = {k: v for k, v in per_class.items() if k != "note"}
    findings = []
    if divergence["first"] is not None and divergence["first"]["index"] == 0:
        findings.append(_divergence_finding(divergence))
    crowded = [name for name, d in reference.items() if d.datapoints < DATAPOINTS_PER_NEURON * d.neurons]
    return Comparison(blocks, data, findings, crowded)


def _matches(model: RepresentationLayers, reference: RepresentationLayers) -> list[tuple[int, int]]:
    """Which reference layer each model layer should resemble: the same name where the architectures
    agree, else the same relative depth among hidden layers, penultimate to penultimate, output to output."""
    model_layers, reference_layers = model.all, reference.all
    reference_index = {l.name: j for j, l in enumerate(reference_layers)}
    if [l.name for l in model_layers] == [l.name for l in reference_layers]:
        return [(i, i) for i in range(len(model_layers))]
    pairs = []
    hidden_m = [i for i, l in enumerate(model_layers) if model.role(l) == "hidden"]
    hidden_r = [j for j, l in enumerate(reference_layers) if reference.role(l) == "hidden"]
    for position, i in enumerate(hidden_m):
        if hidden_r:
            depth = position / max(1, len(hidden_m) - 1)
            pairs.append((i, hidden_r[round(depth * (len(hidden_r) - 1))]))
    for role in ("penultimate", "output"):
        mine = getattr(model, role)
        theirs = getattr(reference, role)
        if mine is not None and theirs is not None and theirs.name in reference_index:
            i = next(k for k, l in enumerate(model_layers) if l.node == mine.node)
            pairs.append((i, reference_index[theirs.name]))
    return sorted(set(pairs))


def _divergence(model_names: list[str], reference_names: list[str], matrices: dict[str, np.ndarray],
                matches: list[tuple[int, int]]) -> dict:
    cka = matrices["linear_cka"]
    matched = [{"index": position, "layer": model_names[i], "reference_layer": reference_names[j], "reference_index": j,
                **{m: _number(matrices[m][i, j]) for m in REFERENCE_MEASURES}}
               for position, (i, j) in enumerate(matches)]
    first = next((m for m in matched if m["linear_cka"] is not None and m["linear_cka"] < DIVERGENCE_CKA), None)
    best = [{"layer": model_names[i], "best_reference_layer": reference_names[int(np.nanargmax(cka[i]))],
             "reference_index": int(np.nanargmax(cka[i])), "linear_cka": _number(np.nanmax(cka[i]))}
            for i in range(len(model_names)) if np.isfinite(cka[i]).any()]
    return {"threshold": DIVERGENCE_CKA, "measure": "linear_cka", "matched": matched, "first": first, "best": best}


def _divergence_text(divergence: dict) -> Text:
    matched, first = divergence["matched"], divergence["first"]
    if not matched:
        return Text("No layer of the reference could be matched to the model's layers by depth.", "note")
    if first is None:
        return Text(f"The two models agree at every matched depth: linear CKA stays at or above "
                    f"{DIVERGENCE_CKA} from {matched[0]['layer']} to {matched[-1]['layer']}.", "plain")
    agreed = matched[first["index"] - 1]["layer"] if first["index"] else None
    lead = (f"The two models agree (linear CKA at least {DIVERGENCE_CKA}) up to {agreed}; they first diverge at "
            if agreed else "The two models differ from the first compared layer on: ")
    later = [m for m in matched[first["index"]:] if m["linear_cka"] is not None]
    lowest = min(later, key=lambda m: m["linear_cka"])
    text = (f"{lead}{first['layer']} against the reference's {first['reference_layer']} (linear CKA "
            f"{first['linear_cka']:.2f}, SVCCA {_fmt(first['svcca'])}). The lowest similarity is at "
            f"{lowest['layer']} (linear CKA {lowest['linear_cka']:.2f}). From there on the two models compute "
            "different features from the same images: look at what the audited model uses there.")
    shallow = _shallow_match(divergence)
    if shallow:
        text += (f" The audited model's deep layers look most like the reference's earlier layers ({shallow}): it "
                 "does not build the deep features the reference builds.")
    return Text(text, "plain")


def _shallow_match(divergence: dict) -> str:
    """Deep model layers whose best reference match lies well before the layer at their own depth."""
    best = {b["layer"]: b for b in divergence["best"]}
    found = []
    for m in divergence["matched"][len(divergence["matched"]) // 2:]:
        match = best.get(m["layer"])
        if (match and m["linear_cka"] is not None and match["reference_index"] < m["reference_index"]
                and match["linear_cka"] >= m["linear_cka"] + SHALLOW_MARGIN):
            found.append(f"{m['layer']} matches {match['best_reference_layer']} with linear CKA "
                         f"{match['linear_cka']:.2f}, its own depth {m['linear_cka']:.2f}")
    return "; ".join(found[:3])


def _divergence_finding(divergence: dict) -> Finding:
    first = divergence["first"]
    return Finding(
        "representation.reference_divergence", "representation", "info",
        "The model's representation differs from the reference's from the first layers",
        f"Already at {first['layer']} the model and the reference share little (linear CKA {first['linear_cka']:.2f} "
        f"against {first['reference_layer']}; agreement would be at least {DIVERGENCE_CKA}). The two models "
        "process the images differently from the start; this is for information, not a defect by itself.",
        {"layer": first["layer"], "reference_layer": first["reference_layer"], "linear_cka": first["linear_cka"],
         "threshold": DIVERGENCE_CKA})


def _match_table(model_names: list[str], reference_names: list[str], matrices: dict[str, np.ndarray],
                 matches: list[tuple[int, int]]) -> Table:
    cka = matrices["linear_cka"]
    rows = []
    for i, j in matches:
        best = int(np.nanargmax(cka[i])) if np.isfinite(cka[i]).any() else None
        rows.append([model_names[i], reference_names[j], *(_fmt(matrices[m][i, j]) for m in REFERENCE_MEASURES),
                     f"{reference_names[best]} ({cka[i, best]:.2f})" if best is not None else "n/a"])
    caption = (f"Each model layer against the reference layer at the same depth (boxed in the heatmap), and the "
               f"reference layer most similar to it by linear CKA. Values below {DIVERGENCE_CKA} mean the two "
               "layers carry different information; a best match at another depth means the reference computes "
               "the same thing earlier or later.")
    return Table(["model layer", "reference layer", *(MEASURE_TITLES[m] for m in REFERENCE_MEASURES), "best match"],
                 rows, caption, "Similarity at matched depths")


# --- per class at the output --------------------------------------------------------------------

def _per_class(context: AuditContext, chosen: RepresentationLayers, reference_chosen: RepresentationLayers,
               rows: np.ndarray) -> dict:
    empty = {"classes": [], "images": [], "logit_correlation": [], "penultimate_debiased_cka": []}
    if chosen.output is None or reference_chosen.output is None:
        return empty | {"note": "Per-class similarity needs the output layer of both models; one has none."}
    reference_classes = list(context.reference.meta.classes)
    labels = context.labels[rows]
    present = [c for c in context.probe.present_classes if context.classes[c] in reference_classes]
    if not present:
        return empty | {"note": "The model and the reference share no class present in the probe set, so their "
                                "outputs cannot be compared class by class."}
    counts = {c: int(np.sum(labels == c)) for c in present}
    shown = sorted(sorted(present, key=lambda c: -counts[c])[:PER_CLASS_MAX])
    names = [chosen.output.name] + ([chosen.penultimate.name] if chosen.penultimate else [])
    reference_names = [reference_chosen.output.name] + (
        [reference_chosen.penultimate.name] if reference_chosen.penultimate else [])
    mine = context.pooled_activations(names)
    theirs = context.pooled_activations(reference_names, graph=context.reference_graph)
    scores, reference_scores = _class_scores(mine[names[0]][rows]), _class_scores(theirs[reference_names[0]][rows])
    result = dict(empty)
    for c in shown:
        j = reference_classes.index(context.classes[c])
        members = labels == c
        result["classes"].append(context.classes[c])
        result["images"].append(counts[c])
        result["logit_correlation"].append(_number(_correlation(scores[:, c], reference_scores[:, j])))
        cka = float("nan")
        if len(names) == 2 and len(reference_names) == 2 and members.sum() >= MIN_CLASS_IMAGES:
            cka = debiased_cka(mine[names[1]][rows][members], theirs[reference_names[1]][rows][members])
        result["penultimate_debiased_cka"].append(_number(cka))
    result["layers"] = {"model": names, "reference": reference_names}
    return result


def _class_scores(logits: np.ndarray) -> np.ndarray:
    """Logits minus each image's mean logit: what softmax sees (a shift per image changes nothing)."""
    return logits - logits.mean(axis=1, keepdims=True)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt(np.sum(a ** 2) * np.sum(b ** 2))
    return float(np.sum(a * b) / scale) if scale > 0 else float("nan")


def _per_class_figure(per_class: dict) -> Figure:
    classes = per_class["classes"]
    y = np.arange(len(classes))
    fig, ax = figures.plt.subplots(figsize=(figures.PAGE_WIDTH_IN * 0.8, 0.9 + 0.32 * len(classes)))
    series = [("class score correlation (all images)", per_class["logit_correlation"], "#1f77b4"),
              ("penultimate debiased CKA (images of the class)", per_class["penultimate_debiased_cka"], "#ff7f0e")]
    for offset, (label, values, colour) in zip((-0.2, 0.2), series):
        values = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.barh(y + offset, np.nan_to_num(values), height=0.38, color=colour, label=label)
        for k, value in enumerate(values):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            ax.text(max(0.0, 0 if np.isnan(value) else value) + 0.01, y[k] + offset, text, va="center", fontsize=6)
    ax.set_yticks(y, [f"{c} ({n})" for c, n in zip(classes, per_class["images"])])
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, ax.get_xlim()[0]), 1.12)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("similarity between the model and the reference")
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=6)
    caption = ("Per class (probe images in brackets): blue, the correlation over all probe images between the two "
               "models' scores for the class (logit minus the image's mean logit); orange, debiased CKA between "
               "the two penultimate layers on the images of that class only (n/a: fewer than "
               f"{MIN_CLASS_IMAGES} images). Look for classes far below the others: there the audited model decides "
               "by something the reference does not use.")
    return Figure(figures.to_png(fig), caption, "Per-class similarity to the reference", width="80%")


# --- figures and tables -------------------------------------------------------------------------

def _layer_table(layers: list[Layer], decomposed: dict[str, Decomposition], images: int) -> Table:
    rows = [[k + 1, l.name, l.type.removeprefix("fn:"), "x".join(map(str, l.shape)), decomposed[l.name].neurons,
             decomposed[l.name].kept(), f"{images / max(1, decomposed[l.name].neurons):.1f}"]
            for k, l in enumerate(layers)]
    caption = ("The layers compared, input to output. Neurons: channels (maps averaged over space). Kept: the "
               "directions SVCCA keeps (99% of the variance). Images per neuron below "
               f"{DATAPOINTS_PER_NEURON} make SVCCA, PWCCA and linear CKA read too high.")
    return Table(["#", "layer", "type", "output", "neurons", "kept", "images per neuron"], rows, caption,
                 "Layers compared")


def _neighbour_table(names: list[str], within: dict[str, np.ndarray]) -> Table:
    measures = (DRAWN, *(m for m in WITHIN_MEASURES if m != DRAWN))
    rows = [[names[k], names[k - 1], *(_fmt(within[m][k, k - 1]) for m in measures)] for k in range(1, len(names))]
    caption = ("Each compared layer against the one before it, by every measure; a sharp drop marks a layer that "
               "changes the representation a lot. Linear CKA and SVCCA read too high when a layer has few probe "
               f"images per neuron (below {DATAPOINTS_PER_NEURON}, see the table above); debiased CKA, drawn in the "
               "heatmap, does not. Every pair of layers by every measure is in findings.json.")
    return Table(["layer", "previous layer", *(MEASURE_TITLES[m] for m in measures)], rows, caption,
                 "Neighbouring layers by every measure")


def _within_figure(names: list[str], matrix: np.ndarray) -> Figure:
    fig = _heatmap_figure(matrix, names, names, "layer (input to output)", "layer (input to output)")
    caption = ("Debiased CKA between every two compared layers of the model (the diagonal is 1): of the measures "
               "computed, the one that stays near 0 for unrelated layers however few the probe images; the colour "
               "scale is fixed from 0 to 1. Square blocks of high similarity along the diagonal are stretches of "
               "depth that change the representation little (redundant depth); a sharp drop between neighbouring "
               "layers marks a layer that changes it a lot. The output usually stands apart from everything before "
               "it.")
    return Figure(figures.to_png(fig), caption, "Similarity between the model's layers", width="70%")


def _reference_figure(model_names: list[str], reference_names: list[str], matrices: dict[str, np.ndarray],
                      matches: list[tuple[int, int]]) -> Figure:
    fig = _heatmap_figure(matrices[DRAWN], model_names, reference_names, "audited model (input to output)",
                          "reference model (input to output)")
    for i, j in matches:
        fig.axes[0].add_patch(figures.plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                                    linewidth=0.9))
    caption = ("Debiased CKA between every compared layer of the audited model (rows) and every compared layer of "
               "the reference (columns), on a fixed 0 to 1 scale; red boxes pair layers at the same depth. Two "
               "models that learned the same thing show a bright diagonal from the bottom left to the top right. "
               "Where the diagonal fades, the models part ways. SVCCA, PWCCA and linear CKA, which read too high "
               "with few probe images, are in the table of matched depths below.")
    return Figure(figures.to_png(fig), caption, "The audited model against the reference", width="70%")


def _heatmap_figure(matrix: np.ndarray, row_names: list[str], column_names: list[str], row_label: str,
                    column_label: str):
    """The drawn measure as one heatmap on the fixed 0 to 1 scale, with its colour bar."""
    size = figures.PAGE_WIDTH_IN * 0.62
    fig, ax = figures.plt.subplots(figsize=(size, size))
    _heatmap(ax, matrix, row_names, column_names, MEASURE_TITLES[DRAWN])
    ax.set_ylabel(row_label)
    ax.set_xlabel(column_label)
    figures.add_colour_bar(fig, ax, SIMILARITY)
    return fig


def _heatmap(ax, matrix: np.ndarray, row_names: list[str], column_names: list[str], title: str) -> None:
    cmap = figures.plt.get_cmap(SIMILARITY.cmap).with_extremes(bad="#bbbbbb")
    ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=SIMILARITY.low, vmax=SIMILARITY.high, origin="lower",
              interpolation="nearest", aspect="auto")
    rows, columns = matrix.shape
    font = 7 if max(rows, columns) <= 8 else 6 if max(rows, columns) <= 12 else 5
    ax.set_xticks(range(columns), column_names, rotation=90, fontsize=font)
    ax.set_yticks(range(rows), row_names, fontsize=font)
    ax.set_title(title)
    if max(rows, columns) <= 12:
        for i in range(rows):
            for j in range(columns):
                value = matrix[i, j]
                ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                        fontsize=font - 1.5, color="black" if np.nan_to_num(value) > 0.6 else "white")


def _early_output_text(chosen: RepresentationLayers, cka: np.ndarray) -> list[Text]:
    """Say so when the output is about as readable from the first layer's averaged responses as from the last."""
    layers = chosen.all
    if chosen.output is None or len(layers) < 3 or chosen.role(layers[0]) != "hidden":
        return []
    value = cka[-1, 0]
    if not np.isfinite(value) or value < EARLY_OUTPUT_CKA:
        return []
    return [Text(f"The output is strongly similar to the first compared layer, {layers[0].name} (linear CKA "
                 f"{value:.2f}): the model's scores follow the spatially averaged responses of its first layer, "
                 "which carry little more than colour, brightness and texture statistics. A model that recognises "
                 "objects usually shows little similarity here. Check the shortcut probes for a global image cue.",
                 "note")]


def _crowded_warning(layers: list[str], images: int) -> Text:
    shown = ", ".join(layers[:8]) + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")
    return Text(f"Only {images} probe images for layers with many neurons: {shown} have fewer than "
                f"{DATAPOINTS_PER_NEURON} images per neuron. There SVCCA, PWCCA and linear CKA are biased towards 1 "
                "(with fewer images than neurons, canonical correlations are 1 by construction); rely on debiased "
                "CKA, or audit with more probe images.", "warning")


def _number(value) -> float | None:
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None


def _fmt(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def _rounded(matrix: np.ndarray) -> list[list[float | None]]:
    return [[_number(v) for v in row] for row in matrix]
