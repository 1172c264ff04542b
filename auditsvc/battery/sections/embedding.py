"""Embedding: t-SNE of the penultimate representation, and what its neighbourhoods follow.

The picture is t-SNE (seed 001, the cs231n notes' t-SNE of the 4096-d code); the numbers are
not read off the picture but measured in the representation itself: the leave-one-out
k-nearest-neighbour agreement of a colouring (label, prediction, manifest attribute) with the
representation, against its permutation null. An attribute the representation follows better
than the label, or that it separates inside every class better than it separates the classes
inside every attribute value, gets a `representation.<attribute>_clusters` finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from .. import figures
from ..context import AuditContext
from ..registry import Section, register
from ..sampling import sample_record, sample_words, stratified_subsample
from ..results import Check, Figure, Finding, SectionResult, Table, Text, check_status

NEIGHBOURS = 10
PERMUTATIONS = 200
MIN_IMAGES = 5             # fewer and neither t-SNE nor a neighbourhood means anything
MIN_STRATUM = 4            # a class (or attribute value) needs this many images for the within test
TSNE_MAX_IMAGES = 1000     # t-SNE is drawn on a stratified sample above this (the statistics use all images)
TSNE_PCA_DIMENSIONS = 50
COLOURED_VALUES = 10       # values with their own colour; the rest are grey
SHOWN_ATTRIBUTES = 4       # attribute panels in the figure (all attributes are measured)
ALPHA = 0.01               # permutation p-value for "better than chance"
STRONG_SKILL = 0.5         # chance-corrected agreement that counts as "well"
MARGIN = 0.2               # by how much the attribute must beat the label
GREY = (0.72, 0.72, 0.72)
LEGEND_CHARS = 18          # longer legend entries keep their start and end
_TAB10 = [figures.plt.get_cmap("tab10")(i)[:3] for i in range(10)]
# Ten colours each, without tab10's grey (kept for "other"); attributes start elsewhere in the
# cycle than classes, so a reader never takes an attribute's colour for a class's.
CLASS_COLOURS = [_TAB10[i] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)] + [(0.0, 0.0, 0.0)]
ATTRIBUTE_COLOURS = [_TAB10[i] for i in (2, 4, 3, 9, 5, 8, 6, 0, 1)] + [(0.0, 0.0, 0.0)]


@dataclass
class Agreement:
    """Leave-one-out kNN accuracy predicting a colouring from the representation, against chance."""
    accuracy: float
    chance: float          # mean accuracy with the colouring permuted (within strata, if any)
    p_value: float
    images: int            # images the test used

    @property
    def skill(self) -> float:
        """0 at chance, 1 when every image's neighbours vote for its own value."""
        return 0.0 if self.chance >= 1 else (self.accuracy - self.chance) / (1 - self.chance)

    @property
    def significant(self) -> bool:
        return self.images > 0 and self.p_value < ALPHA

    def to_json(self) -> dict:
        return {"knn_accuracy": round(self.accuracy, 4), "chance": round(self.chance, 4),
                "skill": round(self.skill, 4), "p_value": round(self.p_value, 4), "images": self.images}


@dataclass
class AttributeClusters:
    """How the representation treats one attribute compared with the label."""
    attribute: str
    overall: Agreement            # attribute from the whole representation
    label: Agreement              # label, on the same images
    within_label: Agreement | None       # attribute among the images of each class
    label_within_value: Agreement | None  # label among the images of each attribute value

    @property
    def beats_label(self) -> bool:
        return (self.overall.significant and self.overall.skill >= STRONG_SKILL
                and self.overall.skill >= self.label.skill + MARGIN)

    @property
    def splits_classes(self) -> bool:
        if self.within_label is None or not self.within_label.significant:
            return False
        rival = self.label_within_value.skill if self.label_within_value else 0.0
        return self.within_label.skill >= STRONG_SKILL and self.within_label.skill >= rival + MARGIN

    @property
    def triggered(self) -> bool:
        return self.beats_label or self.splits_classes

    def to_json(self) -> dict:
        return {"overall": self.overall.to_json(), "label": self.label.to_json(),
                "within_label": self.within_label.to_json() if self.within_label else None,
                "label_within_value": self.label_within_value.to_json() if self.label_within_value else None,
                "beats_label": self.beats_label, "splits_classes": self.splits_classes}


# --- statistics --------------------------------------------------------------------------

def knn_votes(neighbour_codes: np.ndarray) -> np.ndarray:
    """Majority value among each row's neighbours (nearest first); ties go to the nearest."""
    counts = (neighbour_codes[:, :, None] == neighbour_codes[:, None, :]).sum(axis=2)
    return neighbour_codes[np.arange(len(neighbour_codes)), counts.argmax(axis=1)]


def knn_agreement(features: np.ndarray, codes: np.ndarray, strata: np.ndarray | None = None, *,
                  seed: int, permutations: int = PERMUTATIONS) -> Agreement:
    """Leave-one-out kNN accuracy of `codes` from `features`, with neighbours (and the permutation
    null) restricted to each stratum when `strata` is given. Strata where the codes take one value,
    or with fewer than MIN_STRATUM images, are left out: they cannot show anything."""
    strata = np.zeros(len(codes), dtype=int) if strata is None else strata
    groups = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        if len(members) < MIN_STRATUM or len(np.unique(codes[members])) < 2:
            continue
        k = min(NEIGHBOURS, len(members) - 1)
        local = NearestNeighbors(n_neighbors=k).fit(features[members]).kneighbors(return_distance=False)
        groups.append((members, local))
    if not groups:
        return Agreement(0.0, 0.0, 1.0, 0)
    images = sum(len(m) for m, _ in groups)

    def accuracy(values: np.ndarray) -> float:
        return sum(int((knn_votes(values[m][local]) == values[m]).sum()) for m, local in groups) / images

    observed = accuracy(codes)
    rng = np.random.default_rng(seed)
    null = np.empty(permutations)
    for i in range(permutations):
        shuffled = codes.copy()
        for members, _ in groups:
            shuffled[members] = rng.permutation(codes[members])
        null[i] = accuracy(shuffled)
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
    return Agreement(float(observed), float(null.mean()), float(p_value), images)


def attribute_clusters(features: np.ndarray, labels: np.ndarray, values: list[str], attribute: str,
                       seed: int) -> AttributeClusters | None:
    """Does the representation follow `attribute` rather than the label? None when untestable."""
    present = np.array([v != "" for v in values])
    if present.sum() < MIN_IMAGES or len({v for v in values if v}) < 2:
        return None
    codes = np.unique(np.asarray(values)[present], return_inverse=True)[1]
    x, y = features[present], labels[present]
    return AttributeClusters(
        attribute,
        overall=knn_agreement(x, codes, seed=seed),
        label=knn_agreement(x, y, seed=seed + 1),
        within_label=_or_none(knn_agreement(x, codes, y, seed=seed + 2)),
        label_within_value=_or_none(knn_agreement(x, y, codes, seed=seed + 3)),
    )


def _or_none(agreement: Agreement) -> Agreement | None:
    return agreement if agreement.images else None


def tsne_points(features: np.ndarray, seed: int) -> np.ndarray:
    """2-d t-SNE of (n, d) features: PCA to at most 50 dimensions first, perplexity fitted to n."""
    features = features - features.mean(axis=0)
    if features.shape[1] < 2:
        features = np.pad(features, ((0, 0), (0, 2 - features.shape[1])))
    dims = max(2, min(TSNE_PCA_DIMENSIONS, len(features) - 1, features.shape[1]))
    if features.shape[1] > dims:
        features = PCA(dims, random_state=seed).fit_transform(features)
    # One thread: with torch's OpenMP runtime loaded beside scikit-learn's, two threads spin against
    # each other and t-SNE of 200 points takes a minute instead of half a second.
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity_for(len(features)), init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(features.astype(np.float32))


def perplexity_for(count: int) -> float:
    return float(np.clip((count - 1) / 3, 2.0, 30.0))


# --- the section -------------------------------------------------------------------------

@register
class Embedding(Section):
    name = "embedding"
    title = "Embedding"
    order = 78
    intro = ("The representation the classifier head reads (the penultimate layer), one point per probe image, "
             "laid out in two dimensions by t-SNE so that images the model represents alike land close together. "
             "The same layout is coloured by the true label, by the prediction and by each manifest attribute. "
             "How closely the representation follows each colouring is measured in the representation itself: "
             "for every image, do most of its 10 nearest neighbours share its value? A model that learned the "
             "classes groups its images by label; one grouped by an attribute such as the weather has learned "
             "the attribute.")

    def run(self, context: AuditContext) -> SectionResult:
        layer = context.graph.penultimate_layer()
        features = np.nan_to_num(context.pooled_activations([layer.name])[layer.name].astype(np.float64))
        if len(features) < MIN_IMAGES:
            return self.result(status="skipped", reason=f"t-SNE and neighbourhoods need at least {MIN_IMAGES} "
                                                        f"probe images; there are {len(features)}")
        seed = context.options.seed * 1_000 + 1
        labels, predictions = context.labels, context.outputs.predictions
        colourings = {"true label": [context.classes[i] for i in labels],
                      "prediction": [context.classes[i] for i in predictions]}
        attributes = {name: context.probe.attribute(name) for name in context.probe.attribute_names}
        colourings |= {f"attribute '{name}'": column for name, column in attributes.items()}
        data: dict = {"layer": layer.name, "dimensions": int(features.shape[1]), "images": len(features)}
        if np.ptp(features, axis=0).max() == 0:
            return self.result(blocks=[Text(f"The penultimate layer ({layer.name}) gives the same values for every "
                                            "probe image, so it groups nothing: the model answers the same "
                                            "whatever it sees.", "warning")], data=data | {"constant": True})
        agreements = {name: _agreement(features, column, seed + i) for i, (name, column) in enumerate(colourings.items())
                      if len(set(column) - {""}) > 1}
        clusters = [c for name, column in attributes.items()
                    if (c := attribute_clusters(features, labels, column, name, seed + 100)) is not None]
        shown = stratified_subsample(labels, TSNE_MAX_IMAGES, seed)
        points = tsne_points(features[shown], seed)
        panel_names = list(colourings)[:2 + SHOWN_ATTRIBUTES]
        blocks = [_tsne_figure(points, shown, {n: colourings[n] for n in panel_names}, agreements, layer.name,
                               len(features)),
                  _agreement_table(agreements, clusters)]
        findings = [_finding(c, points, shown, colourings, agreements, layer.name) for c in clusters if c.triggered]
        blocks.append(_verdict_text(clusters, findings, attributes))
        data |= {"tsne_images": len(shown), "sample_cap": {"tsne": TSNE_MAX_IMAGES},
                 **({"tsne_sample": sample_record(TSNE_MAX_IMAGES, len(shown), len(features))}
                    if len(shown) < len(features) else {}),
                 "perplexity": round(perplexity_for(len(shown)), 2),
                 "neighbours": NEIGHBOURS, "agreement": {n: a.to_json() for n, a in agreements.items()},
                 "attributes": {c.attribute: c.to_json() for c in clusters}}
        return self.result(blocks=blocks, data=data, findings=findings, checks=_checks(clusters, findings))


def _checks(clusters: list[AttributeClusters], findings: list[Finding]) -> list[Check]:
    """Per manifest attribute: does the representation group images by it more than by class?"""
    return [Check(f"Representation groups images by '{c.attribute}' rather than by class",
                  round(c.overall.skill, 4),
                  f"skill {c.overall.skill:.2f} ('{c.attribute}'), {c.label.skill:.2f} (class)",
                  f"warns at skill {STRONG_SKILL} and {MARGIN} above the class's, or the same within each class",
                  *check_status(findings, f"representation.{_code(c.attribute)}_clusters"))
            for c in clusters]


def _agreement(features: np.ndarray, column: list[str], seed: int) -> Agreement:
    """kNN agreement of one colouring, over the images that have a value."""
    values = np.asarray(column)
    present = values != ""
    return knn_agreement(features[present], np.unique(values[present], return_inverse=True)[1], seed=seed)


def _tsne_figure(points: np.ndarray, shown: np.ndarray, colourings: dict[str, list[str]],
                 agreements: dict[str, Agreement], layer: str, total: int, title: str = "") -> Figure:
    class_colours = _palette([*colourings.get("true label", []), *colourings.get("prediction", [])], CLASS_COLOURS)
    palettes = {name: class_colours if name in ("true label", "prediction")
                else _palette([column[i] or "(none)" for i in shown], ATTRIBUTE_COLOURS)
                for name, column in colourings.items()}
    columns = min(3, len(colourings)) if len(colourings) != 4 else 2
    rows = int(np.ceil(len(colourings) / columns))
    side = figures.PAGE_WIDTH_IN / columns
    legend_lines = max(int(np.ceil((len(p) + 1) / _legend_columns(p, side))) for p in palettes.values())
    # Each panel is a square-ish plot, its title above and its legend in a row of its own below.
    plot, legend, heading = min(side * 0.78, 2.5), 0.16 * legend_lines + 0.1, 0.4
    fig = figures.plt.figure(figsize=(figures.PAGE_WIDTH_IN, rows * (heading + plot + legend)))
    grid = fig.add_gridspec(rows, columns, hspace=heading / (plot + legend), wspace=0.08, left=0.01, right=0.99,
                            top=1 - heading / (rows * (heading + plot + legend)), bottom=0.0)
    for index, (name, column) in enumerate(colourings.items()):
        cell = grid[divmod(index, columns)].subgridspec(2, 1, height_ratios=[plot, legend], hspace=0.03)
        ax, key = fig.add_subplot(cell[0]), fig.add_subplot(cell[1])
        _scatter(ax, key, points, [column[i] or "(none)" for i in shown], palettes[name], side)
        agreement = agreements.get(name)
        detail = (f"\nneighbours agree {agreement.accuracy:.0%} (chance {agreement.chance:.0%})"
                  if agreement else "\none value: nothing to separate")
        ax.set_title(name + detail, fontsize=8)
    subsample = f" {sample_words(len(shown), total)}" if len(shown) < total else ""
    caption = (f"t-SNE of the penultimate layer ({layer}){subsample}; each panel is the same layout coloured "
               "differently. Look for which colouring the islands follow: a model that learned its classes forms "
               "islands of one true-label colour; islands of one attribute colour that mix labels mean the model "
               "represents images by that attribute. Distances between islands and their sizes mean little in "
               "t-SNE; the 'neighbours agree' numbers are measured in the full representation (share of images "
               f"whose {NEIGHBOURS} nearest neighbours vote for their own value), with chance from shuffled values. "
               f"Only the {COLOURED_VALUES} most frequent values get a colour; the rest are grey.")
    return Figure(figures.to_png(fig), caption, title or "t-SNE of the penultimate representation")


def _palette(values: list[str], colours: list[tuple]) -> dict[str, tuple]:
    """The most frequent values get the colours (in order of frequency), all others stay grey."""
    names, counts = np.unique([v for v in values if v], return_counts=True)
    top = [str(names[i]) for i in np.lexsort((names, -counts))[:COLOURED_VALUES]]
    return {value: colours[i] for i, value in enumerate(top)}


def _scatter(ax, key, points: np.ndarray, values: list[str], colours: dict[str, tuple], width: float) -> None:
    """One panel in `ax`, its legend in `key` (an empty axes below it, `width` inches wide)."""
    values_arr = np.asarray(values)
    others = ~np.isin(values_arr, list(colours))
    marker = max(3.0, min(14.0, 3000 / len(points)))
    if others.any():
        rest = len(set(values_arr[others]))
        ax.scatter(points[others, 0], points[others, 1], s=marker, color=GREY, linewidths=0,
                   label=f"other ({rest} value{'s' if rest > 1 else ''})")
    for value, colour in colours.items():
        chosen = values_arr == value
        if chosen.any():
            ax.scatter(points[chosen, 0], points[chosen, 1], s=marker, color=colour, linewidths=0, alpha=0.85,
                       label=_legend_label(value))
    ax.set_xticks([])
    ax.set_yticks([])
    key.axis("off")
    key.legend(*ax.get_legend_handles_labels(), loc="upper center", ncol=_legend_columns(colours, width),
               fontsize=6.5, frameon=False, markerscale=max(1.0, 12 / marker), handletextpad=0.2, columnspacing=0.8,
               borderaxespad=0.1)


def _legend_columns(colours: dict[str, tuple], width: float) -> int:
    """As many legend columns as fit in `width` inches at 6.5 pt (about 0.06 in a character)."""
    longest = max([len(_legend_label(v)) for v in colours] + [len("other (99 values)")])
    return int(np.clip(width // (0.06 * longest + 0.4), 1, 3))


def _legend_label(value: str) -> str:
    return figures.shorten(value, LEGEND_CHARS, keep_end=True)


def _agreement_table(agreements: dict[str, Agreement], clusters: list[AttributeClusters]) -> Table:
    within = {f"attribute '{c.attribute}'": c for c in clusters}
    rows = []
    for name, a in agreements.items():
        c = within.get(name)
        inside = (f"{c.within_label.accuracy:.0%} vs {c.within_label.chance:.0%} (p {c.within_label.p_value:.2g})"
                  if c and c.within_label else "")
        rival = (f"{c.label_within_value.accuracy:.0%} vs {c.label_within_value.chance:.0%}"
                 if c and c.label_within_value else "")
        rows.append([name, f"{a.accuracy:.0%}", f"{a.chance:.0%}", f"{a.skill:.2f}", f"{a.p_value:.2g}", inside, rival])
    caption = (f"Leave-one-out {NEIGHBOURS}-nearest-neighbour agreement in the penultimate representation: the share "
               "of images whose neighbours' majority has the image's own value, against the same with the values "
               f"shuffled ({PERMUTATIONS} permutations). Skill rescales it: 0 = chance, 1 = every neighbourhood "
               "pure. For attributes, 'within each class' asks the same among the images of one true class only "
               "(neighbours and shuffles stay inside the class); 'label within each value' asks the reverse. "
               "A representation organised by the classes has a high label skill and a label-within-value "
               "agreement above the attribute-within-class one.")
    return Table(["colouring", "neighbours agree", "chance", "skill", "p", "attribute within each class",
                  "label within each value"], rows, caption, "What the neighbourhoods follow")


def _verdict_text(clusters: list[AttributeClusters], findings: list[Finding], attributes: dict) -> Text:
    if not attributes:
        return Text("The probe set has no manifest attributes, so only the label and the prediction can be compared "
                    "with the representation here; a grouping by an unknown cue shows as islands that mix labels "
                    "without a colouring that explains them.", "note")
    if findings:
        return Text("Finding: " + " ".join(f"the penultimate layer groups images by {f.evidence['attribute']!r} rather "
                                           f"than by class ({f.headline.rstrip('.')})." for f in findings)
                    + " The evidence is under the findings.", "warning")
    untestable = sorted(set(attributes) - {c.attribute for c in clusters})
    text = ("No attribute organises the representation more than the label does"
            + (f" (among {', '.join(repr(c.attribute) for c in clusters)})" if clusters else "") + ".")
    for c in clusters:
        w, r = c.within_label, c.label_within_value
        if w is not None and w.significant and r is not None:
            text += (f" '{c.attribute}' is also encoded (inside a class, neighbours share it {w.accuracy:.0%} of the "
                     f"time, chance {w.chance:.0%}), but the class is encoded more strongly (inside a '{c.attribute}' "
                     f"value, neighbours share the class {r.accuracy:.0%}, chance {r.chance:.0%}); a representation "
                     "usually keeps visible properties of the image, what matters is which one it is organised by.")
    if untestable:
        text += f" Not testable (fewer than {MIN_IMAGES} images with a value, or one value): " \
                f"{', '.join(repr(a) for a in untestable)}."
    confounded = [c.attribute for c in clusters if c.within_label is None]
    if confounded:
        text += (f" Inside every class {', '.join(repr(a) for a in confounded)} takes a single value, so this probe "
                 "set cannot tell grouping by it from grouping by label.")
    return Text(text, "note")


def _finding(c: AttributeClusters, points: np.ndarray, shown: np.ndarray, colourings: dict[str, list[str]],
             agreements: dict[str, Agreement], layer: str) -> Finding:
    name = c.attribute
    reasons, headline = [], []
    if c.splits_classes:
        w, r = c.within_label, c.label_within_value
        reasons.append(f"inside each class, an image's nearest neighbours share its '{name}' value {w.accuracy:.0%} of "
                       f"the time (chance {w.chance:.0%}, p = {w.p_value:.2g})"
                       + (f", while inside each '{name}' value they share its class only {r.accuracy:.0%} of the "
                          f"time (chance {r.chance:.0%})" if r else ""))
        headline.append(f"neighbours share '{name}' {w.accuracy:.0%} within a class (chance {w.chance:.0%})")
    if c.beats_label:
        o, l = c.overall, c.label
        reasons.append(f"over all images the neighbours share an image's '{name}' value {o.accuracy:.0%} of the time "
                       f"(chance {o.chance:.0%}) but its class only {l.accuracy:.0%} (chance {l.chance:.0%})")
        headline.append(f"neighbours share '{name}' {o.accuracy:.0%} (chance {o.chance:.0%}), the class "
                        f"{l.accuracy:.0%} (chance {l.chance:.0%})")
    summary = (f"The penultimate layer groups images by '{name}' rather than by class: " + "; ".join(reasons)
               + f". The model's internal representation encodes '{name}' more than what separates the classes, "
               "a sign it may decide from it.")
    key = f"attribute '{name}'"
    figure = _tsne_figure(points, shown, {"true label": colourings["true label"], key: colourings[key]}, agreements,
                          layer, len(colourings["true label"]), title=f"t-SNE coloured by label and '{name}'")
    return Finding(f"representation.{_code(name)}_clusters", "representation", "warn",
                   f"Representation groups images by '{name}'", summary, _evidence(c, layer), [figure],
                   headline="; ".join(headline) + ".")


def _code(attribute: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", attribute.lower()).strip("_") or "attribute"


def _evidence(c: AttributeClusters, layer: str) -> dict:
    """The few numbers a reviewer needs, flat (the section's data keeps all of them)."""
    evidence = {"attribute": c.attribute, "layer": layer,
                "attribute_agreement": round(c.overall.accuracy, 4), "attribute_chance": round(c.overall.chance, 4),
                "label_agreement": round(c.label.accuracy, 4), "label_chance": round(c.label.chance, 4)}
    if c.within_label:
        evidence |= {"attribute_within_class": round(c.within_label.accuracy, 4),
                     "attribute_within_class_chance": round(c.within_label.chance, 4),
                     "attribute_within_class_p": round(c.within_label.p_value, 4)}
    if c.label_within_value:
        evidence |= {"label_within_value": round(c.label_within_value.accuracy, 4),
                     "label_within_value_chance": round(c.label_within_value.chance, 4)}
    return evidence
