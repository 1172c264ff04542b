"""Reads, always scoped to what the requesting user may see: their organizations' objects, or with
`organization` (an API token's) that one organization's only, while the user is still a member.

An object of another organization is indistinguishable from one that does not exist (404).
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from auditsvc.reports.changes import metric_deltas

from .models import ApiToken, Audit, ModelVersion, Organization, ProbeSet, Schedule


def organizations_for(user) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user).order_by("name")


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


def audit_comparison(older: Audit, newer: Audit) -> dict:
    """New and resolved findings and metric deltas between two finished audits of one model version."""
    before = {f.code: f for f in older.findings.all()}
    after = {f.code: f for f in newer.findings.all()}
    return {"older": older, "newer": newer,
            "new": [after[c] for c in after if c not in before],
            "resolved": [before[c] for c in before if c not in after],
            "kept": [after[c] for c in after if c in before], "metrics": metric_deltas(older.metrics, newer.metrics)}
