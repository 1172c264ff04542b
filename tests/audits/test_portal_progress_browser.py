"""An audit's progress in headless Chromium against the real stack (a real worker, its sandboxed child):
the steps move like CI checks while the page stays loaded, a queued audit says how many are ahead of it,
and Cancel stops a running audit for good (its sandboxed child ends, nothing is stored) while the worker
goes on to the next audit. Screenshots go to build/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.audits.browser import log_in, shot, zip_directory
from tests.audits.conftest import desktop_page
from tests.conftest import write_probe
from auditsvc.stack import wait_for

pytestmark = pytest.mark.integration
FINAL = ("done", "failed", "cancelled")
STEPS = "#audit-progress li.step"


@pytest.fixture
def page(browser, service_stack):
    """A desktop page that accepts confirmation dialogs (Cancel asks for one) and records them."""
    yield from desktop_page(browser, accept_dialogs=True)


@pytest.fixture(scope="module")
def long_audit_inputs(audit_inputs, tmp_path_factory) -> tuple[Path, Path]:
    """The integration model on a probe set five times as large: its sections run long enough to be
    cancelled while one runs, however busy the machine."""
    model, _ = audit_inputs
    folder = tmp_path_factory.mktemp("long_probe")
    root = write_probe(folder / "probe", ["cat", "dog"], per_class=200, size=(48, 48))
    return model, zip_directory(root, folder / "probe.zip")


def phone_shot(page, name: str) -> None:
    """The same page as a phone shows it (390 px wide)."""
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, name)
    page.set_viewport_size({"width": width, "height": 900})


def step_states(page) -> list[str]:
    return page.eval_on_selector_all(STEPS, "items => items.map(item => item.className.replace('step step-', ''))")


def test_the_steps_move_while_the_page_stays(page, service_stack, audit_inputs):
    stack = service_stack
    log_in(page, stack)
    page.goto(f"{stack.url}/audits/new/")
    expect(page.locator("select[name=profile] option")).to_have_text(["Full", "Quick"])
    expect(page.locator("#audit-form")).to_contain_text("Quick: the model summary, performance, shortcut probes")
    shot(page, "progress-1-new-audit-profiles")
    phone_shot(page, "progress-1-new-audit-profiles-phone")
    created = stack.create_audit(*audit_inputs)
    page.goto(f"{stack.url}/audits/{created['id']}/")
    expect(page.locator(STEPS)).to_have_count(len(created["steps"]))
    first = step_states(page)
    page.evaluate("window.stayed = true")   # gone if the page reloaded
    page.wait_for_function("""() => {
        const states = [...document.querySelectorAll('#audit-progress li.step')].map(item => item.className);
        const finished = states.findIndex(state => state.includes('step-ok'));
        const running = states.findIndex(state => state.includes('step-running'));
        return finished >= 0 && running > finished;
    }""", timeout=240_000)
    moving = step_states(page)
    assert page.evaluate("window.stayed === true") and moving != first, (first, moving)
    expect(page.locator("#audit-progress .progress-summary")).to_contain_text(
        re.compile(rf"Step \d of {len(moving)}: .+ · .+ elapsed · (no estimate yet|about .+ left)"))
    expect(page.locator(".live .stage")).not_to_contain_text("done")
    expect(page.locator("#fact-waited")).not_to_have_text("waiting")   # the header follows the run too
    expect(page.locator("#fact-ran")).to_contain_text(re.compile(r"(for|since) "))
    shot(page, "progress-2-steps-running")
    phone_shot(page, "progress-2-steps-running-phone")
    expect(page.locator("#download-pdf")).to_be_visible(timeout=240_000)   # reloaded once, at the end
    assert step_states(page) == ["ok"] * len(moving)
    expect(page.locator("#cancel-audit")).to_have_count(0)
    expect(page.locator("#audit-progress .progress-summary")).to_have_text(f"Done: {len(moving)} ok")
    shot(page, "progress-3-steps-done")


def test_a_cancelled_audit_stops_for_good_and_the_worker_takes_the_next(page, service_stack, audit_inputs,
                                                                        long_audit_inputs):
    stack = service_stack
    running = stack.create_audit(*long_audit_inputs)
    stack.wait_until(running["id"], lambda s: s["status"] == "running", 120)
    waiting = [stack.create_audit(*audit_inputs) for _ in range(2)]
    log_in(page, stack)

    page.goto(f"{stack.url}/audits/{waiting[1]['id']}/")
    expect(page.locator("#audit-progress .progress-summary")).to_contain_text("1 audit ahead of this one")
    shot(page, "progress-4-queued")
    for audit in waiting:   # queued: cancelled before any worker runs them
        answer = stack.api().post(f"{stack.url}/api/v1/audits/{audit['id']}/cancel", timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"

    page.goto(f"{stack.url}/audits/{running['id']}/")   # cancelled while a section runs, past the set-up
    expect(page.locator(f"{STEPS}.step-running:not([data-step=setup])")).to_have_count(1, timeout=60_000)
    [pool] = stack.worker_children("worker1")
    sandbox = descendants(pool)   # the audit's sandboxed child: bubblewrap and the processes inside
    job_folders = {Path(found) for pid in sandbox for found in re.findall(r"(\S+/auditsvc-job-[\w-]+)/out", cmdline(pid))}
    assert sandbox and job_folders
    shot(page, "progress-5-before-cancel")
    page.click("#cancel-audit button")
    expect(page.locator(".messages")).to_contain_text(f"Audit {running['id']} cancelled.")
    expect(page.locator(".badge-cancelled")).to_be_visible()
    expect(page.locator(f"{STEPS}.step-cancelled").first).to_be_visible()
    expect(page.locator(f"{STEPS}[data-step=setup]")).to_have_class(re.compile("step-ok"))
    expect(page.locator("#cancel-audit")).to_have_count(0)
    assert page.dialogs == [f"Cancel audit {running['id']}? A running audit stops at once and stores nothing; this "
                            "cannot be undone."]
    shot(page, "progress-6-cancelled")
    phone_shot(page, "progress-6-cancelled-phone")

    wait_for(lambda: not any(alive(pid) for pid in sandbox), 60, "the cancelled audit's sandboxed child to end")
    wait_for(lambda: not any(folder.exists() for folder in job_folders), 60, "its job folder to go")
    cancelled = stack.status(running["id"])
    assert cancelled["status"] == "cancelled" and cancelled["verdict"] is None
    assert "findings" not in cancelled["links"] and "report_pdf" not in cancelled["links"]
    assert stack.api().get(f"{stack.url}/api/v1/audits/{running['id']}/findings.json", timeout=30).status_code == 404
    for audit in waiting:
        assert (stack.status(audit["id"])["status"], stack.status(audit["id"])["attempts"]) == ("cancelled", 0)

    after = stack.create_audit(*audit_inputs, profile="quick")
    done = stack.wait_until(after["id"], lambda s: s["status"] in FINAL)
    assert done["status"] == "done", done["message"]
    assert stack.status(running["id"])["status"] == "cancelled"   # still: cancelled is final


def descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(child) for child in children.read_text().split()] if children.exists() else []
    return found + [grandchild for child in found for grandchild in descendants(child)]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to read its status has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
