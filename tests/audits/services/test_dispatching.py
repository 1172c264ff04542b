"""The dispatcher: queued audits go to the workers one per free slot, never more of one organization's
than its limit, in the order release gates, interactive audits, scheduled re-audits; within one, each
organization in turn; then the oldest. The queue position the API reports is that order. Two
dispatchers at once never send one audit twice; a message lost with the broker's data is sent again,
and the message it replaces is dropped by the worker."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from auditsvc.audits import selectors, services
from auditsvc.audits.models import Audit, ModelVersion, ProbeSet
from auditsvc.celery import app as celery_app

pytestmark = pytest.mark.django_db
RELEASE, INTERACTIVE, SCHEDULED = Audit.Priority.RELEASE, Audit.Priority.INTERACTIVE, Audit.Priority.SCHEDULED


@pytest.fixture
def inputs(users, stored):
    """A model version and a probe set in each organization (Globex's are rows only: nothing here runs them)."""
    version, probe = stored
    globex = users["globex"]
    return {"acme": (version, probe),
            "globex": (ModelVersion.objects.create(organization=globex, name="pets", version="1.0", meta=version.meta,
                                                   format=version.format, file="x.pt2", sha256="0" * 64),
                       ProbeSet.objects.create(organization=globex, name="probe", file="x.zip", sha256="0" * 64,
                                               images=12, classes=probe.classes))}


@pytest.fixture
def queue(users, inputs):
    """queue(organization, priority, count): that many queued audits in one INSERT, each a second younger."""
    start = timezone.now() - timedelta(hours=1)
    made = []

    def add(organization: str, priority: str = INTERACTIVE, count: int = 1) -> list[Audit]:
        version, probe = inputs[organization]
        rows = Audit.objects.bulk_create([Audit(organization=users[organization], model_version=version,
                                                probe_set=probe, priority=priority) for _ in range(count)])
        for row in rows:   # created is auto_now_add: set it after, in the order the rows were made
            row.created = start + timedelta(seconds=len(made))
            made.append(row)
        Audit.objects.bulk_update(rows, ["created"])
        return rows
    return add


@pytest.fixture
def sent(sent_tasks, monkeypatch):
    """The ids of the audits sent to the workers, in order, with each message's number recorded."""
    messages = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, kwargs=None, **options: messages.append(
        (args[0], kwargs["dispatch"])))
    return messages


@pytest.fixture
def dispatch(django_capture_on_commit_callbacks):
    """The dispatcher, its transaction committed (so that its messages leave)."""
    def run() -> list[int]:
        with django_capture_on_commit_callbacks(execute=True):
            return services.audits_dispatch()
    return run


def ids(audits) -> list[int]:
    return [audit.pk for audit in audits]


def finish(audit_id: int, capture) -> None:
    """The audit's worker ends it: its slot is free, the dispatcher sends the next once that commits."""
    audit = Audit.objects.get(pk=audit_id)
    with capture(execute=True):
        services.audit_transition(audit, Audit.Status.DONE, verdict="pass")


def test_a_release_audit_goes_before_another_organizations_500_scheduled_re_audits(
        users, inputs, queue, sent, dispatch, settings, django_capture_on_commit_callbacks):
    settings.AUDIT_WORKER_SLOTS, settings.AUDIT_ORG_CONCURRENCY = 2, 4
    scheduled = ids(queue("acme", SCHEDULED, 500))
    dispatch()
    assert [audit for audit, _ in sent] == scheduled[:2]   # two free slots: Acme's two oldest
    for audit in Audit.objects.filter(pk__in=scheduled[:2]):   # the workers take them
        services.audit_transition(audit, Audit.Status.RUNNING)
    version, probe = inputs["globex"]
    with django_capture_on_commit_callbacks(execute=True):   # Globex's release gate, as the API makes it
        release = services.audit_create(organization=users["globex"], user=users["bob"], model_version=version,
                                        probe_set=probe, priority=RELEASE)
    assert len(sent) == 2   # no slot is free: it waits, first in line
    assert selectors.audit_queue_position(release) == 0
    assert selectors.audit_queue_position(Audit.objects.get(pk=scheduled[2])) == 1
    finish(scheduled[0], django_capture_on_commit_callbacks)
    assert [audit for audit, _ in sent] == [*scheduled[:2], release.pk]
    finish(scheduled[1], django_capture_on_commit_callbacks)
    assert sent[-1][0] == scheduled[2]
    assert Audit.objects.filter(status=Audit.Status.QUEUED, dispatched__isnull=True).count() == 497


def test_an_organization_never_has_more_than_its_limit_at_the_workers(users, queue, sent, dispatch, settings):
    settings.AUDIT_WORKER_SLOTS, settings.AUDIT_ORG_CONCURRENCY = 0, 3   # no fleet limit: the organizations' only
    acme = ids(queue("acme", RELEASE, 5))
    globex = ids(queue("globex", SCHEDULED, 5))
    users["globex"].max_running_audits = 1   # its own limit, over the setting's
    users["globex"].save()
    assert dispatch() == acme[:3] + globex[:1]
    assert dispatch() == []   # all at their limit
    Audit.objects.filter(pk=acme[0]).update(status=Audit.Status.FAILED)
    assert dispatch() == [acme[3]]
    assert [audit for audit, _ in sent] == [*acme[:3], globex[0], acme[3]]


def test_priorities_go_first_then_each_organization_in_turn_then_the_oldest(queue, sent, dispatch, settings):
    settings.AUDIT_WORKER_SLOTS, settings.AUDIT_ORG_CONCURRENCY = 0, 0
    scheduled = ids(queue("globex", SCHEDULED, 2))
    acme = ids(queue("acme", INTERACTIVE, 3))
    globex = ids(queue("globex", INTERACTIVE, 2))
    releases = ids(queue("acme", RELEASE, 2))
    same_moment = queue("globex", RELEASE, 2)
    Audit.objects.filter(pk__in=ids(same_moment)).update(created=Audit.objects.get(pk=releases[1]).created)
    expected = [releases[0], same_moment[0].pk,   # each organization's first release gate: Acme's is older
                releases[1], same_moment[1].pk,   # their second ones, made at the same moment: by id
                acme[0], globex[0], acme[1], globex[1], acme[2],   # each in turn, the older first
                *scheduled]   # Globex's, though the oldest of all
    order = selectors.queued_in_order()
    assert order == expected
    assert [selectors.audit_queue_position(audit) for audit in Audit.objects.filter(pk__in=expected)] == [
        expected.index(audit.pk) for audit in Audit.objects.filter(pk__in=expected)]
    settings.AUDIT_WORKER_SLOTS = 1
    for _ in expected:   # one slot: each dispatch sends the next, as the queue positions said
        dispatch()
        Audit.objects.filter(pk=sent[-1][0]).update(status=Audit.Status.DONE)
    assert [audit for audit, _ in sent] == expected


def test_audits_at_the_workers_count_in_their_organizations_turn(queue, settings):
    settings.AUDIT_WORKER_SLOTS = 0
    acme = ids(queue("acme", INTERACTIVE, 3))
    globex = ids(queue("globex", INTERACTIVE, 2))
    Audit.objects.filter(pk=acme[0]).update(status=Audit.Status.RUNNING)
    assert selectors.queued_in_order() == [globex[0], acme[1], globex[1], acme[2]]


def test_the_command_runs_the_queue_in_the_dispatch_order(queue, settings):
    settings.REDIS_URL = ""
    scheduled = ids(queue("acme", SCHEDULED, 2))
    release = ids(queue("globex", RELEASE))
    claimed = [services.audit_claim_next("runner").pk for _ in range(3)]
    assert claimed == [*release, *scheduled]


def test_a_lost_message_is_sent_again_and_the_one_it_replaces_is_dropped(queue, sent, dispatch, settings, monkeypatch,
                                                                          django_capture_on_commit_callbacks):
    settings.AUDIT_WORKER_SLOTS = 1
    [audit], [waiting] = queue("acme"), queue("acme")
    dispatch()
    assert sent == [(audit.pk, 1)]
    later = timezone.now() + timedelta(seconds=settings.AUDIT_STALE_AFTER + 1)
    with django_capture_on_commit_callbacks(execute=True):
        services.audits_sweep(now=timezone.now())   # not yet stale: nothing is sent again
    assert sent == [(audit.pk, 1)]
    with django_capture_on_commit_callbacks(execute=True):
        services.audits_sweep(now=later)   # no worker took it: the broker lost it; sent again, still first
    assert sent == [(audit.pk, 1), (audit.pk, 2)]
    ran = []
    monkeypatch.setattr("auditsvc.audits.services.audits._run_and_store", lambda audit: ran.append(audit.pk))
    services.audit_execute(audit.pk, worker="w1", dispatch=1)   # the first message turns up after all
    audit.refresh_from_db()
    assert (audit.status, audit.attempts, ran) == ("queued", 0, [])
    services.audit_execute(audit.pk, worker="w1", dispatch=2)
    audit.refresh_from_db()
    assert (audit.status, audit.attempts, ran) == ("running", 1, [audit.pk])
    assert waiting.pk not in [pk for pk, _ in sent]


def test_an_audit_the_broker_refused_waits_for_the_next_dispatch(queue, dispatch, settings, sent_tasks, monkeypatch):
    settings.AUDIT_WORKER_SLOTS = 2
    first, second = queue("acme", count=2)

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    assert dispatch() == [first.pk, second.pk]
    assert Audit.objects.filter(dispatched__isnull=False).count() == 0   # back among the waiting
    assert selectors.audits_at_workers() == {}


def test_a_release_request_raises_an_identical_queued_audit(users, stored, settings):
    settings.REDIS_URL = ""
    version, probe = stored
    request = {"organization": users["acme"], "user": users["alice"], "model_version": version, "probe_set": probe}
    queued, _ = services.audit_get_or_create_from_upload(**request, priority=SCHEDULED)
    again, created = services.audit_get_or_create_from_upload(**request, priority=RELEASE)
    assert (again.pk, created, again.priority) == (queued.pk, False, RELEASE)
    assert Audit.objects.get(pk=queued.pk).priority == RELEASE
    services.audit_get_or_create_from_upload(**request, priority=SCHEDULED)
    assert Audit.objects.get(pk=queued.pk).priority == RELEASE   # never lowered


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_never_send_one_audit_twice(queue, sent, settings):
    """Real concurrency on PostgreSQL: two threads, two connections, each dispatching at the same moment."""
    assert connection.vendor == "postgresql"
    settings.AUDIT_ORG_CONCURRENCY = 0
    for slots, rounds in ((0, 4), (7, 4)):   # every audit at once; then seven slots, each filled once
        settings.AUDIT_WORKER_SLOTS = slots
        for _ in range(rounds):
            Audit.objects.all().delete()
            sent.clear()
            waiting = ids(queue("acme", count=12) + queue("globex", count=12))
            start = threading.Barrier(2)
            results = []

            def dispatch():
                start.wait()
                try:
                    results.append(services.audits_dispatch())
                finally:
                    connection.close()

            threads = [threading.Thread(target=dispatch) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            sent_ids = [audit for audit, _ in sent]
            assert len(sent_ids) == len(set(sent_ids)) == (slots or len(waiting))
            assert sorted(sent_ids) == sorted(results[0] + results[1])
            assert Audit.objects.filter(dispatches__gt=1).count() == 0


def test_organizations_with_as_many_audits_at_the_workers_take_turns():
    """The one sent an audit longest ago goes first, then each in the order they were served."""
    now = timezone.now()
    waiting = [selectors.Waiting(pk, organization, INTERACTIVE, now + timedelta(seconds=pk))
               for pk, organization in ((1, 10), (2, 20), (3, 10), (4, 20), (5, 30))]
    last_sent = {10: now - timedelta(minutes=1), 20: now - timedelta(minutes=5)}   # 30: never
    assert [a.pk for a in selectors.dispatch_order(waiting, {}, last_sent)] == [5, 2, 1, 4, 3]
    assert [a.pk for a in selectors.dispatch_order(waiting, {20: 1}, last_sent)] == [5, 1, 2, 3, 4]
