"""Reads, always scoped to what the requesting user may see: their organizations' objects, or with
`organization` (an API token's) that one organization's only, while the user is still a member.

An object of another organization is indistinguishable from one that does not exist (404).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from auditsvc.reports.anchors import finding_anchor, section_anchor
from auditsvc.reports.changes import finding_changes, metric_deltas
from auditsvc.reports.front import verdict_reason

from .models import ApiToken, Audit, ModelVersion, Organization, ProbeSet, Schedule

log = logging.getLogger(__name__)
NOT_RUN = {"error": "failed", "skipped": "skipped"}   # a section's status in findings.json, as the page says it


def organizations_for(user) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user).order_by("name")


def organization_of(user, pk: int | None) -> Organization | None:
    """The user's organization `pk`; None when there is none such, or the user is not a member."""
    return organizations_for(user).filter(pk=pk).first() if pk is not None else None


def organization_chosen(user, pk: int | None) -> Organization | None:
    """The user's organization `pk`, else their first one (None for a user without any)."""
    return organization_of(user, pk) or organizations_for(user).first()


def _scoped(model, user, organization: Organization | None = None) -> QuerySet:
    if not user.is_authenticated:
        return model.objects.none()
    rows = model.objects.filter(organization__memberships__user=user)
    return rows.filter(organization=organization) if organization is not None else rows


def audits_for(user, organization: Organization | None = None) -> QuerySet[Audit]:
    return _scoped(Audit, user, organization).select_related("model_version", "probe_set", "reference").order_by(
        "-created")


def audit_get(user, pk: int, organization: Organization | None = None) -> Audit:
    return get_object_or_404(audits_for(user, organization), pk=pk)


def audits_of_version(user, version: ModelVersion, organization: Organization | None = None) -> QuerySet[Audit]:
    return audits_for(user, organization).filter(model_version=version)


def audits_to_compare_with(user, audit: Audit, limit: int = 20) -> list[Audit]:
    """Other finished audits of the same model version."""
    return list(audits_of_version(user, audit.model_version).filter(status=Audit.Status.DONE).exclude(
        pk=audit.pk)[:limit])


def model_versions_for(user, organization: Organization | None = None) -> QuerySet[ModelVersion]:
    return _scoped(ModelVersion, user, organization).order_by("name", "-created")


def model_version_get(user, pk: int, organization: Organization | None = None) -> ModelVersion:
    return get_object_or_404(model_versions_for(user, organization), pk=pk)


def probe_sets_for(user, organization: Organization | None = None) -> QuerySet[ProbeSet]:
    return _scoped(ProbeSet, user, organization).order_by("-created")


def probe_set_get(user, pk: int, organization: Organization | None = None) -> ProbeSet:
    return get_object_or_404(probe_sets_for(user, organization), pk=pk)


def schedules_for(user) -> QuerySet[Schedule]:
    return _scoped(Schedule, user).select_related("model_version", "probe_set")


def schedule_get(user, pk: int) -> Schedule:
    return get_object_or_404(schedules_for(user), pk=pk)


def tokens_for(user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked=False).select_related("organization").order_by("-created")


def token_get(user, pk: int) -> ApiToken:
    return get_object_or_404(tokens_for(user), pk=pk)


def audit_status(audit: Audit) -> dict:
    """The job row as plain data (API and the progress poller)."""
    return {
        "id": audit.pk, "status": audit.status, "progress": round(audit.progress, 3), "stage": audit.stage,
        "message": audit.message, "verdict": audit.verdict or None, "attempts": audit.attempts,
        "model_version": {"id": audit.model_version_id, "name": audit.model_version.name,
                          "version": audit.model_version.version},
        "probe_set": {"id": audit.probe_set_id, "name": audit.probe_set.name},
        "reference": audit.reference_id,
        "created": audit.created.isoformat(), "started": audit.started.isoformat() if audit.started else None,
        "finished": audit.finished.isoformat() if audit.finished else None,
    }


def requester_name(audit: Audit) -> str:
    """The name of the user who asked for the audit; '' when none did."""
    user = audit.requested_by
    return (user.get_full_name() or user.get_username()) if user else ""


def schedule_label(audit: Audit) -> str:
    """The schedule that started the audit, in words; '' for an audit a user started."""
    return f"scheduled re-audit, every {audit.schedule.every_hours} h" if audit.schedule else ""


def audit_page(audit: Audit) -> dict:
    """The audit page as plain data: the release, who asked, how long the audit waited and ran; once done,
    the verdict's reason as the report's front page words it, the sections that failed or were skipped
    (failed first), and the findings in findings.json's order, each with its anchor in the report."""
    done = audit.status == Audit.Status.DONE
    findings = list(audit.findings.all()) if done else []
    not_run = sections_not_run(findings_json_of(audit)) if done else []
    failed = [section["name"] for section in not_run if section["status"] == "error"]
    return {
        "release_tag": audit.model_version.release_tag,
        "requester": requester_name(audit) or schedule_label(audit),
        "queued_seconds": _seconds_between(audit.created, audit.started),
        "run_seconds": _seconds_between(audit.started, audit.finished),
        "verdict_reason": verdict_reason(audit.verdict, findings, failed) if done else "",
        "sections_not_run": not_run,
        "findings": [{"anchor": finding_anchor(index), "severity": f.severity, "title": f.title, "code": f.code,
                      "summary": f.summary} for index, f in enumerate(findings)],
    }


def findings_json_of(audit: Audit) -> dict:
    """The audit's findings.json; {} when it has none or it cannot be read."""
    if not audit.findings_json:
        return {}
    try:
        with audit.findings_json.open("rb") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        log.warning("audit %s: findings.json unreadable: %s", audit.pk, exc)
        return {}
    return data if isinstance(data, dict) else {}


def sections_not_run(findings_json: dict) -> list[dict]:
    """The sections that failed, then those skipped, each in the report's order, with why and their anchor."""
    sections = findings_json.get("sections")
    if not isinstance(sections, dict):
        return []
    rows = [{"name": str(name), "status": section["status"], "label": NOT_RUN[section["status"]],
             "reason": str(section.get("reason", "")), "anchor": section_anchor(str(name))}
            for name, section in sections.items() if isinstance(section, dict) and section.get("status") in NOT_RUN]
    return sorted(rows, key=lambda row: row["status"] != "error")


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def audit_summary(audit: Audit) -> dict:
    """A finished audit as `changes_since` compares it (and as the next audit's report is given it)."""
    return {"audit": audit.pk, "created": audit.created.isoformat(timespec="seconds"), "verdict": audit.verdict,
            "metrics": audit.metrics,
            "findings": [{"code": f.code, "title": f.title, "severity": f.severity} for f in audit.findings.all()]}


def audit_comparison(older: Audit, newer: Audit) -> dict:
    """New, resolved and kept findings and metric deltas between two finished audits of one model version."""
    before, after = audit_summary(older), audit_summary(newer)
    return {"older": older, "newer": newer, **finding_changes(before["findings"], after["findings"]),
            "metrics": metric_deltas(older.metrics, newer.metrics)}
