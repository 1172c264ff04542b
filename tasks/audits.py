"""Audit tasks. Long audits run on the `gpu` queue so GPU workers scale on their own."""

from __future__ import annotations

import socket

from celery.signals import worker_process_init
from django.conf import settings

from auditsvc.celery import app


@worker_process_init.connect
def start_a_waiting_sandbox(**kwargs) -> None:
    """A worker's first audit need not wait for a sandboxed child to import torch either."""
    from auditsvc.audits.services import sandbox_prepare_next

    sandbox_prepare_next()


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
