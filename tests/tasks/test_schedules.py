"""Scheduled re-audits: beat sends `tasks.audits.run_schedule` every interval; each tick makes a queued
audit of the schedule's model version and probe set and sends it to a worker; each report says what
changed, and a worse verdict e-mails the organization's owners. A paused or deleted schedule makes none."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from auditsvc.audits import services
from auditsvc.audits.models import Audit, Schedule
from auditsvc.celery import app as celery_app
from tasks.audits import run_schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def schedule(users, stored):
    version, probe = stored
    return services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                    probe_set=probe, every_hours=24)


def beat_entries() -> dict:
    """What celery beat's database scheduler would run, by name (it reads the enabled periodic tasks)."""
    return DatabaseScheduler(app=celery_app, lazy=True).all_as_schedule()


def tick(schedule_id: int, django_capture_on_commit_callbacks):
    """One beat tick, run as a worker runs it, its transaction committed."""
    with django_capture_on_commit_callbacks(execute=True):
        return run_schedule.apply(args=[schedule_id]).get()


def test_beat_sends_the_schedules_task_once_its_interval_has_passed(schedule):
    entry = beat_entries()[f"re-audit schedule {schedule.pk}"]
    assert (entry.task, entry.args) == ("tasks.audits.run_schedule", [schedule.pk])
    assert entry.task in celery_app.tasks
    due, wait = entry.schedule.is_due(timezone.now() - timedelta(hours=23))
    assert not due and 3500 < wait <= 3600
    due, _ = entry.schedule.is_due(timezone.now() - timedelta(hours=24, minutes=1))
    assert due
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert not entry.is_due()[0]   # just made: the first run is an interval away
    task.last_run_at = timezone.now() - timedelta(hours=25)
    task.save()
    assert beat_entries()[task.name].is_due()[0]


def test_a_tick_queues_an_audit_of_the_schedule_and_sends_it_to_a_worker(users, stored, schedule, sent_tasks,
                                                                         settings, django_capture_on_commit_callbacks):
    version, probe = stored
    settings.AUDIT_WORKER_SLOTS = 2
    audit_id = tick(schedule.pk, django_capture_on_commit_callbacks)
    audit = Audit.objects.get(pk=audit_id)
    assert (audit.organization, audit.model_version, audit.probe_set, audit.reference, audit.schedule) == (
        users["acme"], version, probe, None, schedule)
    assert (audit.status, audit.requested_by, audit.seed, audit.previous, audit.priority) == (
        "queued", users["alice"], 0, None, "scheduled")
    assert sent_tasks == [("tasks.audits.execute_audit", [audit_id])]
    assert tick(schedule.pk, django_capture_on_commit_callbacks) != audit_id   # each tick makes a new audit
    assert Audit.objects.filter(schedule=schedule).count() == 2 and len(sent_tasks) == 2


def test_each_run_reports_the_changes_and_a_worse_verdict_is_mailed(users, schedule, settings,
                                                                   django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    first_id = tick(schedule.pk, django_capture_on_commit_callbacks)
    services.audit_execute(first_id)  # the worker's part
    first = Audit.objects.get(pk=first_id)
    assert first.status == "done" and first.changes is None and first.schedule == schedule
    Audit.objects.filter(pk=first.pk).update(verdict="pass")  # pretend the last audit was clean
    first.findings.all().delete()
    second_id = tick(schedule.pk, django_capture_on_commit_callbacks)
    services.audit_execute(second_id)
    second = Audit.objects.get(pk=second_id)
    assert second.previous_id == first.pk and second.status == "done"
    assert second.changes["previous_verdict"] == "pass" and second.changes["resolved"] == []
    assert second.changes["new"] == [f"{f.title} ({f.code})" for f in second.findings.all()]
    html = second.report_html.read().decode()
    assert "Changes since the previous audit" in html and "RESOLVED" not in html
    assert second.verdict == "fail"  # an untrained model: accuracy at chance
    assert second.changes["worse"] and len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"] and "PASS -> FAIL" in mail.outbox[0].subject


def test_a_paused_schedule_makes_no_audit_until_resumed(schedule, sent_tasks, django_capture_on_commit_callbacks):
    services.schedule_set_enabled(schedule, False)
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert f"re-audit schedule {schedule.pk}" not in beat_entries()
    assert tick(schedule.pk, django_capture_on_commit_callbacks) is None   # a tick sent before the pause
    assert Audit.objects.count() == 0 and sent_tasks == []
    services.schedule_set_enabled(schedule, True)
    assert f"re-audit schedule {schedule.pk}" in beat_entries()
    audit_id = tick(schedule.pk, django_capture_on_commit_callbacks)
    assert Audit.objects.get().pk == audit_id and sent_tasks == [("tasks.audits.execute_audit", [audit_id])]


def test_a_deleted_schedule_leaves_no_beat_task(schedule, sent_tasks, django_capture_on_commit_callbacks):
    task_id = schedule.periodic_task_id
    services.schedule_delete(schedule)
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert not PeriodicTask.objects.filter(pk=task_id).exists() and beat_entries() == {}
    assert tick(schedule.pk, django_capture_on_commit_callbacks) is None
    assert Audit.objects.count() == 0 and sent_tasks == []
