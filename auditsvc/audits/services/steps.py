"""An audit's profile and its steps: which battery sections it runs, and each step's state as reported.

A profile names sections as the command line's AUDITSVC_SECTIONS does (the battery registry's names);
AUDITSVC_SECTIONS (settings.AUDIT_SECTIONS) still restricts every profile. The steps are the set-up
(from the start of the run until the battery's first section starts: a sandboxed child ready, the inputs
copied in, the model and the probe set loaded), the chosen sections in the battery's order, then the
report files; the sandboxed child reports each section and the report files as they start and end.
Their titles come from the registry, never from the child.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from auditsvc.battery import BadInput
from auditsvc.sandbox import REPORT_STEP

from ..models import Audit

PROFILE_SECTIONS: dict[str, tuple[str, ...] | None] = {
    Audit.Profile.QUICK: ("summary", "performance", "shortcuts", "looking"),
    Audit.Profile.FULL: None,   # the whole battery
}
SETUP_STEP, SETUP_TITLE = "setup", "Set up (sandbox, model, probe set)"
REPORT_TITLE = "Report files"


def profile_sections(profile: str) -> list[str] | None:
    """The sandbox's `sections` option for this profile: None for the whole battery. BadInput when
    AUDITSVC_SECTIONS leaves none of the profile's sections."""
    chosen = PROFILE_SECTIONS[profile]
    allowed = settings.AUDIT_SECTIONS
    if allowed is None:
        return list(chosen) if chosen is not None else None
    kept = [name for name in allowed if chosen is None or name in chosen]
    if not kept:
        raise BadInput(f"The {profile} profile runs {', '.join(chosen)}, and AUDITSVC_SECTIONS allows none of "
                       f"them ({', '.join(allowed)}).")
    return kept


def planned_steps(profile: str) -> list[dict]:
    """The steps of an audit of this profile, all queued. (A name AUDITSVC_SECTIONS gets wrong has no step:
    the sandbox refuses it with the list of known names.)"""
    from auditsvc.battery import registry

    try:
        names = profile_sections(profile)
    except BadInput:
        names = []
    sections = [s for s in registry.sections() if names is None or s.name in names]
    return [_step(SETUP_STEP, SETUP_TITLE), *(_step(s.name, s.title) for s in sections),
            _step(REPORT_STEP, REPORT_TITLE)]


def started_steps(profile: str, now: datetime) -> list[dict]:
    """The steps of a run that starts now: the set-up running, the rest queued."""
    steps = planned_steps(profile)
    step_reported(steps[0], "running", 0.0, now)
    return steps


def steps_reported(steps: list[dict], name: str, status: str, fraction: float, now: datetime) -> bool:
    """One report of the sandboxed child applied to the audit's steps; whether a step's status changed. A
    name that is not one of them is ignored. The first step to start after the set-up ends it."""
    step = next((step for step in steps if step["name"] == name), None)
    if step is None:
        return False
    changed = status != step["status"]
    setup = steps[0]
    if status == "running" and name != SETUP_STEP and setup["name"] == SETUP_STEP and setup["status"] == "running":
        step_reported(setup, "ok", 1.0, now)
        changed = True
    step_reported(step, status, fraction, now)
    return changed


def _step(name: str, title: str) -> dict:
    return {"name": name, "title": title, "status": "queued", "started": None, "seconds": None, "fraction": 0.0}


def step_reported(step: dict, status: str, fraction: float, now: datetime) -> None:
    """A step as the child reports it: running (with the fraction done) or finished with its status."""
    if status == "running":
        if step["status"] != "running":
            step.update(status="running", started=now.isoformat(), seconds=None, fraction=0.0)
        step["fraction"] = max(step["fraction"], round(fraction, 4))
        return
    started = datetime.fromisoformat(step["started"]) if step["started"] else now
    step.update(status=status, started=started.isoformat(), fraction=1.0,
                seconds=round((now - started).total_seconds(), 3))


def steps_closed(steps: list[dict], status: str, now: datetime) -> list[dict]:
    """The steps of an audit that ends FAILED or CANCELLED: the running step ends with it (error or
    cancelled), the ones that never started are skipped (failed) or cancelled."""
    closed = [dict(step) for step in steps]
    for step in closed:
        if step["status"] == "running":
            reached = step["fraction"]
            step_reported(step, "error" if status == Audit.Status.FAILED else "cancelled", 1.0, now)
            step["fraction"] = reached
        elif step["status"] == "queued":
            step["status"] = "skipped" if status == Audit.Status.FAILED else "cancelled"
    return closed
