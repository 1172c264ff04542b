"""The dispatcher: the one place audits are sent to the Celery workers.

A queued audit waits in the database until the dispatcher sends its task into a free slot: at most
`AUDIT_WORKER_SLOTS` audits at the workers at once (running, or sent and not yet started) and at most
its organization's limit (`Organization.max_running_audits`, else `AUDIT_ORG_CONCURRENCY`). The next
audits go in `selectors.dispatch_order`: release gates, then interactive audits, then scheduled
re-audits; within a priority each organization in turn; then the oldest. So 500 scheduled re-audits of
one organization never hold back another's release gate: it is the next audit sent.

The dispatcher runs when an audit is created, when one leaves the workers (done, failed, cancelled,
swept) and from the sweeper's beat task, the safety net (a message lost with the broker's data is sent
again). Dispatchers take turns (a PostgreSQL advisory lock) so that the slots are counted right, and
lock the rows they send (`select_for_update(skip_locked=True)`: a row a cancel or a worker holds is
left for the next turn), so that no audit is sent twice by two of them. Each message carries the
audit's dispatch number; a worker drops a message that is not the audit's latest. Nothing here
changes an audit's status.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from auditsvc.celery import app as celery_app

from .. import selectors
from ..models import Audit, Organization

log = logging.getLogger(__name__)
EXECUTE_AUDIT_TASK = "tasks.audits.execute_audit"
_DISPATCH_LOCK = 0x61756469   # the advisory lock's key ("audi")


def workers_configured() -> bool:
    """Audits go to Celery workers only with a broker; the web process never runs one itself."""
    return bool(settings.REDIS_URL)


def audit_task_id(audit_id: int) -> str:
    """Every message that runs one audit has this id: revoking it reaches them all."""
    return f"audit-{audit_id}"


def dispatch_on_commit() -> None:
    """Dispatch once the current transaction commits (at once outside one)."""
    transaction.on_commit(audits_dispatch)


def audits_dispatch() -> list[int]:
    """Send the next waiting audits to the workers, one per free slot, in the dispatch order; returns
    their ids. The messages leave once the rows are committed; a message the broker refuses returns its
    audit to the waiting ones (the next dispatch tries again)."""
    if not workers_configured():   # the audits wait for `manage.py run_queued_audits`
        return []
    with transaction.atomic():
        _take_turn()
        at_workers = selectors.audits_at_workers()
        chosen = _next_audits(selectors.audits_waiting_in_order(at_workers), at_workers)
        locked = set(Audit.objects.select_for_update(skip_locked=True)
                     .filter(pk__in=chosen, status=Audit.Status.QUEUED, dispatched__isnull=True)
                     .values_list("pk", flat=True))
        Audit.objects.filter(pk__in=locked).update(dispatched=timezone.now(), dispatches=F("dispatches") + 1)
        numbers = dict(Audit.objects.filter(pk__in=locked).values_list("pk", "dispatches"))
        messages = [(pk, numbers[pk]) for pk in chosen if pk in numbers]
        transaction.on_commit(lambda: _send(messages))
    return [pk for pk, _ in messages]


def _take_turn() -> None:
    """Wait for any other dispatcher to commit, so that the slots counted next are the real ones.
    SQLite (one machine) takes none: it has one writer at a time anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_DISPATCH_LOCK])


def _next_audits(waiting: list[selectors.Waiting], at_workers: Counter[int]) -> list[int]:
    """The first waiting audits, in order, that fit the free slots and their organization's limit."""
    slots = settings.AUDIT_WORKER_SLOTS
    free = slots - sum(at_workers.values()) if slots > 0 else math.inf
    limits = _organization_limits({audit.organization_id for audit in waiting})
    taken, chosen = Counter(at_workers), []
    for audit in waiting:
        if len(chosen) >= free:
            break
        limit = limits[audit.organization_id]
        if limit and taken[audit.organization_id] >= limit:
            continue
        chosen.append(audit.pk)
        taken[audit.organization_id] += 1
    return chosen


def _organization_limits(organization_ids: set[int]) -> dict[int, int]:
    """Each organization's limit of audits at the workers (0: none)."""
    own = Organization.objects.filter(pk__in=organization_ids).values_list("pk", "max_running_audits")
    return {pk: settings.AUDIT_ORG_CONCURRENCY if limit is None else limit for pk, limit in own}


def _send(messages: list[tuple[int, int]]) -> None:
    for index, (audit_id, number) in enumerate(messages):
        try:
            celery_app.send_task(EXECUTE_AUDIT_TASK, args=[audit_id], kwargs={"dispatch": number},
                                 task_id=audit_task_id(audit_id))
        except Exception as exc:   # the broker is away: these wait for the next dispatch
            log.warning("could not send audits %s to the workers (%s: %s); they wait for the next dispatch",
                        [pk for pk, _ in messages[index:]], type(exc).__name__, exc)
            for unsent, unsent_number in messages[index:]:
                Audit.objects.filter(pk=unsent, status=Audit.Status.QUEUED, dispatches=unsent_number).update(
                    dispatched=None)
            return
