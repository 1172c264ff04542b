"""Schedules: a beat task per schedule, for objects of one organization; pausing and deleting reach it."""

import json

import pytest
from django.core.exceptions import ValidationError
from django_celery_beat.models import PeriodicTask

from auditsvc.audits import services
from auditsvc.audits.models import ProbeSet, Schedule

pytestmark = pytest.mark.django_db


def test_a_schedule_is_a_periodic_task_of_its_interval(users, stored):
    version, probe = stored
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                        probe_set=probe, every_hours=6)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (task.task, json.loads(task.args), task.enabled) == ("tasks.audits.run_schedule", [schedule.pk], True)
    assert (task.interval.every, task.interval.period) == (6, "hours")
    services.schedule_set_enabled(schedule, False)
    task.refresh_from_db()
    assert not task.enabled and not Schedule.objects.get(pk=schedule.pk).enabled


def test_a_schedule_is_refused_more_often_than_hourly_or_across_organizations(users, stored):
    version, probe = stored
    foreign = ProbeSet.objects.create(organization=users["globex"], name="x", file="x.zip", sha256="0" * 64,
                                      images=1, classes=["cat", "dog"])
    with pytest.raises(ValidationError) as caught:
        services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                 probe_set=probe, every_hours=0)
    assert "once an hour" in caught.value.message_dict["every_hours"][0]
    with pytest.raises(ValidationError, match="same organization"):
        services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                 probe_set=foreign, every_hours=24)
    assert Schedule.objects.count() == 0 and PeriodicTask.objects.count() == 0


def test_a_schedule_refuses_a_model_as_its_own_reference(users, stored):
    version, probe = stored
    with pytest.raises(ValidationError) as caught:
        services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                 probe_set=probe, every_hours=24, reference=version)
    assert "own reference" in caught.value.message_dict["reference"][0]
    assert Schedule.objects.count() == 0


def test_a_schedules_audits_run_its_profile(users, stored):
    version, probe = stored
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                        probe_set=probe, every_hours=6, profile="quick")
    audit = services.audit_create_for_schedule(schedule.pk)
    assert (audit.profile, audit.schedule) == ("quick", schedule)
    with pytest.raises(ValidationError, match="profile must be one of full, quick"):
        services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                 probe_set=probe, every_hours=6, profile="everything")
