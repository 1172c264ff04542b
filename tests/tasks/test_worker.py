"""Audits through real processes: the API on the web server, a Celery worker on Redis.
A worker killed mid-audit loses no audit and leaves none stuck in 'running'. A release gate overtakes
another organization's queue of scheduled re-audits."""

import os
import signal
import subprocess
import time

import pytest
import torch

from auditsvc.demo.nets import PlainNet
from tests.conftest import write_package, write_probe
from tests.service_fixtures import zip_directory

pytestmark = pytest.mark.integration


def test_an_audit_created_through_the_api_finishes_on_a_worker(service_stack, audit_inputs, tmp_path):
    stack = service_stack
    created = stack.create_audit(*audit_inputs)
    assert created["status"] == "queued"
    seen_running = stack.wait_until(created["id"], lambda s: s["status"] != "queued", 120)
    done = stack.wait_until(created["id"], lambda s: s["status"] in ("done", "failed"))
    assert done["status"] == "done", done["message"]
    assert seen_running["status"] in ("running", "done")
    api = stack.api()
    findings = api.get(done["links"]["findings"], timeout=30).json()
    assert findings["schema"] == 1 and findings["model"]["name"] == "integration-model"
    assert findings["verdict"] == done["verdict"]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(api.get(done["links"]["report_pdf"], timeout=30).content)
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "integration-model" in text and done["verdict"].upper() in text
    assert "worker1@" in stack.log("worker1") and f"[{created['id']}]" not in stack.log("web")


def test_a_quick_audit_created_through_the_api_runs_only_its_sections(service_stack, audit_inputs):
    """The stack's AUDITSVC_SECTIONS also allows saliency; the quick profile leaves it out."""
    stack = service_stack
    created = stack.create_audit(*audit_inputs, profile="quick")
    quick = ["summary", "performance", "shortcuts", "looking"]
    assert created["profile"] == "quick" and [s["name"] for s in created["steps"]] == ["setup", *quick, "report"]
    done = stack.wait_until(created["id"], lambda s: s["status"] in ("done", "failed"))
    assert done["status"] == "done", done["message"]
    assert [(s["name"], s["status"]) for s in done["steps"]] == [(name, "ok") for name in ["setup", *quick, "report"]]
    findings = stack.api().get(done["links"]["findings"], timeout=30).json()
    assert list(findings["sections"]) == quick


def test_a_killed_worker_process_loses_no_audit(service_stack, audit_inputs):
    stack = service_stack
    created = stack.create_audit(*audit_inputs)
    stack.wait_until(created["id"], lambda s: s["status"] == "running" and s["progress"] > 0.05, 120)
    [child] = stack.worker_children("worker1")
    os.kill(child, signal.SIGKILL)  # the pool process running the audit dies mid-way
    done = stack.wait_until(created["id"], lambda s: s["status"] in ("done", "failed"))
    assert done["status"] == "done" and done["attempts"] == 2, done


def test_a_killed_worker_is_swept_and_the_audit_finishes_on_another(service_stack, audit_inputs):
    stack = service_stack
    created = stack.create_audit(*audit_inputs)
    stack.wait_until(created["id"], lambda s: s["status"] == "running" and s["progress"] > 0.05, 120)
    stack.kill("worker1")  # the whole worker, its pool and its unacknowledged message
    time.sleep(6)  # AUDITSVC_STALE_AFTER=5 in the stack: the heartbeat is now stale
    assert stack.status(created["id"])["status"] == "running"
    assert "swept 1 audit" in stack.manage("sweep_audits")
    assert stack.status(created["id"])["status"] == "queued"
    stack.start_worker()
    done = stack.wait_until(created["id"], lambda s: s["status"] in ("done", "failed"))
    assert done["status"] == "done" and done["attempts"] == 2, done


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    """A tiny model (3x32x32) and a probe zip of 12 images: the quickest audit there is."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_inputs")
    model = write_package(directory / "model", PlainNet(2, widths=(4, 8)), ["cat", "dog"], name="tiny-model")
    root = write_probe(directory / "probe", ["cat", "dog"], per_class=6, size=(32, 32))
    archive = directory / "probe.zip"
    archive.write_bytes(zip_directory(root))
    return model, archive


def test_a_release_audit_overtakes_another_organizations_scheduled_re_audits(service_stack, tiny_inputs):
    """One worker, one slot: Acme's six re-audits wait in the dispatcher's queue and Globex's release gate,
    sent after them, runs next; once it is done, the re-audits it overtook are cancelled (nothing to wait for)."""
    stack = service_stack
    scheduled = [stack.create_audit(*tiny_inputs, profile="quick", priority="scheduled", seed=str(seed))["id"]
                 for seed in range(6)]
    release = stack.create_audit(*tiny_inputs, user="bob", profile="quick", priority="release")
    assert release["priority"] == "release" and release["queue_position"] <= 1   # behind one sent already at most
    waiting = [stack.status(audit) for audit in scheduled[2:]]
    assert all(s["status"] == "queued" and s["queue_position"] > release["queue_position"] for s in waiting), waiting
    done = stack.wait_until(release["id"], lambda s: s["status"] in ("done", "failed"), 300, user="bob")
    assert done["status"] == "done", done["message"]
    overtaken = [s for s in map(stack.status, scheduled) if s["status"] == "queued"]
    assert len(overtaken) >= 4 and all(s["started"] is None for s in overtaken), overtaken
    for links in (stack.status(audit)["links"] for audit in scheduled):
        if "cancel" in links:
            stack.api().post(links["cancel"], timeout=30)
    assert {stack.status(audit)["status"] for audit in scheduled} <= {"done", "cancelled"}
