"""Plain data an audit produces: findings, report blocks, section results, the whole result.

Nothing here renders or stores anything; reports and the service consume these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Severity = Literal["info", "warn", "fail"]
SEVERITY_RANK = {"info": 0, "warn": 1, "fail": 2}


class Verdict(StrEnum):
    """An audit's verdict, ordered: PASS < WARN < FAIL. Its value is the findings.json string."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)

    @classmethod
    def of(cls, value: str | None) -> "Verdict":
        """The verdict named by a stored string; an unknown or missing one counts as PASS."""
        try:
            return cls(value)
        except ValueError:
            return cls.PASS

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        return self == other or self < other

    def __gt__(self, other: object) -> bool:
        return not self <= other

    def __ge__(self, other: object) -> bool:
        return not self < other
CATEGORIES = ("shortcut", "bias", "robustness", "representation", "health")


@dataclass
class Figure:
    png: bytes
    caption: str            # what it shows and what to look for
    title: str = ""
    width: str = "100%"     # CSS width in the report


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    title: str = ""
    detail: bool = False    # a full table the report keeps for its appendix


@dataclass
class Text:
    text: str
    kind: Literal["note", "warning", "plain"] = "plain"


Block = Figure | Table | Text


@dataclass
class Finding:
    code: str               # "<category>.<what>", e.g. "health.nan_outputs"
    category: str
    severity: Severity
    title: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)  # what a reviewer sees in the report
    headline: str = ""      # one line of evidence for the summary table (default: the summary)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown finding category {self.category!r}")
        if not self.code.startswith(self.category + "."):
            raise ValueError(f"finding code {self.code!r} must start with {self.category!r}.")
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "category": self.category, "severity": self.severity,
                "title": self.title, "summary": self.summary, "evidence": self.evidence}


CheckStatus = Literal["pass", "info", "warn", "fail"]


@dataclass
class Check:
    """One rule an audit applied: what it measured, the line it holds that to, and the outcome (pass, or
    the severity of the finding it raised). Passed checks are listed too: they are what a reviewer signs."""
    name: str               # what is checked, in plain words
    value: float            # the measured number, as in findings.json
    measured: str           # the same number as the report prints it
    line: str               # the threshold in words: "warns above 0.15"
    status: CheckStatus
    finding: str | None = None   # code of the finding it raised

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "measured": self.measured, "line": self.line,
                "status": self.status, "finding": self.finding}


def check_status(findings: list["Finding"], code: str) -> tuple[CheckStatus, str | None]:
    """The outcome of the check behind finding `code` (a code, or a prefix ending in '.'): the
    severity of the worst such finding raised, else pass."""
    raised = [f for f in findings if f.code == code or (code.endswith(".") and f.code.startswith(code))]
    if not raised:
        return "pass", None
    worst = max(raised, key=lambda f: SEVERITY_RANK[f.severity])
    return worst.severity, worst.code


def property_check(name: str, line: str, findings: list["Finding"], code: str) -> Check:
    """A check of a property that holds ("Weights are finite") unless finding `code` was raised."""
    status, raised = check_status(findings, code)
    return Check(name, float(raised is not None), "no" if raised else "yes", line, status, raised)


@dataclass
class SectionResult:
    name: str
    title: str
    status: Literal["ok", "skipped", "error"] = "ok"
    seconds: float = 0.0
    reason: str = ""        # why skipped, or the error
    intro: str = ""         # one paragraph: what the method does
    blocks: list[Block] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)   # JSON-able numbers for findings.json
    findings: list[Finding] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    appendix: bool = False   # shown in the report's appendix (Section.appendix)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.checks:
            out["checks"] = [c.to_json() for c in self.checks]
        return out | self.data


def verdict_of(findings: list[Finding], sections: list[SectionResult] = ()) -> Verdict:
    """The worst finding's severity; at least warn when a section failed (its results are missing)."""
    worst = max((list(Verdict)[SEVERITY_RANK[f.severity]] for f in findings), default=Verdict.PASS)
    if any(s.status == "error" for s in sections):
        worst = max(worst, Verdict.WARN)
    return worst


def incomplete_finding(sections: list[SectionResult]) -> Finding | None:
    """The finding that an audit with failed sections is incomplete, or None when every section ran.

    A skipped section (the method does not apply to this model or probe set) is not a failure.
    """
    failed = [s for s in sections if s.status == "error"]
    if not failed:
        return None
    names = ", ".join(s.name for s in failed)
    noun = "sections" if len(failed) > 1 else "section"
    reasons = "; ".join(f"{s.name} ({s.reason})" for s in failed)
    return Finding(
        "health.incomplete", "health", "warn", f"Incomplete audit: {noun} {names} failed",
        f"{len(failed)} of {len(sections)} sections failed and produced no results, so this audit cannot "
        f"pass: {reasons}.",
        {"failed_sections": {s.name: s.reason for s in failed}},
        blocks=[Table(["section", "error"], [[s.title, s.reason] for s in failed], title="Sections that failed")],
        headline=f"Results missing: {names} failed.",
    )


@dataclass
class AuditResult:
    model: dict[str, Any]        # name, version, sha256, format (+ classes, input for the report)
    dataset: dict[str, Any]      # sha256, images, classes (+ source, attributes)
    reference: dict[str, Any] | None
    verdict: Verdict
    metrics: dict[str, Any]
    findings: list[Finding]
    sections: list[SectionResult]
    environment: dict[str, Any]
    settings: dict[str, Any]
    created: str                 # ISO 8601 UTC

    def findings_json(self) -> dict[str, Any]:
        """The findings.json contract (schema 1)."""
        return {
            "schema": 1,
            "model": {k: self.model[k] for k in ("name", "version", "sha256", "format")},
            "dataset": {k: self.dataset[k] for k in ("sha256", "images", "classes")},
            "verdict": self.verdict,
            "metrics": self.metrics,
            "findings": [f.to_json() for f in self.findings],
            "sections": {s.name: s.to_json() for s in self.sections},
            "environment": self.environment,
        }
