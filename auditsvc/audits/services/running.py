"""An audit run in a sandboxed child: its inputs copied in from storage, its progress written to its
row as it comes, the report files handed back. Nothing here changes an audit's status (audits.py does).

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

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0


def run_in_sandbox(audit: Audit, out_dir: Path, previous: dict | None) -> AuditOutcome:
    """The audit's report files in `out_dir`; BadInput, SandboxError or SandboxUnavailable when it could not run."""
    with warm.take(settings.AUDIT_DEVICE) as sandbox:
        _give_inputs(sandbox, audit)
        options = {"seed": audit.seed, "device": settings.AUDIT_DEVICE, "sections": settings.AUDIT_SECTIONS}
        return sandbox.run(out_dir, options, previous=previous, progress=_progress_writer(audit),
                           cover=cover_fields(audit))


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


def _progress_writer(audit: Audit):
    """Progress and stage to the audit's row (its heartbeat), at most every HEARTBEAT_SECONDS per stage."""
    last = {"time": 0.0, "stage": None}

    def report(fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage == last["stage"] and now - last["time"] < HEARTBEAT_SECONDS:
            return
        last.update(time=now, stage=stage)
        Audit.objects.filter(pk=audit.pk).update(progress=min(fraction, 0.99), stage=stage[:200],
                                                 heartbeat=timezone.now())
    return report
