"""Against the reference model: the same probe set's accuracy, group accuracy and shortcut probes for
both models side by side, and what changed (the candidate against its baseline)."""

from __future__ import annotations

from ..context import AuditContext
from ..metrics import pct, worst_group_words
from ..results import SectionResult, Table, Text
from ..registry import Section, register, sections

# What a release reviewer compares: how often each model is right, where it is worst, and the cues.
COMPARED_SECTIONS = ["performance", "shortcuts"]
COMPARED_METRICS = ("accuracy", "worst_group_accuracy")


@register
class ReferenceComparison(Section):
    name = "reference"
    title = "Against the reference model"
    order = 27
    intro = ("The reference model (the release before, or a baseline) audited on the same probe set by the same "
             "performance and shortcut probes, side by side with this model: what got better, what got worse.")

    def run(self, context: AuditContext) -> SectionResult:
        reference = context.reference
        if reference is None:
            return self.result(status="skipped", reason="no reference model was given")
        if tuple(reference.meta.classes) != tuple(context.classes):
            return self.result(status="skipped", reason="the reference model has other classes than this one")
        theirs = AuditContext(reference, context.reference_graph, context.probe, context.options)
        findings = [f for section in sections(COMPARED_SECTIONS) for f in section.run(theirs).findings]
        blocks = [Table(["", "this model", "reference", "change"], _metric_rows(context.metrics, theirs.metrics),
                        title="Accuracy side by side",
                        caption=f"Reference: {reference.meta.name} {reference.meta.version}, on the same "
                                f"{len(context.labels)} probe images."),
                  Table(["reference's finding", "severity"], [[f.title, f.severity.upper()] for f in findings],
                        title="The reference model's performance and shortcut findings",
                        caption="The front page sets them beside this model's: new, resolved, unchanged.")
                  if findings else Text("The reference model has no performance or shortcut finding.", "note")]
        data = {"model": {"name": reference.meta.name, "version": reference.meta.version},
                "sections": COMPARED_SECTIONS,
                "accuracy": _round(theirs.metrics.get("accuracy")),
                "worst_group_accuracy": _round(theirs.metrics.get("worst_group_accuracy")),
                "worst_group": theirs.metrics.get("worst_group"),
                "this_model": {key: _round(context.metrics.get(key)) for key in COMPARED_METRICS},
                "change_points": {key: _points(context.metrics.get(key), theirs.metrics.get(key))
                                  for key in COMPARED_METRICS},
                "findings": [{"code": f.code, "severity": f.severity, "title": f.title} for f in findings]}
        return self.result(blocks=blocks, data=data)


def _metric_rows(ours: dict, theirs: dict) -> list[list[str]]:
    rows = []
    for label, key in (("accuracy", "accuracy"), ("worst group accuracy", "worst_group_accuracy")):
        a, b = ours.get(key), theirs.get(key)
        change = _points(a, b)
        rows.append([label, pct(a), pct(b), "-" if change is None else f"{change:+.1f} points"])
    rows.append(["worst group", worst_group_words(ours.get("worst_group")),
                 worst_group_words(theirs.get("worst_group")), ""])
    return rows


def _points(ours, theirs) -> float | None:
    """This model's value minus the reference's, in percentage points."""
    return None if ours is None or theirs is None else round((ours - theirs) * 100, 1)


def _round(value):
    return None if value is None else round(float(value), 4)
