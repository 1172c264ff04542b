"""Re-audits on a timetable: each schedule is a django-celery-beat task that names
`tasks.audits.run_schedule` with the schedule's id."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import transaction

from ..models import Audit, ModelVersion, Organization, ProbeSet, Schedule
from .audits import audit_create, check_one_organization, check_profile, check_reference

RUN_SCHEDULE_TASK = "tasks.audits.run_schedule"


def schedule_create(*, organization: Organization, user, model_version: ModelVersion, probe_set: ProbeSet,
                    every_hours: int, reference: ModelVersion | None = None,
                    profile: str = Audit.Profile.FULL) -> Schedule:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if every_hours < 1:
        raise ValidationError({"every_hours": "Re-audit at most once an hour."})
    check_profile(profile)
    check_one_organization(organization, (model_version, probe_set, reference), "a schedule")
    check_reference(model_version, reference)
    with transaction.atomic():
        schedule = Schedule.objects.create(organization=organization, model_version=model_version,
                                           probe_set=probe_set, reference=reference, every_hours=every_hours,
                                           profile=profile, created_by=user)
        interval, _ = IntervalSchedule.objects.get_or_create(every=every_hours, period=IntervalSchedule.HOURS)
        schedule.periodic_task = PeriodicTask.objects.create(
            name=f"re-audit schedule {schedule.pk}", task=RUN_SCHEDULE_TASK, interval=interval,
            args=json.dumps([schedule.pk]))
        schedule.save(update_fields=["periodic_task"])
    return schedule


def schedule_set_enabled(schedule: Schedule, enabled: bool) -> Schedule:
    with transaction.atomic():
        schedule.enabled = enabled
        schedule.save(update_fields=["enabled"])
        if schedule.periodic_task:
            schedule.periodic_task.enabled = enabled
            schedule.periodic_task.save(update_fields=["enabled"])
    return schedule


def schedule_delete(schedule: Schedule) -> None:
    with transaction.atomic():
        if schedule.periodic_task:
            schedule.periodic_task.delete()
        schedule.delete()


def audit_create_for_schedule(schedule_id: int, priority: str = Audit.Priority.SCHEDULED) -> Audit | None:
    """A beat tick (or "run now" on the portal, an interactive one): a new audit of the schedule's model
    version on its probe set; None when the schedule is paused or gone."""
    schedule = Schedule.objects.select_related("organization", "model_version", "probe_set").filter(
        pk=schedule_id, enabled=True).first()
    if schedule is None:
        return None
    with transaction.atomic():
        return audit_create(organization=schedule.organization, user=schedule.created_by,
                            model_version=schedule.model_version, probe_set=schedule.probe_set,
                            reference=schedule.reference, schedule=schedule, profile=schedule.profile,
                            priority=priority)
