"""From evidence to findings: one shortcut or bias finding per cue, named in plain words.

Per cue family (brightness, colour, sharpness, noise, compression, border, corner,
background, each manifest attribute):
- data-side signal (observational, from the probe images as they are): the cue predicts
  the labels, or it predicts the model's predictions beyond what the labels explain, or
  accuracy differs across its tertiles within a label or with whether its half sides with the
  label (these two only with a causal signal);
- model-side causal signal: changing only the cue flips predictions above the noise floor of
  a harmless change, significantly, mostly towards one class, and towards the class that
  unchanged images with that cue value are predicted as; the reliance estimate (the flip rate
  of the strongest such change adding the cue and of the strongest taking it away, averaged)
  must reach RELIANCE (a model that merely fails on degraded images answers one way only and
  scores half).
Both agree -> shortcut, fail. One alone -> warn: a shortcut when the predictions follow the
cue, a data bias when only the labels do. A causal effect the probe images do not bear out
(blurring hides a camouflaged object) is a sensitivity, listed in the section, not a
shortcut. Explanations (where attribution falls) are evidence and never decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from .association import permutation_test
from .interventions import BY_NAME
from .evidence import InterventionStats, PropertyStats

UNNAMED_CUES = {"none", "channel"}   # harmless changes; channel levels (brightness and colour at once)
SIGNIFICANCE = 0.01
LABEL_POWER = 0.3          # a property that predicts labels this well is a data-side cue
AWAY_SHARE = 0.5           # away from the object it keeps this share of that power, or it is the object's
BEYOND_LABEL_POWER = 0.2   # predictions follow the property this much better than labels do
GROUP_GAP = 0.2
# Accuracy where a property sides with the label minus where not (PropertyStats.agreement_gap): half the
# ground truth's line, as 200 probe images measure it within about +-0.06 and the causal side sets the size.
AGREEMENT_GAP = 0.1
FLIP_EXCESS = 0.15         # flip rate above the noise floor for a large effect (a sensitivity)
# Reliance estimate (see reliance()) for a causal signal: it estimates the ground truth's accuracy gap
# between cue-aligned and cue-flipped images (bench/shortcuts.py), whose line is 0.20.
RELIANCE = 0.20
UNOBSERVED_POWER = 0.5   # stands in for the power of a cue no property measures (a swapped background)
DIRECTION_SHARE = 0.6      # share of flips that go to one class (or to the donor image's class)
KEPT_CONTEXT = 0.5         # correct predictions that survive covering the object
PROXY_CORRELATION = 0.5    # two cues whose properties correlate this much are one cue
# Blurring removes grain and noise adds fine detail: when both show, the probes cannot tell
# them apart, so the finding names what they share.
MERGED_CUES = {frozenset({"sharpness", "noise"}): "detail"}


@dataclass
class CueVerdict:
    cue: str
    category: str            # "shortcut" or "bias"
    severity: str            # "warn" or "fail"
    lead: PropertyStats | None
    causal: list[InterventionStats] = field(default_factory=list)
    label_signal: bool = False
    prediction_signal: bool = False
    group_signal: bool = False
    attribute: str | None = None     # manifest attribute the cue tracks
    sided: PropertyStats | None = None   # the property whose siding with the label the accuracy follows most
    reliance: float = 0.0            # see reliance(): flip rates of adding and of removing the cue, averaged
    reliance_error: float = 0.0      # its standard error (binomial, over the treated images)
    also: list["CueVerdict"] = field(default_factory=list)   # proxies of the same cue, folded in
    tested_on: str = ""              # "object" or "surroundings": found by changing that part alone (part_verdicts())


def label_signal(p: PropertyStats) -> bool:
    return p.label_p < SIGNIFICANCE and p.label_power >= LABEL_POWER


def part_of_object(p: PropertyStats) -> bool:
    """The property predicts the labels on the whole image but not away from the object: it is the
    object (its colour, its edges) that differs between the classes, not a bias of the probe set.

    "Not away from it" is a loss of the association, not a fall below the data-side line: measured on
    fewer pixels a whole-image cast predicts a little less (0.33 -> 0.26), and that is still a bias."""
    if p.away_label_power is None or not label_signal(p):
        return False
    survives = p.away_label_p < SIGNIFICANCE and p.away_label_power >= AWAY_SHARE * p.label_power
    return not survives


def prediction_signal(p: PropertyStats) -> bool:
    return p.beyond_label_p < SIGNIFICANCE and p.prediction_power - p.label_power >= BEYOND_LABEL_POWER


def sides_with_label(p: PropertyStats) -> bool:
    """The model is right more often where the property's half sides with the label."""
    return p.agreement_p < SIGNIFICANCE and p.agreement_gap >= AGREEMENT_GAP


def group_signal(p: PropertyStats) -> bool:
    """Accuracy differs with the property within a label, or with whether it sides with the label."""
    return (p.group_p < SIGNIFICANCE and p.group_gap >= GROUP_GAP) or sides_with_label(p)


def large_effect(i: InterventionStats) -> bool:
    """A significant, large, one-directional change of predictions."""
    if i.status != "ok" or i.p_adjusted >= SIGNIFICANCE or i.excess < FLIP_EXCESS:
        return False
    return max(i.top_share, i.follows_donor) >= DIRECTION_SHARE


def causal_signal(i: InterventionStats) -> bool:
    """A large effect of a change that may count as evidence of a cue (not a synthetic one)."""
    return BY_NAME[i.name].decides and large_effect(i)


def raises(i: InterventionStats) -> bool:
    return BY_NAME[i.name].direction in ("up", "swap")


def directed(i: InterventionStats) -> bool:
    """A significant change of predictions, mostly to one class, the class the property's end goes with."""
    return (i.status == "ok" and BY_NAME[i.name].decides and i.agrees and i.p_adjusted < SIGNIFICANCE
            and max(i.top_share, i.follows_donor) >= DIRECTION_SHARE)


def reliance(family: list[InterventionStats]) -> tuple[float, list[InterventionStats]]:
    """How much the model's answers turn on the cue: the flip rate of the strongest directed change
    adding it and of the strongest taking it away, averaged (as the ground truth averages cue-aligned
    and cue-flipped images).

    A change that moves the cue as far as the classes' typical images differ flips the answers the
    cue decides: as many as it costs in accuracy where cue and class disagree. The floor of harmless
    changes says whether flips are more than chance (directed() tests that), not how many the cue
    caused: an answer near the boundary that a one-pixel shift flips is also one the cue decides.
    A model that merely fails on degraded images (blurred, washed out) answers one way only and
    scores half its effect. Where the probes can move the cue one way only, that way counts alone.
    A proxy change (fine grain for undoing compression) also moves the answers of a model that is
    merely fragile to it: it counts only beside a directed change the other way, and at most as much
    as that change (_counted_flips()).
    Adding a cue and taking it away move the answers to different classes; two changes that send them
    to the same class (tinting an object blue and taking red from it) show a model that fails one way
    when the cue moves at all, and only the stronger counts.
    Returns the estimate and the changes it rests on."""
    testable = testable_ways(family)
    if not testable:
        return 0.0, []
    ways: dict[bool, list[InterventionStats]] = {True: [], False: []}
    for i in family:
        if directed(i):
            ways[raises(i)].append(i)
    chosen = max(_supporting_choices(ways), key=_counted_flips, default=[])
    estimate = _counted_flips(chosen) / len(testable)
    return estimate, sorted(chosen, key=lambda i: -i.excess)


def _counted_flips(changes: list[InterventionStats]) -> float:
    """The flip rates reliance() adds up, each proxy's capped (capped_proxies())."""
    capped = capped_proxies(changes)
    return sum(capped[i.name][1].flip_rate if i.name in capped else i.flip_rate for i in changes)


def capped_proxies(changes: list[InterventionStats]) -> dict[str, tuple[InterventionStats, InterventionStats]]:
    """Proxy name -> (proxy, the faithful change it counts as). A proxy change says which way the answers
    go, not how far the cue moves them: adding grain to undo compression also flips the answers of a
    model that is merely fragile to grain. It counts at most as much as the strongest faithful change."""
    faithful = [i for i in changes if not BY_NAME[i.name].proxy]
    zero = InterventionStats("", "", "", None, "ok")   # no faithful change: a proxy counts nothing
    strongest = max(faithful, key=lambda i: i.flip_rate, default=zero)
    return {i.name: (i, strongest) for i in changes if BY_NAME[i.name].proxy and i.flip_rate > strongest.flip_rate}


def _supporting_choices(ways: dict[bool, list[InterventionStats]]):
    """What reliance() may rest on: one change that is not a proxy, or one each way whose answers go to
    different classes (or follow donor images), not both proxies."""
    yield from ([i] for i in ways[True] + ways[False] if not BY_NAME[i.name].proxy)
    for up in ways[True]:
        for down in ways[False]:
            if BY_NAME[up.name].proxy and BY_NAME[down.name].proxy:
                continue
            if up.top_class != down.top_class or _follows_donors(up) or _follows_donors(down):
                yield [up, down]


def _follows_donors(i: InterventionStats) -> bool:
    return i.follows_donor >= DIRECTION_SHARE > i.top_share


def strongest_reliance(interventions: list[InterventionStats]) -> tuple[str | None, float]:
    """The named cue family the answers turn on most (reliance()), and how much: the shortcut check's value."""
    families = {i.cue for i in interventions} - UNNAMED_CUES
    estimates = {f: reliance([i for i in interventions if i.cue == f])[0] for f in sorted(families)}
    if not estimates:
        return None, 0.0
    family = max(estimates, key=estimates.get)
    return family, estimates[family]


def testable_ways(family: list[InterventionStats]) -> set[bool]:
    """The ways the probes could move the cue: adding it (True), taking it away (False)."""
    return {raises(i) for i in family if i.status == "ok" and BY_NAME[i.name].decides}


def reliance_error(supporting: list[InterventionStats], ways: int) -> float:
    """Standard error of reliance() from the changes it rests on (binomial flip rates over their treated
    images) and the number of ways it averages over."""
    if not ways or not supporting:
        return 0.0
    variance = sum(i.flip_rate * (1 - i.flip_rate) / max(i.treated, 1) for i in supporting)
    return float(np.sqrt(variance) / ways)


def reliance_undecided(v: "CueVerdict") -> bool:
    """Below the line, but within its 95% interval of it: the probes cannot exclude reliance."""
    return v.reliance < RELIANCE <= v.reliance + 1.96 * v.reliance_error


def images_to_decide(v: "CueVerdict", probe_images: int) -> int:
    """About how many probe images would shrink the 95% interval of an undecided reliance clear of the
    line, if the estimate stayed where it is (the error falls with the square root of the images)."""
    if not reliance_undecided(v):
        return 0
    shrink = 1.96 * v.reliance_error / max(RELIANCE - v.reliance, 1e-3)
    return int(np.ceil(probe_images * shrink ** 2))


# Changing the object's own colour keeps its outline; blurring it or adding noise to it alone can erase
# what defines the class, so a flip there would not show a shortcut. Only these are tested on one part alone.
PART_TESTED_CUES = ("colour", "saturation")


def part_cues(properties: list[PropertyStats], found: list["CueVerdict"]) -> set[str]:
    """Colour families that no finding explains yet and that the probe images tie to the labels or the
    answers (label_signal(), prediction_signal(), group_signal()). A probe-set colour bias is no explanation
    (the model may rely on the biased part); a colour folded into another cue's finding is that cue seen
    through the colour (a coloured frame), and the finding's own changes answer for it. A whole-image change of a colour is
    dosed by the whole image, where a small object's colour, or a tint of the background only, barely
    shows: does the model tell the classes apart by the colour of one part?"""
    explained = {c.cue for v in found for c in ([v, *v.also] if v.category == "shortcut" else v.also)}
    tied = {p.cue for p in properties if p.cue in PART_TESTED_CUES
            and (label_signal(p) or prediction_signal(p) or group_signal(p))}
    return tied - explained


def part_verdicts(properties: list[PropertyStats], part_tests: dict[str, list[InterventionStats]]
                  ) -> list["CueVerdict"]:
    """A verdict per family whose change on one part alone (`part_tests`: "object" or "surroundings" ->
    its changes), by as much as that part differs between the answers, moves the answers as a relied-on
    cue does (reliance() at or above the line); the part that moves them most names the place.
    - The classes' objects differ in it and their surroundings do not (part_of_object()): the colour may
      be what defines the classes; the reviewer decides, so it warns and does not fail.
    - Otherwise the probe images tie it to the labels or the answers: a shortcut they bear out, so it fails."""
    verdicts = []
    families = sorted({i.cue for tests in part_tests.values() for i in tests if i.cue in PART_TESTED_CUES})
    for family in families:
        estimates = {part: _both_ways(reliance([i for i in tests if i.cue == family]))
                     for part, tests in part_tests.items()}
        part = max(estimates, key=lambda p: estimates[p][0])
        estimate, supporting = estimates[part]
        members = [p for p in properties if p.cue == family]
        defining = [p for p in members if part_of_object(p)] if part == "object" else []
        tied = [p for p in members if prediction_signal(p) or group_signal(p) or (label_signal(p) and not part_of_object(p))]
        if estimate < RELIANCE or not (defining or tied):
            continue
        for change in supporting:
            change.place = part
        ways = len(testable_ways([i for i in part_tests[part] if i.cue == family]))
        error = round(reliance_error(supporting, ways), 4)
        if defining:
            verdicts.append(CueVerdict(family, "shortcut", "warn", max(defining, key=lambda p: p.label_power),
                                       supporting, label_signal=True, reliance=round(estimate, 4),
                                       reliance_error=error, tested_on=part))
            continue
        lead = max(tied, key=lambda p: (max(p.prediction_power, p.label_power), -p.group_p))
        verdicts.append(CueVerdict(family, "shortcut", "fail", lead, supporting,
                                   label_signal=any(label_signal(p) for p in tied),
                                   prediction_signal=any(prediction_signal(p) for p in tied),
                                   group_signal=any(group_signal(p) for p in tied), reliance=round(estimate, 4),
                                   reliance_error=error, tested_on=part))
    return verdicts


def _both_ways(estimate: tuple[float, list[InterventionStats]]) -> tuple[float, list[InterventionStats]]:
    """A part's change counts only when it moves the answers both ways: to the cue's class when the cue
    is added and away from it when it is taken away. A model that loses sight of a repainted object
    answers one way whatever the new colour."""
    return estimate if {raises(i) for i in estimate[1]} == {True, False} else (0.0, [])


@dataclass
class Observations:
    """The probe images' data the folding of proxies needs."""
    codes: dict[str, np.ndarray]     # property or "attribute:<name>" -> bin codes
    labels: np.ndarray
    predictions: np.ndarray
    correlated: dict[tuple[str, str], float]
    seed: int = 0


def decide(properties: list[PropertyStats], interventions: list[InterventionStats],
           attribute_links: dict[str, str], observations: Observations) -> list[CueVerdict]:
    """One verdict per cue; proxies of the same cue are folded into the strongest."""
    families = sorted(({p.cue for p in properties} | {i.cue for i in interventions}) - UNNAMED_CUES)
    verdicts = [v for v in (_family(f, properties, interventions, attribute_links) for f in families) if v]
    return _fold(verdicts, observations)


def explained_changes(verdicts: list[CueVerdict]) -> set[str]:
    """The names of the changes some verdict (or a proxy folded into it) rests on."""
    return {i.name for v in verdicts for c in [v, *v.also] for i in c.causal}


def sensitivities(interventions: list[InterventionStats], verdicts: list[CueVerdict]) -> list[InterventionStats]:
    """Large effects that no finding explains: the model is sensitive to them, not shown to rely on them."""
    explained = explained_changes(verdicts)
    return [i for i in interventions if i.name not in explained and i.name != "mask_object" and large_effect(i)]


def _family(family: str, properties: list[PropertyStats], interventions: list[InterventionStats],
            links: dict[str, str]) -> CueVerdict | None:
    members = [p for p in properties if p.cue == family]
    causal = sorted((i for i in interventions if i.cue == family and causal_signal(i)), key=lambda i: -i.excess)
    labels = [p for p in members if label_signal(p) and not part_of_object(p)]
    predictions = [p for p in members if prediction_signal(p)]
    # A group gap (accuracy differs with the property within a label) is data-side evidence that a causal
    # signal can confirm; alone it may be a hard subset of images, so it never warns by itself.
    groups = [p for p in members if group_signal(p)]
    data_side = bool(labels or predictions or groups)
    changes = [i for i in interventions if i.cue == family]
    estimate, supporting = reliance(changes)
    # Answers that go with the cue while changing it moves none of them: the association is in
    # which images the model gets wrong, not something it relies on.
    ways = len(testable_ways(changes))
    tested = ways > 0
    agreeing = supporting if estimate >= RELIANCE else []
    lead = _lead(members, causal)
    sided = [p for p in members if sides_with_label(p)]
    verdict = CueVerdict(family, "shortcut", "warn", lead, agreeing, bool(labels), bool(predictions), bool(groups),
                         links.get(lead.name) if lead else None,
                         max(sided, key=lambda p: p.agreement_gap) if sided else None, round(estimate, 4),
                         round(reliance_error(supporting, ways), 4))
    if agreeing and data_side:
        verdict.severity = "fail"
    elif predictions and not (tested and estimate == 0.0):
        pass  # the model's answers follow the cue on real images: a shortcut warning
    elif family == "background" and causal and min(i.follows_donor for i in causal) >= DIRECTION_SHARE:
        verdict.causal = causal  # no property to observe; predictions follow the swapped-in background
    elif labels:
        verdict.category, verdict.causal = "bias", []
    else:
        return None
    return verdict


def _lead(members: list[PropertyStats], causal: list[InterventionStats]) -> PropertyStats | None:
    """The property that best names the cue: the one the model's predictions (or labels) follow most."""
    if not members:
        return None
    moved = {i.property for i in causal if i.property}
    return max(members, key=lambda p: (max(p.prediction_power, p.label_power) + (0.05 if p.name in moved else 0)))


def strength(v: CueVerdict) -> tuple:
    """Which of two cues names the shortcut better: the one the answers both turn on (reliance) and
    follow on the probe images as they are (the lead property's power). A change can move answers
    through more than its own cue (compressing an image also smooths its texture); the probe images
    say which property the answers really go with."""
    rank = {("shortcut", "fail"): 3, ("shortcut", "warn"): 2, ("bias", "warn"): 1}[(v.category, v.severity)]
    power = max(v.lead.prediction_power, v.lead.label_power) if v.lead else 0.0
    excess = max((i.excess for i in v.causal), default=0.0)
    followed = v.reliance * (power if v.lead else UNOBSERVED_POWER)
    return (rank, round(followed, 2), round(v.reliance, 1), round(power, 2), excess)


def _fold(verdicts: list[CueVerdict], observations: Observations) -> list[CueVerdict]:
    """A weather cue shows up as brightness, saturation and colour at once: report it once."""
    kept: list[CueVerdict] = []
    for verdict in sorted(verdicts, key=strength, reverse=True):
        host = next((k for k in kept if _proxies(k, verdict, observations)), None)
        if host is None:
            kept.append(verdict)
        else:
            host.also.append(verdict)
    for verdict in kept:
        families = {verdict.cue, *(a.cue for a in verdict.also)}
        verdict.cue = next((name for merged, name in MERGED_CUES.items() if verdict.cue in merged <= families),
                           verdict.cue)
    return kept


def _proxies(host: CueVerdict, other: CueVerdict, observations: Observations) -> bool:
    """Is `other` the host's cue seen through another property?"""
    if other.cue == "background" and other.category == "shortcut" and host.category == "shortcut":
        return True  # supporting evidence: the cue lives outside the object
    if not host.lead or not other.lead or (host.category, other.category) == ("bias", "shortcut"):
        return False  # a data bias folds into the shortcut it explains, never the other way round
    if host.attribute and host.attribute == other.attribute or other.cue == f"attribute:{host.attribute}":
        return True
    if abs(observations.correlated.get((host.lead.name, other.lead.name), 0.0)) >= PROXY_CORRELATION:
        return True
    return not _adds_to(host.lead.name, other, observations)


def _adds_to(host: str, other: CueVerdict, observations: Observations) -> bool:
    """Does the other cue still predict what it predicts once the host cue is held fixed?"""
    codes = observations.codes
    host_codes = codes[host]
    if other.prediction_signal:
        target, base = observations.predictions, observations.labels * (host_codes.max() + 1) + host_codes
    else:
        target, base = observations.labels, host_codes
    _, p_value = permutation_test(codes[other.lead.name], target, strata=base, permutations=1000, most=1000,
                                  seed=observations.seed)
    return p_value < SIGNIFICANCE


def property_correlations(values: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    names = [n for n, v in values.items() if np.ptp(v) > 0]
    if len(names) < 2:
        return {}
    rho = spearmanr(np.column_stack([values[n] for n in names])).statistic
    return {(a, b): float(np.nan_to_num(rho[i, j])) for i, a in enumerate(names) for j, b in enumerate(names) if i != j}
