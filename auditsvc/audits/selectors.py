"""Reads, always scoped to what the requesting user may see: their organizations' objects, or with
`organization` (an API token's) that one organization's only, while the user is still a member.

An object of another organization is indistinguishable from one that does not exist (404).
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from auditsvc.reports.changes import finding_changes, metric_deltas

from .models import ApiToken, Audit, ModelVersion, Organization, ProbeSet, Schedule


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
