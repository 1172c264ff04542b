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
    """The first audit of a worker process need not wait for a sandboxed child to import torch."""
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

    audit_run(audit_id, worker=self.request.hostname or socket.gethostname())


@app.task
def run_schedule(schedule_id: int) -> int | None:
    from auditsvc.audits.services import schedule_run

    audit = schedule_run(schedule_id)
    return audit.pk if audit else None


@app.task
def sweep_stale_audits() -> list[int]:
    from auditsvc.audits.services import audits_sweep

    return audits_sweep()
