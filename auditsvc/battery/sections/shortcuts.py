"""Shortcut probes: discover the cue a model leans on, with the evidence, and decide the verdict."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import torch

from .. import figures
from ..context import AuditContext
from ..dataset import normalize
from ..metrics import wilson
from ..probes import association, evidence, properties
from ..probes import cue_verdict as verdict
from ..probes.attribution_regions import Looking
from ..probes.evidence import InterventionStats, PropertyStats
from ..probes.cue_verdict import CueVerdict
from ..progress import SectionProgress, no_progress, shares
from ..registry import Section, register
from ..results import Check, Figure, Finding, SectionResult, Table, Text, check_status

ATTRIBUTE_LINK_POWER = 0.6
LIGHTING = "the lighting and colour of the whole scene"
# How a cue family is named once the probes have found whether it sits on the object or around it.
PLACED_NOUNS = {"brightness": "brightness", "contrast": "contrast", "colour": "colour", "saturation": "colour",
                "sharpness": "sharpness", "noise": "grain", "detail": "fine texture", "texture": "texture",
                "compression": "compression artefacts"}
DETAIL = "the fine detail of the image"
CUE_IMAGES = 6
PAIRS_PER_DIRECTION = 2   # example pairs in each direction of the flips
PAIR_ATTRIBUTES = 2       # manifest attributes named above an example image


@register
class ShortcutProbes(Section):
    name = "shortcuts"
    title = "Shortcut probes"
    order = 25
    intro = ("Looks for a cue the model may use instead of the content that defines the classes, without "
             "being told what to look for. Each image's brightness, colour, sharpness, noise, compression, "
             "border and corners are measured; the probe set shows whether a property predicts the labels "
             "(a biased data set) or the model's predictions beyond the labels; counterfactual changes of "
             "one property at a time show whether the model's answers depend on it.")

    def run(self, context: AuditContext) -> SectionResult:
        # progress: the probe set's predictions and properties, the changes, the parts, where the model looks
        predicting, measuring, changing, parts_changing, looking = shares(context.section_progress, [1, 2, 3, 1, 2])
        boxes = context.probe.boxes(context.spec)
        with context.reporting_to(predicting):
            outputs, labels = context.outputs, context.labels
        values, away, on_object, around = measure_all(context, boxes, measuring)
        around_method = evidence.surroundings_method(boxes)
        predictions = outputs.predictions
        attributes = {name: context.probe.attribute(name) for name in context.probe.attribute_names}
        stats = evidence.property_stats(values, attributes, labels, predictions, context.options.seed)
        evidence.measure_away_from_object(stats, away, labels, context.options.seed)
        data = evidence.ProbeData(values, labels, predictions, outputs.probabilities.max(axis=1),
                                  boxes, context.spec.channels == 3,
                                  lambda idx: context.probe.pixels(list(idx), context.spec),
                                  predictor(context), context.options.seed)
        tests = evidence.run_interventions(data, progress=changing)
        links = attribute_links(values, attributes, context.options.seed)
        codes = {name: association.bin_codes(v, len(context.classes)) for name, v in values.items()}
        codes |= {f"attribute:{name}": association.bin_codes(v, len(context.classes)) for name, v in attributes.items()}
        observations = verdict.Observations(codes, labels, predictions, verdict.property_correlations(values),
                                            context.options.seed)
        cues = verdict.decide(stats, tests, links, observations)
        part_families = verdict.part_cues(stats, cues)
        part_tests = {}
        if part_families:
            parts = {"object": (~around, on_object), "surroundings": (around, away)}
            progress = dict(zip(parts, shares(parts_changing, [1, 1])))
            part_tests = {part: evidence.run_interventions(evidence.on_part(data, mask, part_values, data.example_count),
                                                           part_families, progress[part])
                          for part, (mask, part_values) in parts.items()}
            cues += verdict.part_verdicts(stats, part_tests)
        for cue in (c for c in cues if not c.tested_on):
            evidence.locate(cue.causal, data, ~around, {"object": on_object, "surroundings": away})
        with context.reporting_to(looking):   # computed here when the looking section has not run yet
            findings = [to_finding(context, cue, values, tests, context.looking) for cue in cues]
        blocks = [_property_table(context, stats, around_method), _intervention_table(context, tests)]
        sensitive = verdict.sensitivities(tests, cues)
        for finding, test in robustness_findings(context.classes, sensitive):
            if test.pairs is not None:
                same_kind = [test, *(t for t in sensitive if t.cue == test.cue and t is not test)]
                finding.blocks.append(_pairs_figure(context, same_kind, "A harmless-looking change moves the answers"))
            findings.append(finding)
        if not findings:
            blocks.insert(0, Text("No cue found: no measured property both predicts the model's answers and changes "
                                  "them when changed alone, and none predicts the labels of this probe set.", "note"))
        data_out = {"properties": [s.to_json() for s in stats], "interventions": [t.to_json() for t in tests],
                    "cues": [{"cue": c.cue, "category": c.category, "severity": c.severity,
                              "lead": c.lead.name if c.lead else None, "also": [a.cue for a in c.also]}
                             for c in cues],
                    "sensitivities": [t.name for t in sensitive],
                    "part_interventions": {part: [t.to_json() for t in ts] for part, ts in part_tests.items()}}
        return self.result(blocks=blocks, findings=findings, data=data_out,
                           checks=shortcut_checks(stats, tests + [t for ts in part_tests.values() for t in ts],
                                                  cues, findings))


def _capped_proxy_sentences(changes: list[InterventionStats]) -> list[str]:
    """Say so when a proxy change moved more answers than it is allowed to count."""
    return [f"'{proxy.words}' only stands in for changing the cue and counts at most as much as '{faithful.words}'"
            for proxy, faithful in verdict.capped_proxies(changes).values() if faithful.name]


def shortcut_checks(stats: list[PropertyStats], tests: list[InterventionStats], cues: list[CueVerdict],
                    findings: list[Finding]) -> list[Check]:
    """The section's three rules with their strongest measured value, passed or not. Robustness is
    measured on the changes that no cue explains."""
    family, reliance = verdict.strongest_reliance(tests)
    nuisances = [s for s in stats if not verdict.part_of_object(s)]
    biased = max(nuisances, key=lambda s: (s.label_p < verdict.SIGNIFICANCE, s.label_power), default=None)
    bias_power = biased.label_power if biased and biased.label_p < verdict.SIGNIFICANCE else 0.0
    explained = verdict.explained_changes(cues)
    changes = [t for t in tests if t.cue in ROBUSTNESS_CHANGES and t.status == "ok" and t.name not in explained]
    fragile = max(changes, key=lambda t: t.excess, default=None)
    return [
        Check("Shortcut: changing one property alone moves the answers", round(reliance, 4),
              f"{reliance:.2f}" + (f" ({family})" if family and reliance else ""),
              f"fails at reliance {verdict.RELIANCE:.2f} when the probe images agree; warns on one side alone",
              *check_status(findings, "shortcut.")),
        Check("Probe-set bias: a property other than the object predicts the label", round(bias_power, 4),
              f"{bias_power:.2f}" + (f" ({biased.name})" if bias_power else ""),
              f"warns at label power {verdict.LABEL_POWER:.2f} (p < {verdict.SIGNIFICANCE})",
              *check_status(findings, "bias.")),
        Check("Robustness: a label-preserving change moves the answers", round(fragile.excess, 4) if fragile else 0.0,
              f"{fragile.excess:+.0%} ({fragile.name})" if fragile else "0%",
              f"warns at {verdict.FLIP_EXCESS:.0%} above harmless changes, mostly one way, significant",
              *check_status(findings, "robustness.")),
    ]


def measure_all(context: AuditContext, boxes: np.ndarray, progress: SectionProgress = no_progress,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], evidence.PackedMasks]:
    """Every property for every probe image, on the whole image, away from the object and on it, and
    the masks of what lies away from it (N, H, W, bit-packed); one read of the probe set, a batch at a time."""
    whole: list[dict[str, np.ndarray]] = []
    away: list[dict[str, np.ndarray]] = []
    on_object: list[dict[str, np.ndarray]] = []
    around: list[np.ndarray] = []
    for start in range(0, len(context.probe), context.options.batch_size):
        indices = list(range(start, min(start + context.options.batch_size, len(context.probe))))
        pixels = context.probe.pixels(indices, context.spec)
        mask = evidence.surroundings(boxes[indices], pixels)
        around.append(evidence.PackedMasks.bits(mask))
        whole.append(properties.measure(pixels))
        away.append(properties.measure_away(pixels, mask))
        on_object.append(properties.measure_away(pixels, ~mask))
        progress((indices[-1] + 1) / len(context.probe))
    whole_values, away_values, object_values = ({name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
                                                for parts in (whole, away, on_object))
    return whole_values, away_values, object_values, evidence.PackedMasks(np.concatenate(around),
                                                                          (context.spec.height, context.spec.width))


def predictor(context: AuditContext):
    def predict(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        predictions, confidence = [], []
        with torch.inference_mode():
            for start in range(0, len(pixels), context.options.batch_size):
                batch = normalize(pixels[start:start + context.options.batch_size], context.spec).to(context.device)
                probabilities = torch.softmax(context.graph(batch).float(), dim=1)
                top = probabilities.max(dim=1)
                predictions.append(top.indices.cpu().numpy())
                confidence.append(top.values.cpu().numpy())
        return np.concatenate(predictions), np.concatenate(confidence)
    return predict


def attribute_links(values: dict[str, np.ndarray], attributes: dict[str, list[str]], seed: int) -> dict[str, str]:
    """property name -> the manifest attribute it tracks (e.g. top_brightness -> weather)."""
    links = {}
    for attribute, column in attributes.items():
        present = np.array([v != "" for v in column])
        if present.sum() < 10 or len(set(column) - {""}) < 2:
            continue
        codes = np.unique(np.array(column)[present], return_inverse=True)[1]
        for name, v in values.items():
            if np.ptp(v) == 0:
                continue
            power = association.predictive_power(v[present], codes, seed)
            if power >= ATTRIBUTE_LINK_POWER and power > links.get(name, ("", 0))[1]:
                links[name] = (attribute, power)
        links[f"attribute:{attribute}"] = (attribute, 1.0)
    return {name: attribute for name, (attribute, _) in links.items()}


# --- the finding ---------------------------------------------------------------------------

def finding_code(cue: CueVerdict) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", cue.cue.replace("attribute:", "attribute.").lower()).strip("_")
    name = name.replace("attribute_", "attribute.", 1) if cue.cue.startswith("attribute:") else name
    return f"{cue.category}.{name}"


def to_finding(context: AuditContext, cue: CueVerdict, values: dict[str, np.ndarray],
               tests: list[InterventionStats], seen: Looking) -> Finding:
    classes = context.classes
    lead_words = cue.lead.words if cue.lead else "the background around the object"
    name = f"'{cue.attribute}'" if cue.attribute else _first_clause(lead_words)
    families = {cue.cue, *(a.cue for a in cue.also)}
    light_and_colour = "brightness" in families and families & {"saturation", "colour"}
    if light_and_colour and cue.cue in ("brightness", "saturation", "colour"):
        name = name if cue.attribute else LIGHTING
        lead_words = f"{LIGHTING} (as weather or time of day change them), most clearly {lead_words}"
    elif cue.cue == "detail":
        name = name if cue.attribute else DETAIL
        lead_words = f"{DETAIL} (blur and noise change it), most clearly {lead_words}"
    place = cue.causal[0].place if cue.causal else ""
    if place in ("object", "surroundings") and not cue.attribute and cue.cue in PLACED_NOUNS:
        part = "object" if place == "object" else "background"
        name = f"the {part}'s {PLACED_NOUNS[cue.cue]}"
        if _other_part_moves(cue.causal[0]):
            name = f"the {PLACED_NOUNS[cue.cue]}, mostly the {part}'s"
        lead_words = f"{name} (changing it there alone moves the predictions most), most clearly {lead_words}"
    words = lead_words + (f", which tracks the manifest attribute '{cue.attribute}'" if cue.attribute
                          and not cue.cue.startswith("attribute:") else "")
    causal = sorted([t for c in [cue, *cue.also] for t in c.causal], key=lambda t: -t.excess)
    sentences, headline = [], []
    if causal:
        t = causal[0]
        headline.append(f"'{t.words}' flips {t.flip_rate:.0%} of predictions (harmless: {t.floor:.0%})")
        towards = (f"{t.follows_donor:.0%} of them to the class of the images the change came from"
                   if t.follows_donor >= t.top_share else f"{t.top_share:.0%} of them to '{classes[t.top_class]}'")
        sentences.append(f"'{t.words}' changed {t.flip_rate:.0%} of predictions ({t.flips} of {t.treated}; "
                         f"harmless changes: {t.floor:.0%}), {towards}")
        if cue.reliance:
            sentences.append(f"adding the cue and taking it away change on average {cue.reliance:.0%} "
                             f"(+- {1.96 * cue.reliance_error:.0%}, 95%) of predictions")
        sentences += _capped_proxy_sentences(cue.causal)
    placed = _placement_sentence(cue.causal[0] if cue.causal else None)
    if placed:
        sentences.append(placed)
    if cue.tested_on == "object" and cue.severity == "warn":   # the objects of the classes differ in it
        sentences.append("the change acted on the object alone, by as much as the objects differ between the "
                         "model's answers, and the objects of the classes differ in it in this probe set while "
                         "their surroundings do not: the model tells the classes apart by the object's "
                         f"{PLACED_NOUNS[cue.cue]}; if that does not define the classes, it is a shortcut")
    elif cue.tested_on:
        sentences.append(f"the change acted on the {cue.tested_on} alone, by as much as that part differs between "
                         "the model's answers, and moved the answers as a cue the model relies on does")
    if verdict.reliance_undecided(cue):
        needed = verdict.images_to_decide(cue, len(context.labels))
        sentences.append(f"reliance {cue.reliance:.2f} +- {1.96 * cue.reliance_error:.2f}: below the "
                         f"{verdict.RELIANCE:.2f} line, but the probe set is too small to exclude it; about "
                         f"{needed} probe images (this set has {len(context.labels)}) would decide")
    if cue.lead and cue.prediction_signal:
        headline.append(f"predicts the answers with power {cue.lead.prediction_power:.2f}, the labels "
                        f"{cue.lead.label_power:.2f}")
        sentences.append(f"on the probe images it predicts the model's answers (power {cue.lead.prediction_power:.2f}) "
                         f"far better than the labels ({cue.lead.label_power:.2f})")
    elif cue.lead and cue.label_signal:
        headline.append(f"predicts the labels with power {cue.lead.label_power:.2f}")
        sentences.append(f"on the probe images it predicts the labels (power {cue.lead.label_power:.2f}, "
                         f"p = {cue.lead.label_p:.2g})")
    elif cue.sided:
        headline.append(f"accuracy {cue.sided.agreement_gap:.0%} higher where it sides with the label")
        sentences.append(f"on the probe images the model is right {cue.sided.agreement_gap:.0%} more often where "
                         f"{cue.sided.words} sides with the label than where it does not "
                         f"(p = {cue.sided.agreement_p:.2g})")
    masked = next((t for t in tests if t.name == "mask_object" and t.status == "ok"), None)
    not_object = ""
    if masked and cue.category == "shortcut" and cue.tested_on != "object" and masked.kept_rate >= verdict.KEPT_CONTEXT:
        not_object = ", not the object"
        sentences.append(f"with the object covered, {masked.kept_rate:.0%} of correct predictions stay the same")
    if cue.category == "shortcut":
        title = f"Shortcut: predictions follow {name}{not_object}"
        summary = f"Predictions follow {words}{not_object}: " + "; ".join(sentences) + "."
    else:
        title = f"Biased probe set: {name} predicts the label"
        summary = (f"In this probe set {words} predicts the label, but the model shows no reliance on it: "
                   + "; ".join(sentences) + ". Accuracy here may not carry over to data without this bias.")
    if cue.also:
        shown = [a.lead.words if a.lead else a.cue for a in cue.also]
        more = f"; and {len(shown) - 4} more" if len(shown) > 4 else ""
        summary += " The same cue also shows as " + "; ".join(shown[:4]) + more + "."
    lead, strongest = cue.lead, (causal[0] if causal else None)
    evidence_json = {
        "cue": cue.cue, "property": lead.name if lead else None, "attribute": cue.attribute,
        "also": [a.cue for a in cue.also],
        "label_power": lead.label_power if lead else None, "label_p": lead.label_p if lead else None,
        "prediction_power": lead.prediction_power if lead else None,
        "beyond_label_p": lead.beyond_label_p if lead else None,
        "group_gap": lead.group_gap if lead else None,
        "agreement_gap": cue.sided.agreement_gap if cue.sided else None,
        "reliance": cue.reliance,
        "reliance_error": cue.reliance_error,
        "reliance_images_to_decide": verdict.images_to_decide(cue, len(context.labels)) or None,
        "strongest_change": strongest.name if strongest else None,
        "flip_rate": strongest.flip_rate if strongest else None,
        "noise_floor": strongest.floor if strongest else None,
        "change_p": strongest.p_adjusted if strongest else None,
        "object_kept_rate": masked.kept_rate if masked else None,
        "place": place or None,
        "placement": strongest.placement if strongest else {},
        "interventions": [t.to_json() for t in causal],
        "attention": _attention(cue, seen),
    }
    grid = class_by_cue(context, cue, values) if cue.lead else None
    if grid:
        evidence_json["class_by_cue"] = grid
    blocks = _evidence_blocks(context, cue, causal, values, grid)
    return Finding(finding_code(cue), cue.category, cue.severity, title, summary, evidence_json, blocks,
                   headline=f"{_first_clause(words).capitalize()}: " + "; ".join(headline) + ".")


def _other_part_moves(test: InterventionStats) -> bool:
    """Does the part a cue was not placed in also move the answers, changed alone, beyond the floor?"""
    other = {"object": "surroundings", "surroundings": "object"}.get(test.place)
    rate = test.placement.get(other) if other else None
    return rate is not None and rate >= test.floor + evidence.PLACE_MINIMUM


def _placement_sentence(test: InterventionStats | None) -> str:
    rates = test.placement if test else {}
    if rates.get("object") is None or rates.get("surroundings") is None:
        return ""
    conclusion = {"object": "the cue sits on the object", "surroundings": "the cue sits around the object",
                  "both": "the model reads the cue on the object and around it"
                  }.get(test.place, "neither part alone tells where the cue sits")
    return (f"'{test.words}' on the object alone changed {rates['object']:.0%} of predictions, on its surroundings "
            f"alone {rates['surroundings']:.0%}: {conclusion}")


def _first_clause(words: str) -> str:
    """'the top border (a frame), most clearly ...' -> 'the top border'."""
    return words.split(" (")[0].split(",")[0]


def _attention(cue: CueVerdict, seen: Looking) -> dict:
    out = {}
    if cue.cue in ("border", "corner") or any(a.cue in ("border", "corner") for a in cue.also):
        out = {m: {r: round(v, 2) for r, v in seen.region_ratio[m].items()} for m in seen.methods}
    if seen.box_area is not None and not np.isnan(seen.box_area).all():
        out["object_box"] = {m: round(float(np.nanmean(seen.box_share[m])), 3) for m in seen.methods}
        out["object_box"]["area"] = round(float(np.nanmean(seen.box_area)), 3)
    return out


def _evidence_blocks(context: AuditContext, cue: CueVerdict, causal: list[InterventionStats],
                     values: dict[str, np.ndarray], grid: dict | None) -> list:
    blocks = []
    if causal:
        if causal[0].pairs is not None:
            blocks.append(_pairs_figure(context, causal))
        blocks.append(_intervention_table(context, causal[:6], "Changes of this cue that move the predictions",
                                          detail=False))
    if cue.lead and not cue.lead.categorical and cue.lead.name in values:
        blocks.append(_extremes_figure(context, cue.lead, values[cue.lead.name]))
    if grid:
        blocks.append(_group_table(grid, cue.lead))
    return blocks


# Changes of the whole image's light, colour, sharpness, grain or compression keep what it shows;
# a stamp, a frame or another background are cue tests, not robustness.
ROBUSTNESS_CHANGES = {"brightness": "brightness", "contrast": "contrast", "saturation": "colour saturation",
                      "colour": "colour balance", "sharpness": "blur and sharpening", "noise": "pixel noise",
                      "compression": "compression and grain"}


def robustness_findings(classes: tuple[str, ...], sensitive: list[InterventionStats]
                        ) -> list[tuple[Finding, InterventionStats]]:
    """A warning per kind of change that moves many answers one way although the probe images as they
    are show no shortcut on it: the model is fragile there. With the change that moved most."""
    strongest: dict[str, InterventionStats] = {}
    for test in sorted(sensitive, key=lambda t: -t.flip_rate):
        if test.cue in ROBUSTNESS_CHANGES:
            strongest.setdefault(test.cue, test)
    out = []
    for family, t in strongest.items():
        towards = classes[t.top_class] if t.top_class is not None else "another class"
        title = f"Not robust to {ROBUSTNESS_CHANGES[family]}: '{t.words}' changes {t.flip_rate:.0%} of predictions"
        summary = (f"'{t.words}' changed {t.flip_rate:.0%} of predictions ({t.flips} of {t.treated} images; harmless "
                   f"changes: {t.floor:.0%}), {t.top_share:.0%} of them to '{towards}'; accuracy on those images went "
                   f"from {t.accuracy_before:.0%} to {t.accuracy_after:.0%}. The probe images as they are do not show "
                   "the answers following this property, so it is not a shortcut: the change more likely hides what "
                   f"the model needs. Images with more {ROBUSTNESS_CHANGES[family]} than this probe set has (another "
                   "camera, compression, lighting) may be misclassified; test on such images or augment against it.")
        evidence_json = {"change": t.name, "flip_rate": round(t.flip_rate, 4), "noise_floor": round(t.floor, 4),
                         "flips": t.flips, "treated": t.treated, "towards": towards, "towards_share": round(t.top_share, 4),
                         "accuracy_before": round(t.accuracy_before, 4), "accuracy_after": round(t.accuracy_after, 4),
                         "change_p": t.p_adjusted}
        out.append((Finding(f"robustness.{family}", "robustness", "warn", title, summary, evidence_json, [],
                            headline=f"'{t.words}' flips {t.flip_rate:.0%} of predictions (harmless: {t.floor:.0%}), "
                                     f"mostly to '{towards}'."), t))
    return out


def _pairs_figure(context: AuditContext, tests: list[InterventionStats],
                  title: str = "Change only the cue: the prediction follows") -> Figure | Text:
    """Example images a change turned from one class to another, in both directions where the changes have
    them; `tests[0]` is the change to show first, the others may show the way back."""
    rows = flip_rows(tests, context.labels)
    if not rows:
        return Text("None of the example images of this change changed its prediction.", "note")
    cells = [[panel for k in found for panel in _pair_panels(context, test, k)] for test, found in rows]
    labels = [f"{_class(context, test.examples[found[0]][1])} -> {_class(context, test.examples[found[0]][2])}\n"
              + textwrap.fill(f"by '{test.words}'", 24) for test, found in rows]
    fig = figures.image_grid(cells, row_labels=labels, cell_inches=1.2, label_width=1.6)
    return Figure(figures.to_png(fig), _pairs_caption(context, rows, tests), title, width="90%")


def flip_rows(tests: list[InterventionStats], labels: np.ndarray) -> list[tuple[InterventionStats, list[int]]]:
    """The example pairs to show, a row per direction: the first change's own flips from class A to B, then
    flips from B to A of a change of the same cue if one has them, else of another change. Each row is
    (change, positions in its examples); images whose true label was their prediction before come first."""
    first = next(((t, b, a) for t in tests if t.pairs is not None for _, b, a, _, _ in t.examples if a != b), None)
    if first is None:
        return []
    test, before, after = first
    rows = [(test, _flips(test, before, after, labels))]
    same_cue_first = sorted(tests, key=lambda t: t.cue != test.cue)
    back = next(((t, found) for t in same_cue_first if (found := _flips(t, after, before, labels))), None)
    return rows + [back] if back else rows


def _flips(test: InterventionStats, before: int, after: int, labels: np.ndarray) -> list[int]:
    if test.pairs is None:
        return []
    found = [k for k, (_, b, a, _, _) in enumerate(test.examples) if (b, a) == (before, after)]
    return sorted(found, key=lambda k: labels[test.examples[k][0]] != before)[:PAIRS_PER_DIRECTION]


def _pair_panels(context: AuditContext, test: InterventionStats, k: int) -> list[figures.Panel]:
    """The original with its true label, prediction before and attributes above it; the changed image with
    the prediction after."""
    index, before, after, p_before, p_after = test.examples[k]
    original, changed = test.pairs[0][k], test.pairs[1][k]
    lines = [f"true: {_class(context, context.labels[index])}", f"before: {_class(context, before)} {p_before:.2f}",
             *_attribute_lines(context, index)]
    return [figures.Panel(figures.as_rgb(original), title="\n".join(lines)),
            figures.Panel(figures.as_rgb(changed), title=f"after: {_class(context, after)} {p_after:.2f}")]


def _class(context: AuditContext, label: int) -> str:
    return figures.shorten(context.classes[label], 14)


def _attribute_lines(context: AuditContext, index: int) -> list[str]:
    return [f"{figures.shorten(name, 10)}: {figures.shorten(value, 12)}"
            for name, value in context.image_attributes(index, PAIR_ATTRIBUTES)]


def _pairs_caption(context: AuditContext, rows: list[tuple[InterventionStats, list[int]]],
                   tests: list[InterventionStats]) -> str:
    attributes = ", and its manifest attributes" if context.probe.attribute_names else ""
    parts = ["Each row: probe images whose prediction the change named on the left moved from one class to the "
             "other, original then changed. Above each original its true label and the model's prediction and "
             f"probability before the change{attributes}; above each changed image the prediction after."]
    shown = [rows[0][0], *(test for test, _ in rows[1:] if test is not rows[0][0])]
    for test in shown:
        parts.append(f"'{test.words}': over {test.treated} changed images, {test.flip_rate:.0%} of predictions "
                     f"changed, against {test.floor:.0%} for harmless one- and two-pixel shifts (Holm-adjusted "
                     f"p = {test.p_adjusted:.2g}).")
    if len(rows) == 1:
        test, found = rows[0]
        _, before, after, _, _ = test.examples[found[0]]
        back = sum(t.towards.get(before, 0) for t in tests)
        considered = ", ".join(f"'{t.words}'" for t in tests[:4]) + (" and more" if len(tests) > 4 else "")
        parts.append(f"No change considered ({considered}) turned any image towards '{context.classes[before]}': "
                     "the evidence runs one way only." if not back else
                     f"No example image went the other way, from '{context.classes[after]}' to "
                     f"'{context.classes[before]}'.")
    return " ".join(parts)


def _extremes_figure(context: AuditContext, lead: PropertyStats, column: np.ndarray) -> Figure:
    order = np.argsort(column)
    low, high = order[:CUE_IMAGES], order[::-1][:CUE_IMAGES]
    pixels = context.probe.pixels(list(high) + list(low), context.spec)
    cells = [[figures.as_rgb(p) for p in pixels[:CUE_IMAGES]], [figures.as_rgb(p) for p in pixels[CUE_IMAGES:]]]
    fig = figures.image_grid(cells, row_labels=["strongest", "weakest"], cell_inches=1.05, label_width=0.9)
    for row, indices in enumerate((high, low)):
        for col, index in enumerate(indices):
            ax = fig.axes[row * CUE_IMAGES + col]
            truth, predicted = context.labels[index], context.outputs.predictions[index]
            colour = "#1e7d32" if truth == predicted else "#b71c1c"
            ax.set_title(f"{context.classes[truth][:12]}\n-> {context.classes[predicted][:12]}", fontsize=6,
                         color=colour)
    fig.subplots_adjust(hspace=0.45)
    caption = (f"Probe images where {lead.words} is strongest (top) and weakest (bottom), with true class and "
               "-> prediction (red = wrong). If predictions split along the rows rather than by true class, "
               "the model follows the cue.")
    return Figure(figures.to_png(fig), caption, "Where the cue is strongest and weakest", width="85%")


def class_by_cue(context: AuditContext, cue: CueVerdict, values: dict[str, np.ndarray]) -> dict:
    """Accuracy in each cell of true class x cue group (the values of the manifest attribute the cue
    tracks, or its lead property's tertiles): {"cue", "levels", "cells": {class: {level: {"accuracy",
    "n", "ci"}}}}."""
    lead = cue.lead
    attribute = cue.attribute or (lead.name.removeprefix("attribute:") if lead.categorical else None)
    if attribute:
        groups = np.array(context.probe.attribute(attribute))
        levels = sorted(set(groups) - {""})
    else:
        codes = association.tertiles(values[lead.name])
        levels = ["low", "middle", "high"][: codes.max() + 1]
        groups = np.array(levels)[codes]
    correct = context.outputs.predictions == context.labels
    cells: dict[str, dict[str, dict]] = {}
    for label in context.probe.present_classes:
        for level in levels:
            members = (context.labels == label) & (groups == level)
            n = int(members.sum())
            if n:
                hits = int(correct[members].sum())
                cells.setdefault(context.classes[label], {})[level] = {
                    "accuracy": round(hits / n, 4), "n": n, "ci": [round(b, 4) for b in wilson(hits, n)]}
    return {"cue": attribute or f"{lead.name} (tertile)", "levels": levels, "cells": cells}


def _group_table(grid: dict, lead: PropertyStats) -> Table:
    rows = [[label, level, cell["n"], f"{cell['accuracy']:.0%}", f"{cell['ci'][0]:.0%} - {cell['ci'][1]:.0%}"]
            for label, by_level in grid["cells"].items() for level, cell in by_level.items()]
    caption = ("Accuracy in each cell of true class x cue group, with 95% Wilson intervals. The worst cell is "
               f"what a user meets when the cue is the other way round (largest gap within a class: "
               f"{lead.group_gap:.0%}).")
    return Table(["true class", grid["cue"], "images", "accuracy", "95% interval"], rows, caption, "Group accuracy")


# --- section tables ------------------------------------------------------------------------

def _property_table(context: AuditContext, stats: list[PropertyStats], around_method: str) -> Table:
    ranked = sorted(stats, key=lambda s: -max(s.label_power, s.prediction_power))[:14]
    rows = [[s.name, f"{s.label_power:.2f}", _p(s.label_p), _away(s), f"{s.prediction_power:.2f}",
             _p(s.beyond_label_p), f"{s.group_gap:.0%}", "-" if s.categorical else f"{s.agreement_gap:.0%}"]
            for s in ranked]
    caption = ("Power: how well the property alone predicts the labels or the model's predictions, cross-validated; "
               "0 is the naive baseline, 1 perfect. 'beyond labels': permutation test of whether it predicts the "
               "predictions within each true class. p-values are Holm-adjusted over all properties. Gap: largest "
               "accuracy difference between property tertiles (or attribute values) within a class. Sides: accuracy "
               "where the property's half (above or below its median) sides with the label minus where it does not. "
               + (f"Away from object: label power of the property measured only {around_method}; a property that "
                  "predicts the labels on the whole image but not there is part of the object (its colour, its "
                  "edges), not a bias of the probe set." if around_method else ""))
    return Table(["property", "label power", "p", "away from object", "prediction power", "p beyond labels", "gap",
                  "sides"], rows, caption, "Which properties predict labels and predictions", detail=True)


def _away(s: PropertyStats) -> str:
    if s.away_label_power is None:
        return "-"
    return "part of the object" if verdict.part_of_object(s) else f"{s.away_label_power:.2f}"


def _intervention_table(context: AuditContext, tests: list[InterventionStats],
                        title: str = "Counterfactual changes", detail: bool = True) -> Table:
    rows = []
    for t in tests:
        if t.status != "ok":
            rows.append([t.words, "-", "-", "-", "-", "not testable on this probe set"])
            continue
        towards = f"{context.classes[t.top_class]} ({t.top_share:.0%})" if t.top_class is not None else "-"
        rows.append([t.words, t.treated, f"{t.flip_rate:.0%}", f"{t.accuracy_before:.0%} -> {t.accuracy_after:.0%}",
                     towards, _p(t.p_adjusted) if t.cue != "none" else "noise floor"])
    caption = ("Each change alters one property of the treated images: it moves them to the typical value among the "
               "images predicted as the class that carries most (or least) of it (images already predicted as that "
               "class are not treated); border and corner changes add what the images where the region stands out "
               "most share there (a stamp, a frame), or take it away by continuing each image's surroundings. "
               "With object boxes, changes of a property leave the object itself as it is. "
               "Flip: share of predictions that changed; p: one-sided binomial test against the flip rate of "
               "harmless one- and two-pixel shifts, Holm-adjusted.")
    return Table(["change", "images", "flips", "accuracy", "flips towards", "p"], rows, caption, title, detail)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"
