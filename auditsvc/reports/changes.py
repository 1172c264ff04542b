"""What changed since a previous audit: new and resolved findings, metric deltas, a worse verdict.

Plain data in, plain data out: the sandboxed child puts it in the report, the service stores
it and mails owners when the verdict got worse. An audit summary is
`{"audit", "created", "verdict", "metrics", "findings": [{"code", "title"}, ...]}`.
"""

from __future__ import annotations

from typing import Any

from auditsvc.battery import Verdict

from .formats import pct


def changes_since(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    findings = finding_changes(previous.get("findings", []), current.get("findings", []))
    return {
        "previous_audit": previous.get("audit"),
        "previous_created": previous.get("created"),
        "previous_verdict": previous.get("verdict"),
        "new": [_named(f) for f in findings["new"]],
        "resolved": [_named(f) for f in findings["resolved"]],
        "metrics": metric_deltas(previous.get("metrics") or {}, current.get("metrics") or {}),
        "worse": Verdict.of(current.get("verdict")) > Verdict.of(previous.get("verdict")),
    }


def finding_changes(before: list[dict], after: list[dict]) -> dict[str, list[dict]]:
    """The findings (dicts with a "code") that are new, resolved and kept, by code; the later one of a kept code."""
    old = {f["code"]: f for f in before}
    now = {f["code"]: f for f in after}
    return {"new": [now[c] for c in now if c not in old], "resolved": [old[c] for c in old if c not in now],
            "kept": [now[c] for c in now if c in old]}


def _named(finding: dict) -> str:
    return f"{finding['title']} ({finding['code']})"


def metric_deltas(before: dict, after: dict) -> list[dict]:
    """Key metrics of two audits side by side, formatted for a table."""
    rows = []
    for key, label in (("accuracy", "Accuracy"), ("worst_group_accuracy", "Worst-group accuracy")):
        old, new = before.get(key), after.get(key)
        if _number(old) and _number(new):
            rows.append({"name": label, "before": pct(old), "after": pct(new), "delta": f"{new - old:+.1%}"})
    old, new = (before.get("calibration") or {}).get("ece"), (after.get("calibration") or {}).get("ece")
    if _number(old) and _number(new):
        rows.append({"name": "Calibration error (ECE)", "before": f"{old:.3f}", "after": f"{new:.3f}",
                     "delta": f"{new - old:+.3f}"})
    return rows


def group_accuracy_deltas(before: dict, after: dict) -> list[dict]:
    """Accuracy per manifest attribute group ("site = north") of two audits side by side, formatted for a
    table; a group only one audit has shows "-" on the other side."""
    old, new = before.get("groups") or {}, after.get("groups") or {}
    rows = []
    for attribute in sorted(set(old) | set(new)):
        values = set(old.get(attribute) or {}) | set(new.get(attribute) or {})
        for value in sorted(values):
            first = (old.get(attribute) or {}).get(value) or {}
            second = (new.get(attribute) or {}).get(value) or {}
            a, b = first.get("accuracy"), second.get("accuracy")
            rows.append({"name": f"{attribute} = {value}", "before": _with_count(first), "after": _with_count(second),
                         "delta": f"{b - a:+.1%}" if _number(a) and _number(b) else "-"})
    return rows


def _with_count(group: dict) -> str:
    accuracy = group.get("accuracy")
    return f"{pct(accuracy)} (n={group.get('n', '?')})" if _number(accuracy) else "-"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
