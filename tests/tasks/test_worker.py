"""Audits through real processes: the API on the web server, a Celery worker on Redis.
A worker killed mid-audit loses no audit and leaves none stuck in 'running'."""

import os
import signal
import subprocess
import time

import pytest

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
