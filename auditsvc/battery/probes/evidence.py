"""Evidence the shortcut verdict weighs: property associations and intervention effects.

Everything here is plain numpy on arrays that the section gathered; the model is only
reached through a `predict(pixels) -> (predictions, probabilities)` function.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import zip_longest

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.stats import binomtest, fisher_exact

from ..progress import SectionProgress, no_progress
from . import association, interventions
from .properties import BY_NAME as PROPERTY_BY_NAME

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
LoadPixels = Callable[[Sequence[int]], np.ndarray]
MAX_TREATED = 200
MIN_TREATED = 8
MAX_POOL = 64        # donors whose median region or statistics set the change
FLOOR_MINIMUM = 0.01


@dataclass
class PropertyStats:
    name: str
    cue: str
    words: str
    categorical: bool
    label_power: float          # how well the property alone predicts the labels (0 = naive, 1 = perfect)
    label_p: float              # permutation test, Holm-adjusted over all properties
    prediction_power: float     # how well it predicts the model's predictions
    beyond_label_p: float       # predictions permuted within each label: does it explain them beyond labels?
    group_gap: float            # largest accuracy gap across its groups within one label
    group_p: float              # Fisher test of that gap (Holm-adjusted)
    spread: float               # 90th minus 10th percentile (numbers) or number of categories
    agreement_gap: float = 0.0  # accuracy where its half agrees with the label minus where not (numbers)
    agreement_p: float = 1.0    # permutation test of that gap within labels (Holm-adjusted)
    away_label_power: float | None = None   # label_power measured away from the object (None: not measured)
    away_label_p: float = 1.0   # its permutation test (Holm-adjusted)

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


@dataclass
class InterventionStats:
    name: str
    cue: str
    words: str
    property: str | None
    status: str                 # "ok" or "untestable" (no spread in the probe set, no boxes, ...)
    treated: int = 0
    flips: int = 0
    flip_rate: float = 0.0
    floor: float = 0.0
    p_value: float = 1.0
    p_adjusted: float = 1.0
    accuracy_before: float = 0.0
    accuracy_after: float = 0.0
    towards: dict[int, int] = field(default_factory=dict)   # destination class -> flips
    top_class: int | None = None
    top_share: float = 0.0
    kept_rate: float = 0.0      # correct predictions that survive (object masking)
    follows_donor: float = 0.0  # donor interventions: share of flips to the donor image's own prediction
    agrees: bool = False        # flips go where the probe images with that property value are predicted
    target: float | None = None  # property value the treated images were moved to
    examples: list[tuple[int, int, int, float, float]] = field(default_factory=list)  # idx, before, after, p0, p1
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # original and changed pixels of the examples
    placement: dict[str, float | None] = field(default_factory=dict)  # flip rate of the change on "object" / "surroundings" alone
    place: str = ""             # where the cue sits: "object", "surroundings", "both"; "" when not located

    @property
    def excess(self) -> float:
        return self.flip_rate - self.floor

    def to_json(self) -> dict:
        skip = {"pairs", "examples"}
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items() if k not in skip}
        out["towards"] = {str(k): v for k, v in self.towards.items()}
        return out


# --- properties ------------------------------------------------------------------------------

def property_stats(values: dict[str, np.ndarray], attributes: dict[str, list[str]], labels: np.ndarray,
                   predictions: np.ndarray, seed: int, permutations: int = 2000) -> list[PropertyStats]:
    """Associations of every measured property and manifest attribute with labels and predictions."""
    classes = int(max(labels.max(), predictions.max())) + 1
    rows = []
    columns = [(name, v, False) for name, v in values.items() if np.ptp(v) > 0]
    columns += [(f"attribute:{name}", np.asarray(v), True) for name, v in attributes.items() if len(set(v) - {""}) > 1]
    correct = predictions == labels
    for index, (name, column, categorical) in enumerate(columns):
        codes = association.bin_codes(column, classes)
        feature = codes if categorical else column
        _, label_p = association.permutation_test(codes, labels, permutations=permutations, seed=seed + index)
        _, beyond_p = association.permutation_test(codes, predictions, strata=labels, permutations=permutations,
                                                   seed=seed + 7919 + index)
        groups = codes if categorical else association.tertiles(column)
        gap, gap_p = group_gap(groups, labels, correct)
        agreement = ((0.0, 1.0) if categorical else
                     association.agreement_test(column, labels, correct, permutations=permutations, seed=seed + index))
        meta = PROPERTY_BY_NAME.get(name)
        spread = float(len(set(column))) if categorical else float(np.subtract(*np.quantile(column, [0.9, 0.1])))
        rows.append(PropertyStats(
            name, meta.cue if meta else name, meta.words if meta else f"the manifest attribute '{name[10:]}'",
            categorical, association.predictive_power(feature, labels, seed, categorical=categorical), label_p,
            association.predictive_power(feature, predictions, seed, categorical=categorical), beyond_p, gap, gap_p,
            spread, *agreement))
    for attr, adjusted in (("label_p", association.holm([r.label_p for r in rows])),
                           ("beyond_label_p", association.holm([r.beyond_label_p for r in rows])),
                           ("group_p", association.holm([r.group_p for r in rows])),
                           ("agreement_p", association.holm([r.agreement_p for r in rows]))):
        for row, value in zip(rows, adjusted):
            setattr(row, attr, value)
    return rows


def measure_away_from_object(stats: list[PropertyStats], away: dict[str, np.ndarray], labels: np.ndarray,
                             seed: int, permutations: int = 2000) -> None:
    """Adds to each property how well it predicts the labels when measured away from the object.

    Images where too little is left around the object (NaN) are left out of that property's test."""
    classes = int(labels.max()) + 1
    measured = [row for row in stats if row.name in away]
    p_values = []
    for index, row in enumerate(measured):
        column = away[row.name]
        present = np.isfinite(column)
        if present.sum() < 2 * MIN_TREATED or np.ptp(column[present]) == 0:
            row.away_label_power, p = 0.0, 1.0
        else:
            codes = association.bin_codes(column[present], classes)
            _, p = association.permutation_test(codes, labels[present], permutations=permutations,
                                                seed=seed + 104729 + index)
            row.away_label_power = association.predictive_power(column[present], labels[present], seed)
        p_values.append(p)
    for row, adjusted in zip(measured, association.holm(p_values)):
        row.away_label_p = adjusted


def surroundings(boxes: np.ndarray, pixels: np.ndarray, margin: float = 0.06,
                 object_share: float = 0.25) -> np.ndarray:
    """(N, H, W) masks of what lies away from the object in uint8 `pixels` (N, H, W, C).

    The object is its manifest box where there is one; elsewhere the quarter of the image least like
    the image's border (foreground()). Both are widened by a margin so that the object's own edges
    stay out of what is measured around it. The model's own attribution would be circular here: a
    model that reads the background points at the background, which would then pass for the object."""
    _, height, width = pixels.shape[:3]
    grow = max(1, round(margin * min(height, width)))
    masks = np.ones((len(boxes), height, width), bool)
    for index, box in enumerate(boxes):
        if not np.isnan(box).any():
            x0, y0, x1, y1 = box
            masks[index, max(0, int(y0) - grow):int(np.ceil(y1)) + grow, max(0, int(x0) - grow):int(np.ceil(x1)) + grow] = False
        else:
            masks[index] = ~ndimage.binary_dilation(foreground(pixels[index], object_share), iterations=grow)
    return masks


class PackedMasks:
    """(N, H, W) bool masks of the whole probe set held one bit a pixel (an eighth of a bool array):
    indexing with image indices gives their bool masks, `~` the complements without a copy."""

    def __init__(self, packed: np.ndarray, side: tuple[int, int], inverted: bool = False):
        self._packed, self._side, self._inverted = packed, side, inverted

    @staticmethod
    def bits(masks: np.ndarray) -> np.ndarray:
        """(n, H, W) bool -> the packed rows the constructor takes, (n, ceil(H * W / 8)) uint8."""
        return np.packbits(masks.reshape(len(masks), -1), axis=1)

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index) -> np.ndarray:
        rows = self._packed[index]
        count = self._side[0] * self._side[1]
        masks = np.unpackbits(rows, axis=-1, count=count).view(bool).reshape(*rows.shape[:-1], *self._side)
        return ~masks if self._inverted else masks

    def __invert__(self) -> "PackedMasks":
        return PackedMasks(self._packed, self._side, not self._inverted)


def surroundings_method(boxes: np.ndarray) -> str:
    boxed = ~np.isnan(boxes).any(axis=1)
    if boxed.all():
        return "outside the object boxes of the manifest"
    unboxed = ("the quarter of each image that stands out most from the image's border (colour distance to "
               "the border's colours: where the object is, found without the model)")
    return f"outside the manifest's object boxes, or where there is none, {unboxed}" if boxed.any() else \
        f"outside {unboxed}"


FOREGROUND_SIDE = 64     # the foreground estimate works at most at this resolution
BORDER_COLOURS = 256     # border pixels compared against


def foreground(image: np.ndarray, share: float = 0.25) -> np.ndarray:
    """(H, W) bool: the `share` of pixels least like the image's border colours (distance to the nearest
    one, after light smoothing against texture): the boundary prior of salient-object detection, which
    finds an object that contrasts with what surrounds it without asking the model."""
    height, width = image.shape[:2]
    scale = min(1.0, FOREGROUND_SIDE / max(height, width))
    small = ndimage.zoom(image.astype(np.float64) / 255, (scale, scale, 1), order=1) if scale < 1 else \
        image.astype(np.float64) / 255
    small = ndimage.gaussian_filter(small, (1.0, 1.0, 0))
    band = max(1, round(min(small.shape[:2]) / 16))
    edge = np.ones(small.shape[:2], bool)
    edge[band:-band, band:-band] = False
    colours = small[edge]
    colours = colours[np.linspace(0, len(colours) - 1, min(len(colours), BORDER_COLOURS)).astype(int)]
    distance = cKDTree(colours).query(small.reshape(-1, small.shape[2]))[0].reshape(small.shape[:2])
    if scale < 1:
        distance = ndimage.zoom(distance, (height / distance.shape[0], width / distance.shape[1]), order=1)
    return (distance >= np.quantile(distance, 1 - share)) & (distance > 0.1 * distance.max())


def group_gap(groups: np.ndarray, labels: np.ndarray, correct: np.ndarray, minimum: int = 5) -> tuple[float, float]:
    """Largest accuracy difference between two groups of the same label, and its Fisher test p-value."""
    best_gap, best_p = 0.0, 1.0
    for label in np.unique(labels):
        members = labels == label
        cells = [(correct[members & (groups == g)].sum(), (members & (groups == g)).sum())
                 for g in np.unique(groups[members])]
        cells = [(hits, n) for hits, n in cells if n >= minimum]
        if len(cells) < 2:
            continue
        rates = [hits / n for hits, n in cells]
        high, low = cells[int(np.argmax(rates))], cells[int(np.argmin(rates))]
        gap = max(rates) - min(rates)
        if gap > best_gap:
            table = [[high[0], high[1] - high[0]], [low[0], low[1] - low[0]]]
            best_gap, best_p = float(gap), float(fisher_exact(table)[1])
    return best_gap, best_p


# --- interventions ---------------------------------------------------------------------------

@dataclass
class ProbeData:
    """What interventions need to know about the probe set."""
    values: dict[str, np.ndarray]    # measured properties
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray        # of the predicted class
    boxes: np.ndarray                # (N, 4) in model-input pixels, NaN where none
    colour: bool
    load: LoadPixels
    predict: Predict
    seed: int
    example_count: int = 4
    part: np.ndarray | PackedMasks | None = None   # (N, H, W): where a change may act, and where its property is measured


def run_interventions(data: ProbeData, cues: set[str] | None = None,
                      progress: SectionProgress = no_progress) -> list[InterventionStats]:
    """Every change (or those of `cues`, with the harmless ones that set the floor) on the probe set."""
    chosen = [intervention for intervention in interventions.INTERVENTIONS
              if (data.colour or intervention.cue not in interventions.COLOUR_CUES)
              and (cues is None or intervention.harmless or intervention.cue in cues)
              and (intervention.region != "tint" or data.part is not None)]
    results = []
    for done, intervention in enumerate(chosen, 1):
        results.append(_run_one(intervention, data, _rng(data.seed, intervention.name)))
        progress(done / len(chosen))
    harmless = [r for r in results if r.status == "ok" and interventions.BY_NAME[r.name].harmless]
    floor = max([r.flip_rate for r in harmless] + [FLOOR_MINIMUM])
    tested = [r for r in results if r.status == "ok" and not interventions.BY_NAME[r.name].harmless]
    for r in tested:
        r.floor = floor
        r.p_value = float(binomtest(r.flips, r.treated, floor, alternative="greater").pvalue) if r.treated else 1.0
    for r, adjusted in zip(tested, association.holm([r.p_value for r in tested])):
        r.p_adjusted = adjusted
    for r in harmless:
        r.floor = floor
    for r in tested:
        r.agrees = direction_agrees(r, data.values, data.predictions)
    return results


def direction_agrees(test: InterventionStats, values: dict[str, np.ndarray], predictions: np.ndarray,
                     margin: float = 0.1) -> bool:
    """Do unchanged probe images at the property's moved-to end get predicted as the flips' class?"""
    if test.top_class is None or test.property is None or test.property not in values:
        return False
    column = values[test.property]
    high = column >= np.median(column)
    if high.all() or not high.any():
        return False
    rate_high = float((predictions[high] == test.top_class).mean())
    rate_low = float((predictions[~high] == test.top_class).mean())
    towards_high = interventions.BY_NAME[test.name].direction in ("up", "swap")  # else "down", "swap_down"
    return (rate_high - rate_low if towards_high else rate_low - rate_high) >= margin


# --- where the cue sits ----------------------------------------------------------------------
PLACE_SIGNIFICANCE = 0.05   # one part's change flips more answers than the other's beyond chance (Fisher, one-sided)
PLACE_MINIMUM = 0.05        # above the floor of harmless changes, or a part alone does not move the model
LOCATED_CHANGES = 3         # a cue's strongest changes that are repeated per part; their counts are pooled


def on_part(data: ProbeData, part: np.ndarray, values: dict[str, np.ndarray], example_count: int = 0) -> ProbeData:
    """The probe data for changes that act on `part` (N, H, W) only, with its properties measured there."""
    return replace(data, values=values, part=part, boxes=np.full_like(data.boxes, np.nan), example_count=example_count)


def locate(tests: list[InterventionStats], data: ProbeData, objects: np.ndarray,
           part_values: dict[str, dict[str, np.ndarray]]) -> str:
    """Repeats a cue's strongest changes on the object alone and on its surroundings alone and says
    where the cue sits, from the flips of all of them together. Each part is changed as far as that
    part differs between the model's answers (its property measured there: `part_values["object"]`,
    `part_values["surroundings"]`), so a part the answers do not depend on gets a small dose.
    `objects`: (N, H, W) bool per image. Sets each repeated change's placement and place.

    A region change (a stamp, a frame, a swapped background) already names its place and is not repeated."""
    counts = {"object": [0, 0], "surroundings": [0, 0]}
    located = []
    for test in tests:
        intervention = interventions.BY_NAME[test.name]
        if test.status != "ok" or intervention.region in (*interventions.REGIONS, "background", "object"):
            continue
        for place, mask in (("object", objects), ("surroundings", ~objects)):
            rerun = _run_one(intervention, on_part(data, mask, part_values[place]), _rng(data.seed, test.name))
            test.placement[place] = rerun.flip_rate if rerun.status == "ok" else None
            if rerun.status == "ok":
                counts[place][0] += rerun.flips
                counts[place][1] += rerun.treated
        located.append(test)
        if len(located) == LOCATED_CHANGES:
            break
    if not located:
        return ""
    place = place_of(tuple(counts["object"]), tuple(counts["surroundings"]), max(t.floor for t in located))
    for test in located:
        test.place = place
    return place


def place_of(on_object: tuple[int, int], around: tuple[int, int], floor: float) -> str:
    """Where a cue sits, from (flips, treated) of its changes on the object alone and around it alone:
    the part whose change flips significantly more answers; "both" when each alone moves the model
    beyond the floor and neither more than the other; "" when the parts alone say nothing."""
    if not on_object[1] or not around[1]:
        return ""
    rates = {"object": on_object[0] / on_object[1], "surroundings": around[0] / around[1]}
    table = [[around[0], around[1] - around[0]], [on_object[0], on_object[1] - on_object[0]]]
    if fisher_exact(table, alternative="greater").pvalue < PLACE_SIGNIFICANCE and \
            rates["surroundings"] >= floor + PLACE_MINIMUM:
        return "surroundings"
    if fisher_exact(table, alternative="less").pvalue < PLACE_SIGNIFICANCE and rates["object"] >= floor + PLACE_MINIMUM:
        return "object"
    return "both" if min(rates.values()) >= floor + PLACE_MINIMUM else ""


def _rng(seed: int, name: str) -> np.random.Generator:
    """One generator per change, so that a change can be repeated on the same images."""
    return np.random.default_rng([seed % 2**32, zlib.crc32(name.encode())])


def _sample(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(indices) > MAX_TREATED:
        indices = rng.choice(indices, MAX_TREATED, replace=False)
    return np.sort(indices)


def _pool(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(indices, min(len(indices), MAX_POOL), replace=False)


def _run_one(intervention: interventions.Intervention, data: ProbeData, rng) -> InterventionStats:
    stats = InterventionStats(intervention.name, intervention.cue, intervention.words, intervention.property, "ok")
    n = len(data.labels)
    if intervention.harmless:
        treated = _sample(np.arange(n), rng)
        return _measure(stats, data, treated, interventions.apply_harmless(intervention, data.load(treated)))
    if intervention.region in ("background", "object"):
        return _run_box(intervention, stats, data, rng)
    values = data.values[intervention.property]
    if np.isnan(values).all():
        return _untestable(stats)
    low, median, high = np.nanquantile(values, [0.1, 0.5, 0.9])
    if high - low <= 1e-9:
        return _untestable(stats)
    if intervention.region in interventions.REGIONS:
        return _run_region(intervention, stats, data, values, rng)
    up = intervention.direction in ("up", "swap")
    dose = matched_dose(values, data.predictions, up)
    if dose is None:
        return _untestable(stats)
    target_class, stats.target = dose
    treated = _sample(np.flatnonzero((data.predictions != target_class)
                                     & ((values < stats.target) if up else (values > stats.target))), rng)
    if len(treated) < MIN_TREATED:
        return _untestable(stats)
    pixels = data.load(treated)
    within = data.part[treated] if data.part is not None else None
    keep = ~within if within is not None else _objects(data.boxes[treated], pixels)
    if intervention.region == "tint":
        return _run_tint(stats, data, treated, pixels, within, target_class, up, rng)
    if intervention.region in ("chroma", "luminance"):
        # Both follow how the images answered as the target class differ from the others (in the part).
        towards, away = (_pool(np.flatnonzero(side), rng) for side in (data.predictions == target_class,
                                                                        data.predictions != target_class))
        parts = {"towards_part": data.part[towards] if data.part is not None else None,
                 "away_part": data.part[away] if data.part is not None else None}
        if intervention.region == "chroma":
            dosed = interventions.dosed_balance(intervention, data.load(towards), data.load(away), **parts)
            changed, _ = interventions.apply_to_target(interventions.keeping(dosed, keep), pixels, stats.target,
                                                       within=within)
        else:
            shifted = interventions.lighting_shift(pixels, data.load(towards), data.load(away), **parts, within=within)
            changed = interventions.keep_pixels(shifted, pixels, keep)
        return _measure(stats, data, treated, changed, np.full(len(treated), target_class))
    changed, _ = interventions.apply_to_target(interventions.keeping(intervention, keep), pixels, stats.target,
                                               within=within)
    return _measure(stats, data, treated, changed)


KEPT_CONTRAST = 0.5   # a repainted part keeps at least this share of its colour difference from the rest


def _run_tint(stats: InterventionStats, data: ProbeData, treated: np.ndarray, pixels: np.ndarray,
              within: np.ndarray, target_class: int, up: bool, rng) -> InterventionStats:
    """Paint each treated image's part the colour of one donor: an image answered as the target class
    whose part lies beyond the dose (carries more of the property, or less). A part's colour is three
    numbers and a group of answers holds many colours: their median is a colour none of them has (grey
    for a mix of red and blue objects), and a single channel's share reached alone stops half way. A
    donor's colour is one the model has seen answered so.
    Only donors that keep the part standing out from the rest of the image (KEPT_CONTRAST) are used: an
    object painted the colour of its background is lost to any model, whatever it relies on."""
    values = data.values[stats.property]
    beyond = (values >= stats.target) if up else (values <= stats.target)
    donors = _pool(np.flatnonzero((data.predictions == target_class) & beyond), rng)
    if len(donors) < MIN_TREATED:
        return _untestable(stats)
    colours = interventions.part_colours(data.load(donors), data.part[donors])
    own, rest = interventions.part_colours(pixels, within), interventions.part_colours(pixels, ~within)
    visible = (np.abs(colours[None] - rest[:, None]).sum(axis=2)
               >= KEPT_CONTRAST * np.abs(own - rest).sum(axis=1)[:, None])          # (treated, donors)
    keep = visible.any(axis=1)
    chosen = [rng.choice(np.flatnonzero(row)) for row in visible[keep]]
    changed = interventions.repaint(pixels[keep], within[keep], colours[chosen])
    return _measure(stats, data, treated[keep], changed, np.full(int(keep.sum()), target_class))


def _objects(boxes: np.ndarray, pixels: np.ndarray) -> np.ndarray | None:
    """Where the objects of `pixels` are, when the probe set has boxes: a change of the scene
    leaves the object as it is (recolouring or blurring the object itself may change what it is)."""
    if np.isnan(boxes).any(axis=1).all():
        return None
    return interventions.object_masks(boxes, *pixels.shape[1:3])


def _untestable(stats: InterventionStats) -> InterventionStats:
    """Nothing to measure: no spread of the property, no boxes, or too few images to treat."""
    stats.status = "untestable"
    return stats


def matched_dose(values: np.ndarray, predictions: np.ndarray, up: bool) -> tuple[int, float] | None:
    """The class whose images carry the most (up) or least of the property, and its typical value.

    Moving the other images to that class's median changes the property as much as the model's
    own predictions say it differs between classes, no more: a flip rate at that dose estimates
    how much the model's answers turn on the cue, where an extreme dose would also catch models
    that merely fail on images unlike any they were trained on. A model whose predictions do not
    follow the property gets a dose near zero."""
    measured = ~np.isnan(values)
    medians = {int(c): float(np.median(values[measured & (predictions == c)])) for c in np.unique(predictions)
               if (measured & (predictions == c)).sum() >= MIN_TREATED}
    if len(medians) < 2:
        return None
    target_class = (max if up else min)(medians, key=medians.get)
    return target_class, medians[target_class]


def _run_region(intervention, stats: InterventionStats, data: ProbeData, values: np.ndarray, rng) -> InterventionStats:
    """On the pixels that the images where the region stands out most share (the cue's footprint):
    paste their typical pixels (adding the cue), or continue each image's surroundings (taking it
    away). The images where the region stands out least set the class the removal converts to."""
    low, median, high = np.quantile(values, [0.1, 0.5, 0.9])
    up = intervention.direction == "swap"
    standing_out = _pool(np.flatnonzero(values >= high), rng)
    pool = standing_out if up else _pool(np.flatnonzero(values <= low), rng)
    stats.target = float(high if up else low)
    standing_out_pixels = data.load(standing_out)
    footprint = interventions.cue_footprint(intervention.region, standing_out_pixels)
    if not footprint.any():
        return _untestable(stats)   # nothing sits in the same place on those images: no stamp, no frame
    pool_class = np.bincount(data.predictions[pool]).argmax()
    # As for the other changes, only images predicted as another class than the donors' can be converted.
    treated = _sample(np.flatnonzero((data.predictions != pool_class) & (values <= median if up else values >= median)),
                      rng)
    if len(treated) < MIN_TREATED:
        return _untestable(stats)
    pixels = data.load(treated)
    changed = (interventions.paste_typical(pixels, standing_out_pixels, footprint) if up
               else interventions.fill_from_around(pixels, footprint))
    changed = interventions.keep_pixels(changed, pixels, _objects(data.boxes[treated], pixels))
    return _measure(stats, data, treated, changed, np.full(len(treated), pool_class))


def _run_box(intervention, stats: InterventionStats, data: ProbeData, rng) -> InterventionStats:
    boxed = np.flatnonzero(~np.isnan(data.boxes).any(axis=1))
    if len(boxed) < MIN_TREATED:
        return _untestable(stats)
    treated = _sample(boxed, rng)
    donors = np.array([rng.choice(np.flatnonzero(data.labels != data.labels[i]) if (data.labels != data.labels[i]).any()
                                  else np.arange(len(data.labels))) for i in treated])
    changed = interventions.transplant(intervention.region, data.load(treated), data.load(donors), data.boxes[treated])
    return _measure(stats, data, treated, changed, data.predictions[donors])


def _examples(flipped: np.ndarray, before: np.ndarray, after: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Treated images in the order they are shown as examples: flips first, taking each way the answers
    moved (from one class to another, the most frequent first) in turn, so that a change that moves answers
    both ways shows both; the most confident originals first within each; then the images that kept theirs."""
    order = np.argsort(-confidence, kind="stable")
    ways: dict[tuple[int, int], list[int]] = {}
    for i in order[flipped[order]]:
        ways.setdefault((int(before[i]), int(after[i])), []).append(int(i))
    ranked = sorted(ways.values(), key=len, reverse=True)
    taking_turns = [i for turn in zip_longest(*ranked) for i in turn if i is not None]
    return np.array(taking_turns + [int(i) for i in order[~flipped[order]]], dtype=int)


def _measure(stats: InterventionStats, data: ProbeData, treated: np.ndarray, changed: np.ndarray,
             donor_classes: np.ndarray | None = None) -> InterventionStats:
    """Flips of the treated images; `donor_classes`: the prediction of what each one received."""
    if len(treated) < MIN_TREATED:
        return _untestable(stats)
    if data.part is not None:
        changed = np.where(data.part[treated][..., None], changed, data.load(treated))
    after, after_probability = data.predict(changed)
    before, labels = data.predictions[treated], data.labels[treated]
    flipped = after != before
    stats.treated, stats.flips = len(treated), int(flipped.sum())
    stats.flip_rate = stats.flips / len(treated)
    stats.accuracy_before = float((before == labels).mean())
    stats.accuracy_after = float((after == labels).mean())
    right = before == labels
    stats.kept_rate = float((after[right] == labels[right]).mean()) if right.any() else 0.0
    stats.towards = dict(Counter(int(c) for c in after[flipped]))
    if stats.towards:
        stats.top_class, top = max(stats.towards.items(), key=lambda item: item[1])
        stats.top_share = top / stats.flips
        if donor_classes is not None:
            stats.follows_donor = float((after[flipped] == donor_classes[flipped]).mean())
    chosen = _examples(flipped, before, after, data.probabilities[treated])[: data.example_count]
    stats.examples = [(int(treated[i]), int(before[i]), int(after[i]), float(data.probabilities[treated[i]]),
                       float(after_probability[i])) for i in chosen]
    stats.pairs = (data.load(treated[chosen]), changed[chosen]) if len(chosen) else None
    return stats
