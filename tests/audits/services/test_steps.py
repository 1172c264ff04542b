"""Profiles and steps: the sections each profile runs (AUDITSVC_SECTIONS still restricts them), named as
the battery's registry names them; each step's state as the sandboxed child reports it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from auditsvc.audits.models import Audit
from auditsvc.audits.services import steps as steps_service
from auditsvc.audits.services.steps import (planned_steps, profile_sections, started_steps, step_reported,
                                             steps_closed, steps_reported)
from auditsvc.battery import BadInput, section_names


def test_the_quick_profile_names_sections_of_the_battery():
    quick = steps_service.PROFILE_SECTIONS[Audit.Profile.QUICK]
    assert set(quick) <= set(section_names()) and len(quick) == 4


def test_a_profile_is_restricted_by_auditsvc_sections(settings):
    settings.AUDIT_SECTIONS = None
    assert profile_sections("full") is None
    assert profile_sections("quick") == ["summary", "performance", "shortcuts", "looking"]
    settings.AUDIT_SECTIONS = ["performance", "saliency", "summary"]
    assert profile_sections("full") == ["performance", "saliency", "summary"]
    assert profile_sections("quick") == ["performance", "summary"]
    settings.AUDIT_SECTIONS = ["saliency"]
    with pytest.raises(BadInput, match="quick profile runs summary, performance, shortcuts, looking"):
        profile_sections("quick")


def test_the_planned_steps_are_the_set_up_the_sections_in_the_battery_order_then_the_report(settings):
    settings.AUDIT_SECTIONS = None
    full = planned_steps("full")
    assert [s["name"] for s in full] == ["setup", *section_names(), "report"]
    quick = planned_steps("quick")
    assert [(s["name"], s["title"]) for s in quick] == [
        ("setup", "Set up (sandbox, model, probe set)"), ("summary", "Model summary"), ("performance", "Performance"),
        ("shortcuts", "Shortcut probes"), ("looking", "Where the model looks"), ("report", "Report files")]
    assert {(s["status"], s["started"], s["seconds"], s["fraction"]) for s in quick} == {("queued", None, None, 0.0)}


def test_a_step_runs_reports_its_share_and_ends_with_its_duration():
    start = timezone.now()
    step = planned_steps("quick")[1]
    step_reported(step, "running", 0.0, start)
    step_reported(step, "running", 0.6, start + timedelta(seconds=1))
    step_reported(step, "running", 0.4, start + timedelta(seconds=2))   # never goes back
    assert (step["status"], step["fraction"], step["started"]) == ("running", 0.6, start.isoformat())
    step_reported(step, "ok", 1.0, start + timedelta(seconds=3.5))
    assert (step["status"], step["fraction"], step["seconds"]) == ("ok", 1.0, 3.5)


@pytest.mark.parametrize("ending, running_becomes, queued_become", [
    (Audit.Status.FAILED, "error", "skipped"), (Audit.Status.CANCELLED, "cancelled", "cancelled")])
def test_the_steps_of_an_audit_that_ends_early_end_with_it(ending, running_becomes, queued_become):
    start = timezone.now()
    steps = planned_steps("quick")[1:4]
    step_reported(steps[0], "running", 0.0, start)
    step_reported(steps[0], "ok", 1.0, start + timedelta(seconds=1))
    step_reported(steps[1], "running", 0.3, start + timedelta(seconds=1))
    closed = steps_closed(steps, ending, start + timedelta(seconds=5))
    assert [s["status"] for s in closed] == ["ok", running_becomes, queued_become]
    assert (closed[1]["seconds"], closed[1]["fraction"]) == (4.0, 0.3)
    assert steps[1]["status"] == "running"   # a copy: the given list is left as it was


def test_the_set_up_runs_from_the_start_until_the_first_section_starts(settings):
    settings.AUDIT_SECTIONS = None
    start = timezone.now()
    steps = started_steps("quick", start)
    assert [s["status"] for s in steps] == ["running"] + ["queued"] * 5
    assert steps_reported(steps, "summary", "running", 0.0, start + timedelta(seconds=7))
    assert [(s["status"], s["seconds"]) for s in steps[:2]] == [("ok", 7.0), ("running", None)]
    assert not steps_reported(steps, "summary", "running", 0.5, start + timedelta(seconds=8))
    assert not steps_reported(steps, "neurons", "ok", 1.0, start + timedelta(seconds=8))   # not one of them
    assert steps_reported(steps, "summary", "ok", 1.0, start + timedelta(seconds=9))
    assert [s["status"] for s in steps] == ["ok", "ok"] + ["queued"] * 4
