"""Plain report data -> HTML (Jinja2, self-contained) -> PDF (WeasyPrint).

Templates never query: `report_data` builds everything they show. WeasyPrint may fetch
nothing but the report's own inline images (`data:` URLs).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import jinja2

from .. import TEMPLATE_DIR
from ..battery import AuditResult, Figure, Finding, SectionResult, Table, Text
from .anchors import finding_anchor, section_anchor, section_detail_anchor
from .formats import FILTERS, pct
from .front import front_pages
from .jsonable import to_jsonable
from .record import write_record

TEMPLATES = TEMPLATE_DIR
LIMITATIONS = [
    "Attribution maps explain the predicted class of a handful of sample images; they show where the model "
    "is sensitive, not why, and can disagree with each other.",
    "Findings are only as good as the probe set: a cue absent from the probe images cannot be detected.",
    "Accuracy intervals are 95% Wilson intervals and assume the probe images are independent.",
]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _block(block) -> dict[str, Any]:
    if isinstance(block, Figure):
        return {"kind": "figure", "src": data_uri(block.png), "caption": block.caption, "title": block.title,
                "width": _css_width(block.width)}
    if isinstance(block, Table):
        return {"kind": "table", "columns": block.columns, "rows": [[str(c) for c in row] for row in block.rows],
                "caption": block.caption, "title": block.title}
    if isinstance(block, Text):
        return {"kind": "text", "text": block.text, "style": block.kind}
    raise TypeError(f"unknown report block {type(block).__name__}")


def _css_width(width: str) -> str:
    """A figure's width goes into a style attribute: a percentage and nothing else."""
    if not re.fullmatch(r"\d{1,3}(\.\d+)?%", width):
        raise ValueError(f"a figure width must be a percentage, got {width!r}")
    return width


def _numbers(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """The finding's scalar evidence as (name, value) rows; nested data stays in findings.json."""
    rows = []
    for key, value in evidence.items():
        if value is None or value == []:
            continue
        if isinstance(value, dict):
            rows += [(f"{key} {k}".replace("_", " "), _short(v)) for k, v in value.items() if _is_scalar(v)]
        elif _is_scalar(value):
            rows.append((key.replace("_", " "), _short(value)))
    return rows[:24]


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _short(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)[:80]


def _worst_group_label(metrics: dict) -> str:
    worst = metrics.get("worst_group")
    if not worst:
        return "Worst-group accuracy"
    return f"Worst-group accuracy: {worst['class']}, {worst['attribute']} = {worst['value']}"


def _finding(index: int, finding: Finding, raised_by: SectionResult | None) -> dict[str, Any]:
    return {"anchor": finding_anchor(index), "code": finding.code, "category": finding.category,
            "severity": finding.severity, "title": finding.title, "summary": finding.summary,
            "headline": finding.headline or finding.summary, "numbers": _numbers(finding.evidence),
            "blocks": [_block(b) for b in finding.blocks],
            "section": {"title": raised_by.title, "anchor": section_anchor(raised_by.name)} if raised_by else None}


def _raised_by(result: AuditResult) -> dict[int, SectionResult]:
    """The section that raised each finding, by the finding's id (the incomplete audit's finding has none)."""
    return {id(f): s for s in result.sections for f in s.findings}


def _section(s, appendix: bool) -> dict[str, Any] | None:
    """A section's part for the body (blocks not marked detail) or for the appendix (those, or all of an
    appendix section); None when it has no such part."""
    if s.appendix:
        blocks = s.blocks if appendix else None
    else:
        blocks = [b for b in s.blocks if getattr(b, "detail", False) == appendix] or (None if appendix else [])
    if blocks is None:
        return None
    anchor = section_detail_anchor(s.name) if appendix and not s.appendix else section_anchor(s.name)
    return {"name": s.name, "anchor": anchor, "detail_anchor": section_detail_anchor(s.name),
            "title": s.title if s.appendix or not appendix else f"{s.title}: full tables",
            "status": s.status, "reason": s.reason, "intro": s.intro if s.appendix or not appendix else "",
            "seconds": s.seconds, "blocks": [_block(b) for b in blocks],
            "has_detail": not appendix and any(getattr(b, "detail", False) for b in s.blocks)}


def _cover(result: AuditResult, fields: dict[str, str] | None) -> list[tuple[str, str]]:
    """The cover's audit fields: who asked for which audit of which release."""
    fields = fields or {}
    return [("Release tag", fields.get("release_tag") or "none given"),
            ("Audit", f"no. {fields['audit']}" if fields.get("audit") else "run from the command line"),
            ("Organization", fields.get("organization") or "-"),
            ("Requested by", fields.get("requester") or fields.get("schedule") or "-")]


def report_data(result: AuditResult, changes: dict[str, Any] | None = None,
                cover: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything the report template shows, as plain data. cover: the audit's cover fields (audit,
    organization, requester, release_tag, schedule), from the service; the CLI has none."""
    metrics = result.metrics
    calibration = metrics.get("calibration") or {}
    raised_by = _raised_by(result)
    findings = [_finding(i, f, raised_by.get(id(f))) for i, f in enumerate(result.findings)]
    body = [d for s in result.sections if (d := _section(s, appendix=False))]
    appendix = [d for s in result.sections if (d := _section(s, appendix=True))]
    return {
        "model": result.model,
        "dataset": result.dataset,
        "reference": result.reference,
        "verdict": result.verdict,
        "created": result.created,
        "environment": result.environment,
        "key_metrics": [
            ("Accuracy", pct(metrics.get("accuracy"))),
            (_worst_group_label(metrics), pct(metrics.get("worst_group_accuracy"))),
            ("Expected calibration error", f"{calibration['ece']:.3f}" if "ece" in calibration else "n/a"),
            ("Probe images", str(result.dataset["images"])),
        ],
        "findings": findings,
        "front": front_pages(result, findings),
        "cover": _cover(result, cover),
        "sections": body,
        "appendix_sections": appendix,
        "timings": [(s.title, s.status, s.seconds) for s in result.sections],
        "settings": sorted((k, str(v)) for k, v in result.settings.items()),
        "failed": [(s.title, s.reason) for s in result.sections if s.status == "error"],
        "skipped": [(s.title, s.status, s.reason) for s in sorted(result.sections, key=lambda s: s.status != "error")
                    if s.status != "ok"],
        "limitations": LIMITATIONS,
        "changes": changes,
    }


def render_html(data: dict[str, Any]) -> str:
    return _environment().get_template("report/report.html.j2").render(**data)


def inline_only_fetcher():
    """A WeasyPrint fetcher for the report's own data: images; no files, no network."""
    from weasyprint.urls import URLFetcher

    return URLFetcher(allowed_protocols={"data"}, allow_redirects=False)


def render_pdf(html: str, findings: bytes | None = None) -> bytes:
    """The PDF; given findings.json's bytes, the PDF/A-3b record that embeds them (auditsvc.reports.record)."""
    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    document = HTML(string=html, base_url=None, url_fetcher=inline_only_fetcher())
    return document.write_pdf() if findings is None else write_record(document, findings)


def write_report(result: AuditResult, out_dir: Path, changes: dict[str, Any] | None = None,
                 cover: dict[str, str] | None = None) -> dict[str, Path]:
    """report.html, report.pdf (the record that embeds findings.json) and findings.json in out_dir; returns
    their paths. cover: the audit's cover fields (see report_data)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html = render_html(report_data(result, changes, cover))
    paths = {"html": out_dir / "report.html", "pdf": out_dir / "report.pdf", "json": out_dir / "findings.json"}
    findings = json.dumps(to_jsonable(result.findings_json()), indent=2, allow_nan=False).encode("utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    paths["pdf"].write_bytes(render_pdf(html, findings))
    paths["json"].write_bytes(findings)
    return paths
