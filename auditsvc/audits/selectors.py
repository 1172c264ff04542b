"""Reads, always scoped to what the requesting user may see: their organizations' objects, or with
`organization` (an API token's) that one organization's only, while the user is still a member.

An object of another organization is indistinguishable from one that does not exist (404).
"""

from __future__ import annotations

import json
import logging
import math
import heapq
import statistics
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from django.core.cache import cache
from django.db.models import Case, Count, IntegerField, Max, Q, QuerySet, Value, When
from django.shortcuts import get_object_or_404
from django.utils import timezone

from auditsvc.battery import BadInput
from auditsvc.battery.dataset import images_per_class
from auditsvc.reports.anchors import finding_anchor, section_anchor
from auditsvc.reports.changes import finding_changes, group_accuracy_deltas, metric_deltas
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


def audits_filtered(user, *, model: str = "", release_tag: str = "", verdict: str = "",
                    status: str = "") -> QuerySet[Audit]:
    """The user's audits, narrowed by model name, release tag, verdict and status (each when given)."""
    audits = audits_for(user)
    if model:
        audits = audits.filter(model_version__name=model)
    if release_tag:
        audits = audits.filter(model_version__release_tag=release_tag)
    if verdict:
        audits = audits.filter(verdict=verdict)
    if status:
        audits = audits.filter(status=status)
    return audits


def model_names_for(user) -> list[str]:
    return sorted(set(model_versions_for(user).values_list("name", flat=True)))


def release_tags_for(user) -> list[str]:
    return sorted(set(model_versions_for(user).exclude(release_tag="").values_list("release_tag", flat=True)))


def audit_find_identical(*, organization: Organization, model_version: ModelVersion, probe_set: ProbeSet,
                         reference: ModelVersion | None = None, seed: int = 0,
                         profile: str = Audit.Profile.FULL) -> Audit | None:
    """A queued or running audit of the same inputs and profile, which would give the same report as a new one."""
    return (Audit.objects.filter(organization=organization, model_version=model_version, probe_set=probe_set,
                                 reference=reference, seed=seed, profile=profile,
                                 status__in=(Audit.Status.QUEUED, Audit.Status.RUNNING))
            .select_related("model_version", "probe_set", "reference").order_by("created").first())


def comparable_audits(user, organization: Organization | None, limit: int = 100) -> list[Audit]:
    """Finished audits (those with findings) of `organization`, newest first: what can be compared."""
    if organization is None:
        return []
    return list(audits_for(user, organization).filter(status=Audit.Status.DONE)[:limit])


def audits_of_probe_set(user, probe_set: ProbeSet) -> list[Audit]:
    return list(audits_for(user, probe_set.organization).filter(probe_set=probe_set))


def audit_pair(user, ids: list[int | None]) -> tuple[list[Audit], str, bool]:
    """The two audits `ids` names for a comparison, or why they cannot be compared: (audits, problem, unknown).
    `unknown` is True when an id names no audit the user may see (another organization's is one of those)."""
    if not ids:
        return [], "", False
    if len(ids) != 2:
        chosen = f"{len(ids)} {'was' if len(ids) == 1 else 'were'} chosen"
        return [], f"Choose exactly two audits to compare; {chosen}.", False
    found = {audit.pk: audit for audit in audits_for(user).filter(pk__in=[i for i in ids if i is not None])}
    missing = [i for i in ids if i not in found]
    if missing:
        shown = f"#{missing[0]}" if missing[0] is not None else "with that id"
        return [], f"There is no audit {shown} that you can see: choose two from the list.", True
    if ids[0] == ids[1]:
        return [], f"Audit #{ids[0]} was chosen twice: choose two different audits.", False
    audits = [found[i] for i in ids]
    if audits[0].organization_id != audits[1].organization_id:
        return [], "These audits belong to different organizations; compare audits of one organization.", False
    for audit in audits:
        if audit.status == Audit.Status.FAILED:
            return [], f"Audit #{audit.pk} failed, so it has no findings to compare; choose a finished one.", False
        if audit.status != Audit.Status.DONE:
            return [], f"Audit #{audit.pk} is still {audit.status}: compare it once it is done.", False
    return audits, "", False


def audits_to_compare_with(user, audit: Audit, limit: int = 50) -> list[Audit]:
    """Other finished audits of the audit's organization: the same model's versions first, newest first."""
    same_model = Case(When(model_version__name=audit.model_version.name, then=Value(0)), default=Value(1),
                      output_field=IntegerField())
    return list(audits_for(user, audit.organization).filter(status=Audit.Status.DONE).exclude(pk=audit.pk)
                .order_by(same_model, "-created")[:limit])


def model_versions_for(user, organization: Organization | None = None) -> QuerySet[ModelVersion]:
    return _scoped(ModelVersion, user, organization).order_by("name", "-created")


def model_version_get(user, pk: int, organization: Organization | None = None) -> ModelVersion:
    return get_object_or_404(model_versions_for(user, organization).select_related("organization"), pk=pk)


def probe_sets_for(user, organization: Organization | None = None) -> QuerySet[ProbeSet]:
    return _scoped(ProbeSet, user, organization).order_by("-created")


def probe_set_get(user, pk: int, organization: Organization | None = None) -> ProbeSet:
    return get_object_or_404(probe_sets_for(user, organization), pk=pk)


def model_history(user, version: ModelVersion) -> list[dict]:
    """Every version of `version`'s model (same name, same organization), newest first, each with its
    audits (newest first), its latest finished audit and that audit's verdict."""
    versions = list(model_versions_for(user, version.organization).filter(name=version.name).order_by("-created"))
    audits = audits_for(user, version.organization).filter(model_version__in=versions)
    by_version: dict[int, list[Audit]] = {v.pk: [] for v in versions}
    for audit in audits:
        by_version[audit.model_version_id].append(audit)
    history = []
    for v in versions:
        latest = next((a for a in by_version[v.pk] if a.status == Audit.Status.DONE), None)
        history.append({"version": v, "audits": by_version[v.pk], "latest_done": latest,
                        "latest_verdict": latest.verdict if latest else ""})
    return history


def probe_set_images_per_class(probe_set: ProbeSet) -> dict[str, int] | None:
    """Images per class folder, read from the stored zip's directory (no image is read); cached by the
    set's hash. None when the file cannot be read."""
    key = f"probe-set-images-per-class:{probe_set.sha256}"
    counts = cache.get(key)
    if counts is None:
        try:
            with probe_set.file.open("rb") as handle:
                counts = images_per_class(handle)
        except (OSError, ValueError, BadInput):   # Django's File.open raises ValueError for a missing file
            return None
        cache.set(key, counts, 24 * 3600)
    return counts


def schedules_for(user) -> QuerySet[Schedule]:
    return _scoped(Schedule, user).select_related("model_version", "probe_set")


def schedule_get(user, pk: int) -> Schedule:
    return get_object_or_404(schedules_for(user), pk=pk)


def tokens_for(user) -> QuerySet[ApiToken]:
    """The user's tokens, those in use first; revoked ones stay listed."""
    return ApiToken.objects.filter(user=user).select_related("organization").order_by("revoked", "-created")


def token_get(user, pk: int) -> ApiToken:
    return get_object_or_404(tokens_for(user), pk=pk)


def audit_status(audit: Audit, now: datetime | None = None, queue: list[int] | None = None) -> dict:
    """The job row as plain data (API and the progress poller), with its live progress (`audit_progress`;
    `queue`: `queued_in_order()`, when the caller has it already)."""
    return {
        "id": audit.pk, "status": audit.status, "progress": round(audit.progress, 3), "stage": audit.stage,
        "message": audit.message, "verdict": audit.verdict or None, "attempts": audit.attempts,
        "profile": audit.profile, "priority": audit.priority,
        "model_version": {"id": audit.model_version_id, "name": audit.model_version.name,
                          "version": audit.model_version.version, "release_tag": audit.model_version.release_tag},
        "release_tag": audit.model_version.release_tag,
        "probe_set": {"id": audit.probe_set_id, "name": audit.probe_set.name},
        "reference": audit.reference_id,
        "created": audit.created.isoformat(), "started": audit.started.isoformat() if audit.started else None,
        "finished": audit.finished.isoformat() if audit.finished else None,
        **audit_progress(audit, now, queue),
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


# --- the queue's order (services/dispatching.py sends audits to the workers in it) --------------

PRIORITY_RANK = {priority: rank for rank, priority in enumerate(Audit.Priority.values)}   # release first


class Waiting(NamedTuple):
    """A queued audit not yet sent to the workers, as the dispatcher orders it."""
    pk: int
    organization_id: int
    priority: str
    created: datetime


def dispatch_order(waiting: Iterable[Waiting], at_workers: Mapping[int, int],
                   last_sent: Mapping[int, datetime] | None = None) -> list[Waiting]:
    """The order in which waiting audits go to the workers, as the dispatcher picks them one after the
    other: the highest priority first (release gates, then audits a person waits for, then scheduled
    re-audits); within a priority, the organization with the fewest audits at the workers (`at_workers`,
    each pick adding one), and among those, the one sent an audit longest ago (`last_sent`; never: first),
    so that the organizations take turns and one's long queue never holds back another's; then the oldest
    audit. It assumes no audit leaves the workers meanwhile; when one does, its organization's turn comes
    sooner."""
    own_queues: dict[int, deque[Waiting]] = defaultdict(deque)
    for audit in sorted(waiting, key=lambda a: (PRIORITY_RANK[a.priority], a.created, a.pk)):
        own_queues[audit.organization_id].append(audit)
    count = Counter(at_workers)
    sent = {organization: (0, when.timestamp()) for organization, when in (last_sent or {}).items()}

    def entry(organization: int) -> tuple:
        head = own_queues[organization][0]
        return (PRIORITY_RANK[head.priority], count[organization], sent.get(organization, (-1, 0.0)), head.created,
                head.pk, organization)

    heads = [entry(organization) for organization in own_queues]
    heapq.heapify(heads)
    order = []
    while heads:
        organization = heapq.heappop(heads)[-1]
        order.append(own_queues[organization].popleft())
        count[organization] += 1
        sent[organization] = (1, len(order))   # sent after every real time, in this order
        if own_queues[organization]:
            heapq.heappush(heads, entry(organization))
    return order


def audits_at_workers() -> Counter[int]:
    """Per organization (id), its audits at the workers: running, or sent and waiting in the broker."""
    at_workers = Q(status=Audit.Status.RUNNING) | Q(status=Audit.Status.QUEUED, dispatched__isnull=False)
    rows = Audit.objects.filter(at_workers).values_list("organization_id").annotate(count=Count("pk")).order_by()
    return Counter(dict(rows))


def audits_last_sent(since: timedelta = timedelta(days=1)) -> dict[int, datetime]:
    """Per organization (id), when an audit of it was last sent to the workers (within `since`; before that
    counts as never)."""
    rows = (Audit.objects.filter(dispatched__gte=timezone.now() - since).values_list("organization_id")
            .annotate(last=Max("dispatched")).order_by())
    return dict(rows)


def audits_waiting_in_order(at_workers: Mapping[int, int] | None = None) -> list[Waiting]:
    """The queued audits not yet sent to the workers, in `dispatch_order`."""
    waiting = Audit.objects.filter(status=Audit.Status.QUEUED, dispatched__isnull=True).values_list(
        "pk", "organization_id", "priority", "created")
    return dispatch_order((Waiting(*row) for row in waiting),
                          audits_at_workers() if at_workers is None else at_workers, audits_last_sent())


def queued_in_order() -> list[int]:
    """Every queued audit's id in the order they start: those sent to the workers first (in the order they
    were sent, as the broker hands them out), then the waiting ones in `dispatch_order`."""
    sent = Audit.objects.filter(status=Audit.Status.QUEUED, dispatched__isnull=False).order_by("dispatched", "pk")
    return [*sent.values_list("pk", flat=True), *(audit.pk for audit in audits_waiting_in_order())]


# --- live progress -----------------------------------------------------------------------------

HISTORY_AUDITS = 50    # the finished audits an estimate learns from, newest first
SIMILAR_AUDITS = 5     # per step, the ones nearest in probe-set size


def audit_progress(audit: Audit, now: datetime | None = None, queue: list[int] | None = None) -> dict:
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
        "queue_position": audit_queue_position(audit, queue),
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


def audit_queue_position(audit: Audit, queue: list[int] | None = None) -> int | None:
    """How many queued audits will start before this queued one (None when it is not queued), in the
    dispatcher's order (`queue`, else `queued_in_order()`). Every organization's count: they wait for the
    same workers."""
    if audit.status != Audit.Status.QUEUED:
        return None
    order = queued_in_order() if queue is None else queue
    return order.index(audit.pk) if audit.pk in order else len(order)


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


def audit_comparison(first: Audit, second: Audit) -> dict:
    """Two finished audits, the older first, of any model versions: each one's verdict, the findings that are
    new, resolved and kept (by code), key metrics and group accuracy side by side, and what was audited
    (model, release, input, probe set, seed) with the differences marked."""
    older, newer = sorted((first, second), key=lambda audit: (audit.created, audit.pk))
    before, after = audit_summary(older), audit_summary(newer)
    changes = finding_changes(before["findings"], after["findings"])
    severity_before = {f["code"]: f["severity"] for f in before["findings"]}
    kept = [f | {"severity_before": severity_before[f["code"]]} for f in changes["kept"]]
    return {"older": older, "newer": newer, "new": changes["new"], "resolved": changes["resolved"], "kept": kept,
            "metrics": metric_deltas(older.metrics, newer.metrics),
            "groups": group_accuracy_deltas(older.metrics, newer.metrics),
            "setup": setup_differences(older, newer)}


def setup_differences(older: Audit, newer: Audit) -> list[dict]:
    """What each audit was run on, row by row (label, before, after, differs): the model (model.json and the
    file), its release, the probe set, the reference and the seed."""
    rows = [(label, value(older), value(newer)) for label, value in (
        ("Model", lambda a: a.model_version.name),
        ("Version", lambda a: a.model_version.version),
        ("Release tag", lambda a: a.model_version.release_tag or "-"),
        ("sha256", lambda a: a.model_version.sha256),
        ("Format", lambda a: a.model_version.format),
        ("Classes", lambda a: ", ".join(map(str, a.model_version.meta.get("classes") or []))),
        ("Input size", lambda a: _input_value(a.model_version.meta, "size", " × ")),
        ("Input mean", lambda a: _input_value(a.model_version.meta, "mean", ", ")),
        ("Input std", lambda a: _input_value(a.model_version.meta, "std", ", ")),
        ("Probe set", lambda a: f"{a.probe_set.name} ({a.probe_set.images} images, {a.probe_set.sha256[:12]})"),
        ("Reference", lambda a: str(a.reference) if a.reference else "-"),
        ("Seed", lambda a: str(a.seed)),
    )]
    return [{"label": label, "before": old, "after": new, "differs": old != new} for label, old, new in rows]


def _input_value(meta: dict, key: str, separator: str) -> str:
    value = (meta.get("input") or {}).get(key)
    return separator.join(map(str, value)) if isinstance(value, list) else ("-" if value is None else str(value))
