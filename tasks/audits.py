"""Audit tasks. Long audits run on the `gpu` queue so GPU workers scale on their own."""

from __future__ import annotations

import logging
import socket

from celery.signals import worker_process_init
from django.conf import settings

from auditsvc.celery import app

log = logging.getLogger(__name__)


@worker_process_init.connect
def start_a_waiting_sandbox(**kwargs) -> None:
    """A worker process keeps a sandboxed child ready (torch imported) for its next audit."""
    if not settings.AUDIT_WARM_SANDBOX:
        return
    from auditsvc.sandbox import SandboxUnavailable, warm

    try:
        warm.prepare(settings.AUDIT_DEVICE)
    except SandboxUnavailable as exc:  # the audit itself will fail with this reason
        log.warning("%s", exc)


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="gpu",
          soft_time_limit=settings.AUDIT_SOFT_TIME_LIMIT, time_limit=settings.AUDIT_TIME_LIMIT)
def run_audit(self, audit_id: int) -> None:
    from auditsvc.audits.services import audit_run

    try:
        audit_run(audit_id, worker=self.request.hostname or socket.gethostname())
    finally:
        start_a_waiting_sandbox()


@app.task
def run_schedule(schedule_id: int) -> int | None:
    from auditsvc.audits.services import schedule_run

    audit = schedule_run(schedule_id)
    return audit.pk if audit else None


@app.task
def sweep_stale_audits() -> list[int]:
    from auditsvc.audits.services import audits_sweep

    return audits_sweep()
