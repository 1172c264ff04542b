"""The report's two front pages as plain data: the verdict and its reason, a summary in plain words,
the findings grouped by root cause with an action for each, every check the audit ran with its line,
and the grid of accuracy by class and cue of the leading shortcut.

Everything here is read from the audit result (its findings, checks and metrics), so a number on the
front pages is the number in findings.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..battery import AuditResult, Finding
from ..battery.results import SEVERITY_RANK
from .formats import pct

STATUS_ORDER = {"fail": 0, "warn": 1, "info": 2, "pass": 3}
# Health and representation findings that a shortcut explains when there is one: a model that
# decides by a cue is right only where the cue happens to side with the label.
EXPLAINED_BY_SHORTCUT = ("health.chance_accuracy", "health.miscalibrated", "health.unrecognized_classes",
                         "health.constant_prediction")

ACTIONS = {
    "shortcut": "Retrain with {cue} decorrelated from the class (balance it across the classes in the training "
                "data, or augment against it), add probe images where it disagrees with the label, and re-audit.",
    "bias": "Collect probe images that break the link between {cue} and the label (or re-weight the probe set) "
            "and re-audit; until then, accuracy measured here may not carry over to other data.",
    "robustness": "Augment training with this change (it keeps the label), add such images to the probe set, "
                  "and re-audit; check that images in use do not vary this way more than the probe set does.",
    "health.chance_accuracy": "Do not release. Check the class order and the input normalization in model.json "
                              "against training, then fix or retrain.",
    "health.miscalibrated": "Recalibrate the confidence (temperature scaling on held-out data) before scores "
                            "are used as probabilities.",
    "health.incomplete": "Re-run the audit; if the section fails again, report the error shown in the appendix.",
    "health": "Fix before release and re-audit.",
    "representation": "No action needed on its own; read it with the findings above.",
}
EXPLAINED_ACTION = "Resolves with the root cause above; confirm in the re-audit."


@dataclass
class CauseGroup:
    """Findings that share one root cause: the lead finding and what it explains."""
    lead: dict[str, Any]
    explained: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""


def front_pages(result: AuditResult, findings: list[dict[str, Any]]) -> dict[str, Any]:
    """The front pages' data. `findings`: the report's findings (anchor, title, severity, ...), in the
    order of `result.findings`."""
    checks = all_checks(result)
    counts = {s: sum(c["status"] == s for c in checks) for s in STATUS_ORDER}
    groups = root_causes(result.findings, findings)
    failed = [s.title for s in result.sections if s.status == "error"]
    return {"reason": verdict_reason(result.verdict, result.findings, failed),
            "summary": summary_text(result, groups, counts), "groups": groups, "checks": checks,
            "grid": lead_grid(result.findings), "counts": counts, "reference": against_reference(result)}


def against_reference(result: AuditResult) -> dict[str, Any] | None:
    """This model beside the reference model on the sections both ran (the reference section's data):
    accuracy, worst group, and each finding new, resolved or unchanged."""
    section = next((s for s in result.sections if s.name == "reference" and s.status == "ok"), None)
    if section is None:
        return None
    theirs = section.data
    ours = {f.code: f for s in result.sections if s.name in theirs["sections"] for f in s.findings}
    base = {f["code"]: f for f in theirs["findings"]}
    metrics = [(label, theirs["this_model"][key], theirs[key], theirs["change_points"][key])
               for label, key in (("Accuracy", "accuracy"), ("Worst-group accuracy", "worst_group_accuracy"))]
    rows = []
    for code in sorted(set(ours) | set(base), key=lambda c: (c not in ours, c)):
        mine, old = ours.get(code), base.get(code)
        change = ("new" if not old else "resolved" if not mine
                  else "unchanged" if mine.severity == old["severity"] else f"{old['severity']} to {mine.severity}")
        rows.append({"title": mine.title if mine else old["title"], "ours": mine.severity if mine else "",
                     "theirs": old["severity"] if old else "", "change": change})
    return {"model": f"{theirs['model']['name']} {theirs['model']['version']}",
            "metrics": [{"label": label, "ours": pct(a), "theirs": pct(b),
                         "change": "" if change is None else f"{change:+.1f} points"}
                        for label, a, b, change in metrics],
            "findings": rows}


def all_checks(result: AuditResult) -> list[dict[str, Any]]:
    """Every check of every section that ran, failed ones first."""
    rows = [{"section": s.title, **c.to_json()} for s in result.sections for c in s.checks]
    return sorted(rows, key=lambda c: STATUS_ORDER[c["status"]])


def verdict_reason(verdict: str, findings: list, failed_sections: list[str]) -> str:
    """The verdict in one line, with why. findings: the audit's findings, as the battery's `Finding` or as
    stored (anything with a code, category, severity and title); failed_sections: the names of the sections
    that failed. Empty for a verdict without the findings that explain it."""
    worst = _ranked(findings)
    if verdict == "pass":
        return "PASS: every check passed or is for information only; nothing needs action before release."
    if verdict not in ("warn", "fail") or not worst:
        return ""
    lead = worst[0]
    if verdict == "fail":
        why = {"shortcut": "the model decides by a cue that is not what defines the classes, so it will be wrong "
                           "where that cue and the class disagree",
               "health": "the model fails a basic health check"}.get(lead.category, "a check failed")
        return f"FAIL: {_sentence(_plain_title(lead))}: {why}."
    if failed_sections and lead.code == "health.incomplete":
        return f"WARN: the audit is incomplete ({', '.join(failed_sections)} failed), so it cannot pass."
    others = len([f for f in findings if f.severity == "warn"]) - 1
    more = f", and {others} more warning{'s' if others > 1 else ''}" if others > 0 else ""
    return (f"WARN: {_sentence(_plain_title(lead))}{more}. No check failed; a reviewer decides whether these block "
            "the release.")


def summary_text(result: AuditResult, groups: list[CauseGroup], counts: dict[str, int]) -> str:
    metrics, images = result.metrics, result.dataset["images"]
    parts = [f"On {images} probe images of {len(result.dataset['classes'])} classes the model is right "
             f"{pct(metrics.get('accuracy'))} of the time."]
    worst = metrics.get("worst_group")
    if worst:
        parts.append(f"Its worst group is '{worst['class']}' images with {worst['attribute']} = {worst['value']}: "
                     f"{pct(metrics.get('worst_group_accuracy'))} right ({worst['n']} images).")
    actionable = [g for g in groups if g.lead["severity"] != "info"]
    if actionable:
        lead = actionable[0]
        parts.append(f"The main finding: {_sentence(lead.lead['plain_title'])}.")
        if lead.explained:
            parts.append(f"It also explains the {len(lead.explained)} finding{'s' if len(lead.explained) > 1 else ''} "
                         "listed under it below.")
    else:
        parts.append("No finding needs action.")
    if sum(counts.values()):
        parts.append(f"Of {sum(counts.values())} checks, {counts['pass']} passed, {counts['fail']} failed, {counts['warn']} "
                     f"warned and {counts['info']} are for information.")
    return " ".join(parts)


def root_causes(results: list[Finding], shown: list[dict[str, Any]]) -> list[CauseGroup]:
    """One group per root cause: a failing shortcut leads the health findings it explains (chance accuracy,
    miscalibration), the representation findings on its attribute and the data bias on its cue; every
    other finding is its own group. Each finding carries its recommended action."""
    row_of = {id(f): row for f, row in zip(results, shown)}
    for finding, row in zip(results, shown):
        row["action"] = _action(finding)
        row["plain_title"] = _plain_title(finding)
    shortcut = next((f for f in _ranked(results) if f.category == "shortcut" and f.severity == "fail"), None)
    groups: list[CauseGroup] = []
    taken: set[int] = set()
    if shortcut:
        explained = [f for f in results if f is not shortcut and _explained_by(f, shortcut)]
        for f in explained:
            row_of[id(f)]["action"] = EXPLAINED_ACTION
        groups.append(CauseGroup(row_of[id(shortcut)], [row_of[id(f)] for f in explained],
                                 _why_explained(shortcut)))
        taken = {id(shortcut), *(id(f) for f in explained)}
    groups += [CauseGroup(row_of[id(f)]) for f in _ranked(results) if id(f) not in taken]
    # An incomplete audit says so before anything else: the missing sections may hide a finding.
    return sorted(groups, key=lambda g: g.lead["code"] != "health.incomplete")


def lead_grid(results: list[Finding]) -> dict[str, Any] | None:
    """Accuracy by true class x the leading shortcut's cue, with the worst cell marked."""
    lead = next((f for f in _ranked(results) if f.category == "shortcut" and "class_by_cue" in f.evidence), None)
    if lead is None:
        return None
    grid = lead.evidence["class_by_cue"]
    cells = [(label, level, cell) for label, row in grid["cells"].items() for level, cell in row.items()]
    worst = min(cells, key=lambda c: (c[2]["accuracy"], -c[2]["n"]))
    return {"finding": lead.title, "cue": grid["cue"], "levels": grid["levels"],
            "rows": [{"label": label, "cells": [_cell(row.get(level), (label, level) == worst[:2])
                                                for level in grid["levels"]]}
                     for label, row in grid["cells"].items()],
            "worst": {"label": worst[0], "level": worst[1], "accuracy": pct(worst[2]["accuracy"], 0),
                      "n": worst[2]["n"]}}


def _cell(cell: dict | None, worst: bool) -> dict[str, Any]:
    if cell is None:
        return {"text": "-", "worst": False}
    return {"text": f"{pct(cell['accuracy'], 0)} ({cell['n']})", "worst": worst}


def _explained_by(finding: Finding, shortcut: Finding) -> bool:
    if finding.code in EXPLAINED_BY_SHORTCUT:
        return True
    attribute = shortcut.evidence.get("attribute")
    same_attribute = bool(attribute) and finding.evidence.get("attribute") == attribute
    if finding.category == "representation":   # groups images by its attribute, or collapsed to a few signals
        return same_attribute or bool(finding.evidence.get("collapsed"))
    if finding.category == "bias":
        return same_attribute or finding.evidence.get("cue") in {shortcut.evidence.get("cue"),
                                                                 *(shortcut.evidence.get("also") or [])}
    return False


def _why_explained(shortcut: Finding) -> str:
    grid = shortcut.evidence.get("class_by_cue")
    if not grid:
        return ("A model that decides by a cue is right only where the cue happens to side with the label: "
                "that explains the findings below.")
    accuracies = [cell["accuracy"] for row in grid["cells"].values() for cell in row.values()]
    return (f"A model that decides by {grid['cue']} is right only where it happens to side with the label (accuracy "
            f"by class and {grid['cue']} ranges from {pct(min(accuracies), 0)} to {pct(max(accuracies), 0)}): that "
            "explains the findings below.")


def _action(finding: Finding) -> str:
    template = ACTIONS.get(finding.code) or ACTIONS.get(finding.category, "Review and re-audit.")
    cue = finding.evidence.get("attribute") or finding.evidence.get("change") or finding.evidence.get("cue") or "the cue"
    return template.format(cue=f"'{cue}'" if finding.evidence.get("attribute") else str(cue).replace("_", " "))


def _plain_title(finding: Finding) -> str:
    """'Shortcut: predictions follow X' -> 'predictions follow X': the verdict line says what it is."""
    prefix = f"{finding.category}: "
    return finding.title[len(prefix):] if finding.title.lower().startswith(prefix) else finding.title


def _ranked(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -SEVERITY_RANK.get(f.severity, 0))


def _sentence(text: str) -> str:
    text = text.rstrip(". ")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
