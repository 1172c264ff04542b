"""An audit's life: created (from stored objects, or from one request's uploads), queued for a worker,
started, executed in a sandbox, finished or failed, swept when its worker went silent, or cancelled.

Its status changes in one place (`_set_status`, through `audit_transition`, `audit_claim_next`,
`audit_fail` and `audit_cancel`), along QUEUED -> RUNNING -> DONE | FAILED (RUNNING -> QUEUED when
swept), and QUEUED | RUNNING -> CANCELLED; DONE, FAILED and CANCELLED are final. The dispatcher
(dispatching.py) sends queued audits to the workers, by task name, once the transaction commits: when
one is created and whenever one ends (the task's id names the audit, so that a cancel can revoke it);
nothing here imports the tasks.
"""

from __future__ import annotations

import logging
import traceback
import unicodedata
from contextlib import contextmanager
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from auditsvc.battery import BadInput
from auditsvc.celery import app as celery_app
from auditsvc.reports.changes import changes_since
from auditsvc.reports.jsonable import to_jsonable
from auditsvc.sandbox import SandboxError, SandboxUnavailable

from .. import selectors
from ..models import Audit, AuditFinding, ModelVersion, Organization, ProbeSet, Schedule
from .columns import one_line
from .dispatching import audit_task_id, dispatch_on_commit, workers_configured
from .files import scratch, stored_unless_failed
from .notifications import notify_worse_verdict
from .running import AuditStopped, check_still_running, run_in_sandbox, sandbox_prepare_next
from .steps import planned_steps, started_steps, steps_closed
from .uploads import model_version_from_upload, probe_set_create

log = logging.getLogger(__name__)
NO_WORKER = ("waiting: no worker is configured (set REDIS_URL and start a worker, "
             "or run `python manage.py run_queued_audits`)")
_NEXT_STATUS = {
    Audit.Status.QUEUED: {Audit.Status.RUNNING, Audit.Status.FAILED, Audit.Status.CANCELLED},
    Audit.Status.RUNNING: {Audit.Status.RUNNING, Audit.Status.QUEUED, Audit.Status.DONE, Audit.Status.FAILED,
                           Audit.Status.CANCELLED},
    Audit.Status.DONE: set(),
    Audit.Status.FAILED: set(),
    Audit.Status.CANCELLED: set(),
}
_FINAL = (Audit.Status.DONE, Audit.Status.FAILED, Audit.Status.CANCELLED)


# --- creating ----------------------------------------------------------------------------------

def audit_create(*, organization: Organization, user, model_version: ModelVersion, probe_set: ProbeSet,
                 reference: ModelVersion | None = None, seed: int = 0, schedule: Schedule | None = None,
                 profile: str = Audit.Profile.FULL, priority: str = Audit.Priority.INTERACTIVE) -> Audit:
    """A queued audit of stored objects; the dispatcher is asked for a worker once the transaction commits."""
    check_one_organization(organization, (model_version, probe_set, reference), "an audit")
    check_reference(model_version, reference)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= Audit.MAX_SEED:
        raise ValidationError({"seed": f"The seed must be between 0 and {Audit.MAX_SEED}."})
    check_profile(profile)
    _check_priority(priority)
    _check_classes(model_version, probe_set)
    previous = (Audit.objects.filter(model_version=model_version, probe_set=probe_set, status=Audit.Status.DONE)
                .order_by("-finished").first())
    audit = Audit.objects.create(organization=organization, model_version=model_version, probe_set=probe_set,
                                 reference=reference, seed=seed, schedule=schedule, previous=previous,
                                 requested_by=user, stage="" if workers_configured() else NO_WORKER,
                                 profile=profile, priority=priority, steps=planned_steps(profile))
    dispatch_on_commit()
    return audit


def audit_create_from_upload(**request) -> Audit:
    """A new audit from a pipeline's one request, as `audit_get_or_create_from_upload` reads it."""
    return _audit_from_upload(reuse_identical=False, **request)[0]


def audit_get_or_create_from_upload(**request) -> tuple[Audit, bool]:
    """A pipeline's one request (the API): the queued or running audit of the same inputs when there is one
    (`selectors.audit_find_identical`; nothing is stored then, and a queued one takes the request's priority
    when that is higher), else a new one; and whether it is new."""
    return _audit_from_upload(reuse_identical=True, **request)


def _audit_from_upload(*, reuse_identical: bool, organization: Organization, user,
                       model_version: ModelVersion | None = None, model=None, meta=None, release_tag: str = "",
                       reference_version: ModelVersion | None = None, reference=None, reference_meta=None,
                       probe_set: ProbeSet | None = None, dataset=None, dataset_name: str = "",
                       seed: int = 0, profile: str = Audit.Profile.FULL,
                       priority: str = Audit.Priority.INTERACTIVE) -> tuple[Audit, bool]:
    """The request's field names: stored objects or uploads for the model (`model_version` or `model` +
    `meta`), the reference (`reference_version` or `reference` + `reference_meta`) and the probe set
    (`probe_set` or `dataset`), then the audit. All or nothing: if any step fails, the rows roll back and
    every file this call stored is deleted. The same model name, version and bytes reuse the registered
    version (so an identical audit can be found for a model sent again)."""
    if model_version is None and model is None:
        raise ValidationError({"model": "Upload the model file as 'model' or give 'model_version'."})
    if probe_set is None and dataset is None:
        raise ValidationError({"dataset": "Upload the probe set zip as 'dataset' or give 'probe_set'."})
    stored: list = []
    try:
        with transaction.atomic():
            if model_version is None:
                with _fields_renamed(file="model"):
                    model_version = model_version_from_upload(organization=organization, user=user, file=model,
                                                              meta=meta, release_tag=release_tag, stored=stored)
            if reference_version is None and reference is not None:
                with _fields_renamed(file="reference", meta="reference_meta"):
                    reference_version = model_version_from_upload(organization=organization, user=user,
                                                                  file=reference, meta=reference_meta, stored=stored)
            if probe_set is None:
                with _fields_renamed(file="dataset", name="dataset_name"):
                    probe_set = probe_set_create(organization=organization, user=user, name=dataset_name,
                                                 file=dataset)
                stored.append(probe_set)
            identical = reuse_identical and selectors.audit_find_identical(
                organization=organization, model_version=model_version, probe_set=probe_set,
                reference=reference_version, seed=seed, profile=profile)
            if identical:
                return audit_raise_priority(identical, priority), False
            return audit_create(organization=organization, user=user, model_version=model_version,
                                probe_set=probe_set, reference=reference_version, seed=seed,
                                profile=profile, priority=priority), True
    except BaseException:
        for instance in stored:
            instance.file.delete(save=False)
        raise


def check_one_organization(organization: Organization, items, user_of: str) -> None:
    """Everything `user_of` (an audit, a schedule) uses belongs to `organization`."""
    if any(item is not None and item.organization_id != organization.id for item in items):
        raise ValidationError(f"Everything {user_of} uses must belong to the same organization.")


def check_profile(profile: str) -> None:
    if profile not in Audit.Profile.values:
        raise ValidationError({"profile": f"The profile must be one of {', '.join(Audit.Profile.values)}."})


def _check_priority(priority: str) -> None:
    if priority not in Audit.Priority.values:
        raise ValidationError({"priority": f"The priority must be one of {', '.join(Audit.Priority.values)}."})


def check_reference(model_version: ModelVersion, reference: ModelVersion | None) -> None:
    if reference is not None and reference.pk == model_version.pk:
        raise ValidationError({"reference": f"{model_version} cannot be its own reference: choose another model "
                                            "version (e.g. the one in production) or leave the reference empty."})


def _check_classes(model_version: ModelVersion, probe_set: ProbeSet) -> None:
    """Probe sets name their classes in NFC (a zip made on a Mac decomposes accents); compare them so."""
    unknown = sorted({unicodedata.normalize("NFC", c) for c in probe_set.classes}
                     - {unicodedata.normalize("NFC", c) for c in model_version.meta["classes"]})
    if unknown:
        raise ValidationError({"probe_set": f"Class folder(s) {', '.join(map(repr, unknown[:5]))} are not among "
                                            f"the classes of {model_version}."})


@contextmanager
def _fields_renamed(**names):
    """The upload services name their own fields ('file', 'name'); the API's request names them otherwise."""
    try:
        yield
    except ValidationError as error:
        if not hasattr(error, "error_dict"):
            raise
        raise ValidationError({names.get(field, field): errors for field, errors in error.error_dict.items()}) from None


# --- queueing ----------------------------------------------------------------------------------

def audit_raise_priority(audit: Audit, priority: str) -> Audit:
    """A queued audit asked for again with a higher priority (a release gate wants a queued re-audit) moves
    up to it; its place in the queue follows (`selectors.dispatch_order`)."""
    _check_priority(priority)
    rank = selectors.PRIORITY_RANK
    if audit.status == Audit.Status.QUEUED and rank[priority] < rank[audit.priority]:
        if Audit.objects.filter(pk=audit.pk, status=Audit.Status.QUEUED).update(priority=priority):
            audit.priority = priority
    return audit


def audit_claim_next(worker: str) -> Audit | None:
    """The next queued audit in the dispatcher's order, marked running for `worker` so that no other runner
    takes it (the conditional update is the claim, on SQLite as on PostgreSQL); None when the queue is empty."""
    for audit_id in selectors.queued_in_order()[:50]:
        audit = Audit.objects.filter(pk=audit_id, status=Audit.Status.QUEUED).first()
        if audit and _set_status(audit, Audit.Status.RUNNING, {"worker": worker[:200], "stage": "starting"},
                                 claim=True):
            return audit
    return None


def audits_sweep(now=None) -> list[int]:
    """Audits whose worker went silent: queue them again (the task is idempotent) or, after the
    last attempt, mark them failed with the reason. Nothing stays 'running' forever. Audits sent to
    the workers that none started meanwhile (their message was lost with the broker's data) wait for
    the dispatcher again, in their place; then the dispatcher runs (the beat's safety net)."""
    now = now or timezone.now()
    stale_since = now - timedelta(seconds=settings.AUDIT_STALE_AFTER)
    stale = Audit.objects.filter(status=Audit.Status.RUNNING, heartbeat__lt=stale_since)
    handled = []
    for audit in stale:
        if audit.attempts >= settings.AUDIT_MAX_ATTEMPTS:
            audit_fail(audit, f"The worker running this audit stopped responding ({audit.worker or 'unknown'}); "
                              f"gave up after {audit.attempts} attempts.")
        else:
            audit_transition(audit, Audit.Status.QUEUED, stage="queued again: the worker stopped responding",
                             progress=0.0, steps=planned_steps(audit.profile), dispatched=None)
        handled.append(audit.pk)
    Audit.objects.filter(status=Audit.Status.QUEUED, dispatched__lt=stale_since).update(dispatched=None)
    dispatch_on_commit()
    return handled


# --- status ------------------------------------------------------------------------------------

def audit_transition(audit: Audit, status: str, **fields) -> Audit:
    """Change the audit's status; `fields` are saved with it. ValueError for a change the life cycle forbids."""
    _set_status(audit, status, fields)
    return audit


def audit_fail(audit: Audit, reason: str) -> Audit:
    """FAILED with the reason, unless its status changed since it was read (a cancel came first)."""
    _set_status(audit, Audit.Status.FAILED, {"message": one_line(reason)[:1000]}, claim=True)
    return audit


def audit_cancel(audit: Audit, user=None) -> Audit:
    """Stop a queued or running audit for good. Once this commits its task is revoked, and terminated
    if a worker runs it (the worker process stops, with it the sandboxed child, and a new one takes the
    next audit); without Celery the run stops at its next progress report. Nothing of a cancelled run is
    stored. ValidationError for an audit that has finished."""
    who = (user.get_full_name() or user.get_username()) if user else "a reviewer"
    fields = {"stage": "cancelled", "message": f"Cancelled by {who}."[:1000]}
    while not audit.is_finished:
        if _set_status(audit, Audit.Status.CANCELLED, fields, claim=True):
            transaction.on_commit(lambda: _revoke(audit.pk))
            return audit
        audit.refresh_from_db(fields=["status", "dispatches"])   # a worker or the dispatcher moved it on meanwhile
    raise ValidationError(f"Audit {audit.pk} has already finished ({audit.get_status_display().lower()}); "
                          "only a queued or running audit can be cancelled.", code="finished")


def _revoke(audit_id: int) -> None:
    if not workers_configured():
        return
    try:
        celery_app.control.revoke(audit_task_id(audit_id), terminate=True)
    except Exception:   # the broker is away: a running audit still stops at its next progress report
        log.warning("could not revoke the task of cancelled audit %s:\n%s", audit_id, traceback.format_exc())


def _set_status(audit: Audit, status: str, fields: dict, claim: bool = False) -> bool:
    """The one place an audit's status is written (with a heartbeat; when it ends, `finished` and its steps
    closed, and the dispatcher fills the slot it leaves). With `claim`, only if no one changed it (its
    status, or its dispatch number: it was sent again) since it was read; returns whether it was written."""
    if status not in _NEXT_STATUS[audit.status]:
        raise ValueError(f"audit {audit.pk}: {audit.status} -> {status} is not allowed")
    now = timezone.now()
    fields = {"status": status, "heartbeat": now, **fields}
    if status in _FINAL:
        fields.setdefault("finished", now)
    if status in (Audit.Status.FAILED, Audit.Status.CANCELLED) and "steps" not in fields:
        current = Audit.objects.filter(pk=audit.pk).values_list("steps", flat=True).first()
        fields["steps"] = steps_closed(current if current is not None else audit.steps, status, now)
    rows = Audit.objects.filter(pk=audit.pk)
    if claim:
        rows = rows.filter(status=audit.status, dispatches=audit.dispatches)
    if not rows.update(**fields):
        return False
    for key, value in fields.items():
        setattr(audit, key, value)
    if status in _FINAL:
        dispatch_on_commit()
    return True


# --- executing ---------------------------------------------------------------------------------

def audit_execute(audit_id: int, worker: str = "", dispatch: int | None = None) -> None:
    """Run one audit to the end (the body of the task `tasks.audits.execute_audit`, `dispatch` its message's
    number, and of run_queued_audits). Safe to call again for the same audit: a finished audit is left
    alone, a redelivered message starts it over, a message the dispatcher has since replaced is dropped."""
    audit = Audit.objects.select_related("model_version", "probe_set", "reference", "previous").get(pk=audit_id)
    if audit.is_finished:
        return
    if dispatch is not None and dispatch != audit.dispatches:
        log.info("audit %s: message %s dropped, the audit was sent again (message %s)", audit.pk, dispatch,
                 audit.dispatches)
        return
    if audit.attempts >= settings.AUDIT_MAX_ATTEMPTS:
        audit_fail(audit, f"The audit was interrupted {audit.attempts} times (worker lost or restarted); "
                          "giving up. Start it again.")
        return
    now = timezone.now()
    if not _set_status(audit, Audit.Status.RUNNING, {
            "attempts": audit.attempts + 1, "started": now, "worker": worker[:200], "progress": 0.0,
            "stage": "starting", "message": "", "steps": started_steps(audit.profile, now)}, claim=True):
        return   # cancelled or sent again since it was read
    with _next_sandbox_prepared():
        try:
            changes = _run_and_store(audit)
        except AuditStopped:
            log.info("audit %s stopped: it was cancelled or queued again meanwhile", audit.pk)
            return
        except (BadInput, SandboxError, SandboxUnavailable) as exc:
            audit_fail(audit, str(exc))
            return
        except (SoftTimeLimitExceeded, TimeLimitExceeded):
            audit_fail(audit, f"The audit took longer than the {settings.AUDIT_SOFT_TIME_LIMIT // 60} minute limit.")
            raise
        except Exception as exc:
            log.error("audit %s failed:\n%s", audit.pk, traceback.format_exc())
            audit_fail(audit, f"Internal error while auditing: {type(exc).__name__}: {exc}")
            raise
    if changes and changes["worse"]:
        notify_worse_verdict(audit)


@contextmanager
def _next_sandbox_prepared():
    """After an audit, however it ended, the next sandboxed child is started; not when the process is being
    stopped (SystemExit: a cancel terminates the task's worker process, which must not start another)."""
    try:
        yield
    except Exception:
        sandbox_prepare_next()
        raise
    sandbox_prepare_next()


def _run_and_store(audit: Audit) -> dict | None:
    """The sandboxed run and its results stored; returns what changed since the previous audit."""
    previous = selectors.audit_summary(audit.previous) if audit.previous else None
    with scratch() as folder:
        outcome = run_in_sandbox(audit, folder / "out", previous)
        Audit.objects.filter(pk=audit.pk).update(runs_completed=F("runs_completed") + 1)
        changes = changes_since(previous, outcome.findings_json) if previous else None
        _finish(audit, outcome, changes)
    return changes


def _finish(audit: Audit, outcome, changes: dict | None) -> None:
    """The report files, the findings and the DONE status, together (the files are stored first, outside the
    row's lock, and deleted again if the audit does not end DONE)."""
    report = to_jsonable(outcome.findings_json)
    results = {"report_html": outcome.html, "report_pdf": outcome.pdf, "findings_json": outcome.findings}
    with stored_unless_failed(audit, results), transaction.atomic():
        check_still_running(audit)   # and locked until DONE: a cancel waits, then finds it finished
        audit.findings.all().delete()
        AuditFinding.objects.bulk_create([_finding(audit, f) for f in report["findings"]])
        audit_transition(audit, Audit.Status.DONE, progress=1.0, stage="done", verdict=report["verdict"],
                         metrics=report["metrics"], changes=to_jsonable(changes), report_html=audit.report_html.name,
                         report_pdf=audit.report_pdf.name, findings_json=audit.findings_json.name)


def _finding(audit: Audit, finding: dict) -> AuditFinding:
    return AuditFinding(audit=audit, code=finding["code"][:200], category=finding["category"][:20],
                        severity=finding["severity"], title=finding["title"][:500], summary=finding["summary"],
                        evidence=finding.get("evidence", {}))
