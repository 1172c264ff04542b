"""Audits and model checks run confined: the files come back to the caller, the job folder goes,
what the child wrote is held to the findings.json contract before anyone trusts it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.meta import load_meta
from auditsvc.sandbox import ConfinedAudit, SandboxError, check_model
from auditsvc.sandbox.confined_audit import _checked_outputs, _findings
from tests.hostile.test_model_files import pickled_weight

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def job_folders() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("auditsvc-job-")}


def test_an_audit_in_the_sandbox_hands_back_three_files(tiny_package, tiny_probe, tmp_path):
    before = job_folders()
    stages = []
    with ConfinedAudit() as audit:
        audit.add_model(tiny_package, load_meta(tiny_package.with_name("model.json")).as_dict())
        audit.add_dataset(tiny_probe, label="the probe set")
        outcome = audit.run(tmp_path / "out", {"seed": 1, "device": "cpu", "sections": ["summary"]},
                            progress=lambda fraction, stage: stages.append(stage))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["findings.json", "report.html", "report.pdf"]
    assert all(p.stat().st_uid == os.getuid() for p in (tmp_path / "out").iterdir())
    written = json.loads(outcome.findings.read_text())
    assert written == outcome.findings_json and written["environment"]["seed"] == 1
    assert written["environment"]["isolation"].startswith("bubblewrap sandbox")
    assert "Model summary" in stages and job_folders() == before
    assert "bubblewrap sandbox" in outcome.html.read_text()


def test_a_model_check_loads_and_runs_it_confined(tiny_package):
    outcome = check_model(tiny_package, load_meta(tiny_package.with_name("model.json")).as_dict())
    assert outcome["status"] == "done" and outcome["format"] == "torch.export"


def test_a_model_check_refuses_a_crafted_archive(tiny_package, tmp_path):
    marker = tmp_path / "pwned"
    crafted = pickled_weight(tiny_package, tmp_path / "model.pt2", marker)
    with pytest.raises(BadInput, match="stored pickled"):
        check_model(crafted, load_meta(tiny_package.with_name("model.json")).as_dict())
    assert not marker.exists()


def test_a_model_check_refuses_a_model_that_does_not_fit_its_json(tiny_package):
    meta = load_meta(tiny_package.with_name("model.json")).as_dict()
    meta["classes"] = ["a", "b"]
    with pytest.raises(BadInput, match="expected \\(2, 2\\)"):
        check_model(tiny_package, meta)


GOOD = {"schema": 1, "verdict": "pass", "metrics": {}, "sections": {}, "findings": [
    {"code": "health.x", "category": "health", "severity": "info", "title": "t", "summary": "s", "evidence": {}}]}


@pytest.mark.parametrize("change", [
    lambda d: d.update(schema=2),
    lambda d: d.update(verdict="excellent"),
    lambda d: d.update(findings="none"),
    lambda d: d["findings"][0].update(severity="catastrophic"),
    lambda d: d["findings"][0].update(title=["not", "text"]),
    lambda d: d["findings"][0].update(evidence="a string"),
    lambda d: d.pop("metrics"),
])
def test_findings_that_break_the_contract_are_not_trusted(change, tmp_path):
    data = json.loads(json.dumps(GOOD))
    change(data)
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SandboxError, match="schema 1"):
        _findings(path)


def test_findings_that_follow_the_contract_are_read(tmp_path):
    path = tmp_path / "findings.json"
    path.write_text(json.dumps(GOOD))
    assert _findings(path) == GOOD


def test_report_files_must_be_regular_files(tmp_path):
    for name in ("report.html", "report.pdf"):
        (tmp_path / name).write_text("x")
    (tmp_path / "findings.json").symlink_to("/etc/passwd")
    with pytest.raises(SandboxError, match="did not write findings.json"):
        _checked_outputs(tmp_path)
