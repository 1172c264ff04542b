"""Scheduled re-audits: the beat task makes a new audit whose report says what changed; a worse
verdict e-mails the organization's owners."""

import pytest
from django.core import mail
from django_celery_beat.models import PeriodicTask

from auditsvc.audits import services
from auditsvc.audits.models import Audit
from tasks.audits import run_schedule

pytestmark = pytest.mark.django_db


def test_a_schedule_is_a_beat_task_and_each_run_reports_the_changes(users, stored, settings,
                                                                   django_capture_on_commit_callbacks):
    version, probe = stored
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                        probe_set=probe, every_hours=24)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.task == "tasks.audits.run_schedule" and task.interval.every == 24 and task.enabled
    with django_capture_on_commit_callbacks(execute=True):
        first_id = run_schedule.apply(args=[schedule.pk]).get()
    services.audit_run(first_id)  # the worker's part
    first = Audit.objects.get(pk=first_id)
    assert first.status == "done" and first.changes is None and first.schedule == schedule
    Audit.objects.filter(pk=first.pk).update(verdict="pass")  # pretend the last audit was clean
    first.findings.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        second_id = run_schedule.apply(args=[schedule.pk]).get()
    services.audit_run(second_id)
    second = Audit.objects.get(pk=second_id)
    assert second.previous_id == first.pk and second.status == "done"
    assert second.changes["previous_verdict"] == "pass"
    assert len(second.changes["new"]) == second.findings.count()
    html = second.report_html.read().decode()
    assert "Changes since the previous audit" in html and "RESOLVED" not in html
    assert second.verdict == "fail"  # an untrained model: accuracy at chance
    assert second.changes["worse"] and len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.com"] and "PASS -> FAIL" in mail.outbox[0].subject


def test_a_paused_schedule_makes_no_audit(users, stored):
    version, probe = stored
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                        probe_set=probe, every_hours=1)
    services.schedule_set_enabled(schedule, False)
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert run_schedule.apply(args=[schedule.pk]).get() is None
    services.schedule_delete(schedule)
    assert not PeriodicTask.objects.filter(name__startswith="re-audit schedule").exists()
