"""Reads, always scoped to what the requesting user may see: their organizations' objects, or with
`organization` (an API token's) that one organization's only, while the user is still a member.

An object of another organization is indistinguishable from one that does not exist (404).
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

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


def audit_status(audit: Audit, now: datetime | None = None) -> dict:
    """The job row as plain data (API and the progress poller), with its live progress (`audit_progress`)."""
    return {
        "id": audit.pk, "status": audit.status, "progress": round(audit.progress, 3), "stage": audit.stage,
        "message": audit.message, "verdict": audit.verdict or None, "attempts": audit.attempts,
        "profile": audit.profile,
        "model_version": {"id": audit.model_version_id, "name": audit.model_version.name,
                          "version": audit.model_version.version},
        "probe_set": {"id": audit.probe_set_id, "name": audit.probe_set.name},
        "reference": audit.reference_id,
        "created": audit.created.isoformat(), "started": audit.started.isoformat() if audit.started else None,
        "finished": audit.finished.isoformat() if audit.finished else None,
        **audit_progress(audit, now),
    }


# --- live progress -----------------------------------------------------------------------------

HISTORY_AUDITS = 50    # the finished audits an estimate learns from, newest first
SIMILAR_AUDITS = 5     # per step, the ones nearest in probe-set size


def audit_progress(audit: Audit, now: datetime | None = None) -> dict:
    """Where a queued or running audit is, as plain data: its steps with their durations (a running one's
    so far), which step runs ("section 6 of 14"), the time since it started, an estimate of the time left
    (None: no history yet), and while queued, how many queued audits are ahead of it."""
    now = now or timezone.now()
    steps = [_step_view(step, now) for step in audit.steps]
    running = next((number for number, step in enumerate(steps, 1) if step["status"] == "running"), None)
    started, active = audit.started, audit.status in (Audit.Status.QUEUED, Audit.Status.RUNNING)
    return {
        "steps": steps,
        "step": {"number": running, "count": len(steps), "title": steps[running - 1]["title"]} if running else None,
        "elapsed": _seconds((audit.finished or now) - started) if started and audit.status != Audit.Status.QUEUED
        else None,
        "waiting": _seconds((audit.started or now) - audit.created) if audit.created else None,
        "remaining": audit_remaining_seconds(audit) if active else None,
        "queue_position": audit_queue_position(audit),
        "cancellable": active,
    }


def _step_view(step: dict, now: datetime) -> dict:
    seconds = step.get("seconds")
    if step["status"] == "running" and step.get("started"):
        seconds = _seconds(now - datetime.fromisoformat(step["started"]))
    return {"name": step["name"], "title": step["title"], "status": step["status"],
            "fraction": round(step.get("fraction") or 0.0, 3), "seconds": seconds}


def _seconds(delta) -> float:
    return round(max(delta.total_seconds(), 0.0), 1)


def audit_queue_position(audit: Audit) -> int | None:
    """How many queued audits are ahead of this queued one (None when it is not queued). Every
    organization's count: they wait for the same workers."""
    if audit.status != Audit.Status.QUEUED:
        return None
    return Audit.objects.filter(status=Audit.Status.QUEUED).filter(
        Q(created__lt=audit.created) | Q(created=audit.created, pk__lt=audit.pk)).count()


def audit_remaining_seconds(audit: Audit) -> float | None:
    """The estimated time left: each unfinished step's expected duration (`step_estimates`), less the share
    a running step has done. None when a step has no history to go by."""
    unfinished = [step for step in audit.steps if step["status"] in ("queued", "running")]
    if not unfinished:
        return None
    expected = step_estimates(audit.probe_set.images)
    if any(step["name"] not in expected for step in unfinished):
        return None
    return round(sum(expected[step["name"]] * (1 - (step.get("fraction") or 0.0)) for step in unfinished), 1)


def step_estimates(images: int) -> dict[str, float]:
    """Seconds each step is expected to take on a probe set of `images` images, from past finished audits:
    per step, the durations of the SIMILAR_AUDITS nearest in probe-set size, each scaled by the ratio of
    the sizes, and their median. Only steps that finished (ok or skipped) count."""
    durations: dict[str, list[tuple[float, float]]] = {}
    finished = (Audit.objects.filter(status=Audit.Status.DONE).order_by("-finished")
                .values_list("steps", "probe_set__images")[:HISTORY_AUDITS])
    for steps, size in finished:
        for step in steps or []:
            if step.get("status") in ("ok", "skipped") and step.get("seconds") is not None and size and images:
                distance = abs(math.log(size / images))
                durations.setdefault(step["name"], []).append((distance, step["seconds"] * images / size))
    return {name: statistics.median(scaled for _, scaled in sorted(found, key=lambda f: f[0])[:SIMILAR_AUDITS])
            for name, found in durations.items()}


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
