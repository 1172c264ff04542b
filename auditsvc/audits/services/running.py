"""An audit run in a sandboxed child: its inputs copied in from storage, its progress and steps written
to its row as they come, the report files handed back. Nothing here changes an audit's status
(audits.py does); a run whose audit was cancelled (or swept back to the queue) meanwhile stops.

The stored model.json goes to the sandbox as a checked `ModelMeta`; the child loads each model once,
for the whole audit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from auditsvc.battery import ModelMeta
from auditsvc.sandbox import AuditOutcome, SandboxUnavailable, warm

from .. import selectors
from ..models import Audit
from .files import copy_stored
from .steps import profile_sections, steps_reported

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0


class AuditStopped(Exception):
    """This run no longer owns its audit (it was cancelled, or swept back to the queue): stop, store nothing."""


def run_in_sandbox(audit: Audit, out_dir: Path, previous: dict | None) -> AuditOutcome:
    """The audit's report files in `out_dir`; BadInput, SandboxError or SandboxUnavailable when it could not
    run, AuditStopped when it was cancelled meanwhile (the sandboxed child is then killed)."""
    options = {"seed": audit.seed, "device": settings.AUDIT_DEVICE, "sections": profile_sections(audit.profile)}
    with warm.take(settings.AUDIT_DEVICE) as sandbox:
        _give_inputs(sandbox, audit)
        writer = ProgressWriter(audit)
        return sandbox.run(out_dir, options, previous=previous, progress=writer.progress, steps=writer.step,
                           cover=cover_fields(audit))


def check_still_running(audit: Audit) -> None:
    """AuditStopped unless this run still owns the audit (call inside a transaction: the row stays locked)."""
    if not _this_run(audit).select_for_update().exists():
        raise AuditStopped(f"audit {audit.pk} is no longer running here")


def _this_run(audit: Audit):
    return Audit.objects.filter(pk=audit.pk, status=Audit.Status.RUNNING, attempts=audit.attempts)


def cover_fields(audit: Audit) -> dict[str, str]:
    """Who asked for which audit of which release: the report's cover prints these."""
    return {"audit": str(audit.pk), "organization": audit.organization.name,
            "requester": selectors.requester_name(audit), "release_tag": audit.model_version.release_tag,
            "schedule": selectors.schedule_label(audit)}


def sandbox_prepare_next() -> None:
    """A process that runs audits (a worker, run_queued_audits) keeps a sandboxed child ready, torch
    imported, for its next one; each child serves one audit only."""
    if settings.AUDIT_WARM_SANDBOX:
        try:
            warm.prepare(settings.AUDIT_DEVICE)
        except SandboxUnavailable as exc:  # the next audit fails with this reason
            log.warning("%s", exc)


def _give_inputs(sandbox, audit: Audit) -> None:
    for role, version in (("model", audit.model_version), ("reference", audit.reference)):
        if version is not None:
            path = copy_stored(version.file, sandbox.input_path(role, Path(version.file.name).name))
            sandbox.add_model(path, ModelMeta.from_dict(version.meta), role=role)
    probe = copy_stored(audit.probe_set.file, sandbox.input_path("dataset", "probe.zip"))
    sandbox.add_dataset(probe, label=audit.probe_set.name)


class ProgressWriter:
    """Progress, stage and steps to the audit's row (its heartbeat): at once when the stage or a step's
    status changes, otherwise at most every HEARTBEAT_SECONDS. Only while this run owns the row: once the
    audit was cancelled or swept, the next write raises AuditStopped, which stops the sandboxed child."""

    def __init__(self, audit: Audit):
        self.audit = audit
        self.steps = [dict(step) for step in audit.steps]   # as the run started: the set-up running
        self.fraction, self.stage, self.written = audit.progress, audit.stage, 0.0

    def progress(self, fraction: float, stage: str) -> None:
        changed = stage[:200] != self.stage
        self.fraction, self.stage = min(fraction, 0.99), stage[:200]   # 1.0 and "done" come with DONE only
        self._write(at_once=changed)

    def step(self, name: str, status: str, fraction: float) -> None:
        changed = steps_reported(self.steps, name, status, fraction, timezone.now())
        self._write(at_once=changed)

    def _write(self, at_once: bool) -> None:
        now = time.monotonic()
        if not at_once and now - self.written < HEARTBEAT_SECONDS:
            return
        self.written = now
        if not _this_run(self.audit).update(progress=self.fraction, stage=self.stage, steps=self.steps,
                                            heartbeat=timezone.now()):
            raise AuditStopped(f"audit {self.audit.pk} is no longer running here")
