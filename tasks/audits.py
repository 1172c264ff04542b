"""Audit tasks: take ids, call a service, return. Services reach them by name (send_task), never by
import. Audits run on the `gpu` queue (CELERY_TASK_ROUTES) so GPU workers scale on their own."""

from __future__ import annotations

import socket

from celery.signals import worker_process_init
from django.conf import settings

from auditsvc.audits import services
from auditsvc.celery import app


@worker_process_init.connect
def start_a_waiting_sandbox(**kwargs) -> None:
    """A worker's first audit need not wait for a sandboxed child to import torch either."""
    services.sandbox_prepare_next()


@app.task(name="tasks.audits.execute_audit", bind=True, acks_late=True, reject_on_worker_lost=True,
          soft_time_limit=settings.AUDIT_SOFT_TIME_LIMIT, time_limit=settings.AUDIT_TIME_LIMIT)
def execute_audit(self, audit_id: int, dispatch: int = 0) -> None:
    """`dispatch`: the message's number, as the dispatcher sent it (0: a message from before it numbered them)."""
    services.audit_execute(audit_id, worker=self.request.hostname or socket.gethostname(), dispatch=dispatch)


@app.task(name="tasks.audits.run_schedule")
def run_schedule(schedule_id: int) -> int | None:
    """A schedule's beat tick (its PeriodicTask names this task): a new audit, queued."""
    audit = services.audit_create_for_schedule(schedule_id)
    return audit.pk if audit else None


@app.task(name="tasks.audits.sweep_stale_audits")
def sweep_stale_audits() -> list[int]:
    """Beat's safety net: silent audits queued again or failed, lost messages sent again, the dispatcher run."""
    return services.audits_sweep()
