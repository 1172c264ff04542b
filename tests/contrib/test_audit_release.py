"""contrib/release: the release pipeline's script run with bash, curl and jq against the real stack (web
server, Celery worker, PostgreSQL), beside the Python client (auditsvc.client) on the same audit, and the
GitHub Actions workflow that runs the script."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from auditsvc import client
from auditsvc.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "contrib" / "release"
SCRIPT = RELEASE / "audit-release.sh"


def run_script(url: str, token: str | None, *args, **env: str) -> subprocess.CompletedProcess:
    """The script as a CI job runs it: a bare environment with the service's address and token."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C.UTF-8",
                   "AUDITSVC_URL": url, **env}
    if token is not None:
        environment["AUDITSVC_TOKEN"] = token
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], env=environment, capture_output=True, text=True,
                          timeout=300)


def gate_args(gate_models, model: str, out: Path, *more) -> list:
    return ["--model", gate_models[model], "--dataset", gate_models["probe"], "--profile", "quick",
            "--poll-max", "2", "--out", out, *more]


def one_line_error(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


@pytest.mark.integration
def test_a_clean_model_passes_the_gate_and_its_report_is_kept(service_stack, gate_models, tmp_path):
    stack, out, outputs = service_stack, tmp_path / "audit", tmp_path / "github-output"
    done = run_script(stack.url, stack.tokens["alice"],
                      *gate_args(gate_models, "pass", out, "--release-tag", "v2.0-rc1", "--fail-on", "warn"),
                      GITHUB_OUTPUT=str(outputs))
    assert done.returncode == 0, done.stderr
    step = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    audit_id = step["audit-id"]
    assert step == {"audit-id": audit_id, "verdict": "pass", "report-url": f"{stack.url}/audits/{audit_id}/report/"}
    assert done.stdout.splitlines() == ["verdict: PASS (0 findings)", f"  {step['report-url']}",
                                        f"  {out}/report.pdf", f"  {out}/findings.json"]
    assert f"audit {audit_id}: queued ({stack.url}/audits/{audit_id}/)" in done.stderr
    assert stack.tokens["alice"] not in done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["findings.json", "report.pdf"]
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", str(out / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "stripes-sure" in text and "v2.0-rc1" in text
    findings = json.loads((out / "findings.json").read_text())
    assert (findings["verdict"], findings["model"]["name"], findings["findings"]) == ("pass", "stripes-sure", [])
    audit = stack.status(int(audit_id))
    assert (audit["profile"], audit["release_tag"], audit["verdict"], audit["priority"]) == (
        "quick", "v2.0-rc1", "pass", "release")


@pytest.mark.integration
def test_fail_on_warn_stops_a_model_that_warns_and_a_rerun_follows_the_same_audit(service_stack, gate_models,
                                                                                   tmp_path, monkeypatch, capsys):
    """The script gates at --fail-on warn (3); meanwhile the Python client, sent the same model for the probe set
    the script uploaded, follows that audit instead of starting another, and lets the warning through
    --fail-on fail (0)."""
    stack, token = service_stack, service_stack.tokens["alice"]
    environment = {"PATH": os.environ["PATH"], "AUDITSVC_URL": stack.url, "AUDITSVC_TOKEN": token}
    script = subprocess.Popen(["bash", str(SCRIPT), *map(str, gate_args(gate_models, "warn", tmp_path / "script",
                                                                        "--fail-on", "warn"))],
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = script.stderr.readline()
        queued = re.match(r"audit (\d+): queued", first)
        assert queued, first
        audit_id = int(queued.group(1))
        probe_set = stack.status(audit_id)["probe_set"]["id"]
        monkeypatch.setenv("AUDITSVC_TOKEN", token)
        rerun = client.main(["audit", "--url", stack.url, "--model", str(gate_models["warn"]), "--probe-set",
                             str(probe_set), "--profile", "quick", "--poll-max", "2", "--out", str(tmp_path / "client"),
                             "--fail-on", "fail"])
        stdout, _ = script.communicate(timeout=300)
    finally:
        script.kill()
    assert (script.returncode, rerun) == (3, 0)
    printed = capsys.readouterr()
    assert printed.err.startswith(f"audit {audit_id}: an identical audit was already queued or running; following it")
    for output, out in ((stdout, tmp_path / "script"), (printed.out, tmp_path / "client")):
        assert output.splitlines() == ["verdict: WARN (1 findings)", f"  {stack.url}/audits/{audit_id}/report/",
                                       f"  {out}/report.pdf", f"  {out}/findings.json"]
        assert sorted(p.name for p in out.iterdir()) == ["findings.json", "report.pdf"]   # nothing partial left
    assert (tmp_path / "script" / "report.pdf").read_bytes() == (tmp_path / "client" / "report.pdf").read_bytes()
    findings = json.loads((tmp_path / "script" / "findings.json").read_text())
    assert [f["code"] for f in findings["findings"]] == ["health.miscalibrated"]   # the PDF kept: why it stopped


@pytest.mark.integration
def test_a_bad_token_is_one_line_without_the_token(service_stack, gate_models, tmp_path):
    token = "asv_" + "x" * 43
    done = run_script(service_stack.url, token, *gate_args(gate_models, "pass", tmp_path / "audit"))
    error = one_line_error(done, 2)
    assert error == ("error: the server refused the token (401: missing or invalid API token); "
                     "check AUDITSVC_TOKEN\n")
    assert token not in done.stdout + done.stderr and list((tmp_path / "audit").iterdir()) == []


@pytest.mark.integration
def test_a_refused_upload_shows_the_servers_message(service_stack, gate_models, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "stripes-sure", ')
    done = run_script(service_stack.url, service_stack.tokens["alice"],
                      *gate_args(gate_models, "pass", tmp_path / "audit", "--meta", broken))
    error = one_line_error(done, 2)
    assert error.startswith("error: the server refused the upload (400: invalid input (meta: ")
    assert "not valid JSON" in error


def test_bad_arguments_and_an_unreachable_server(gate_models, tmp_path):
    """Refused before any upload (2), or no server to answer (1); one line each."""
    closed = f"http://127.0.0.1:{free_port()}"
    token, out = "asv_" + "t" * 43, tmp_path / "out"
    cases = [
        (closed, token, ["--dataset", gate_models["probe"], "--out", out], 2, "--model is required"),
        (closed, token, gate_args(gate_models, "pass", out, "--fail-on", "maybe"), 2, "--fail-on must be warn or fail"),
        (closed, token, gate_args(gate_models, "pass", out, "--profile", "slow"), 2, "--profile must be full or quick"),
        (closed, token, ["--model", tmp_path / "absent.pt2", "--dataset", gate_models["probe"], "--out", out], 2,
         "absent.pt2 not found"),
        (closed, token, ["--model", gate_models["pass"], "--dataset", gate_models["probe"].with_suffix(""),
                         "--out", out], 2, "is a folder: zip it"),
        (closed, None, gate_args(gate_models, "pass", out), 2, "AUDITSVC_TOKEN is not set"),
        (closed, 'asv_"; evil', gate_args(gate_models, "pass", out), 2, "characters no API token has"),
        ("ftp://example.com", token, gate_args(gate_models, "pass", out), 2, "must start with http"),
        (closed, token, gate_args(gate_models, "pass", out), 1, f"cannot reach {closed}"),
    ]
    for url, key, args, code, text in cases:
        done = run_script(url, key, *args)
        assert text in one_line_error(done, code), (args, done.stderr)
    assert run_script(closed, None, "--help").stdout.startswith("usage: audit-release.sh")


def test_the_workflow_runs_the_script_and_attaches_the_report():
    workflow = yaml.safe_load((RELEASE / "model-audit.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))   # YAML 1.1 reads a bare `on` as true
    assert trigger == {"release": {"types": ["published"]}}
    assert workflow["permissions"] == {"contents": "write"}
    [job] = workflow["jobs"].values()
    steps = {step.get("id") or step.get("name"): step for step in job["steps"]}
    audit = steps["audit"]
    assert audit["env"] == {"AUDITSVC_URL": "${{ secrets.AUDITSVC_URL }}",
                            "AUDITSVC_TOKEN": "${{ secrets.AUDITSVC_TOKEN }}"}
    [script] = re.findall(r"bash (\S+)", audit["run"])
    assert (ROOT / script).resolve() == SCRIPT and os.access(SCRIPT, os.X_OK)
    usage = run_script("http://127.0.0.1:1", None, "--help").stdout
    used = set(re.findall(r"(--[a-z-]+)", audit["run"]))
    assert {"--fail-on", "--out", "--model"} <= used and all(option in usage for option in used), used - set(usage)
    out = re.search(r"--out (\S+)", audit["run"]).group(1)
    attach = steps["Attach the report to the release"]
    assert "gh release upload" in attach["run"] and f"{out}/report.pdf" in attach["run"]
    assert "!cancelled()" in attach["if"] and f"hashFiles('{out}/report.pdf')" in attach["if"]
    # The release's tag and the secrets reach commands as environment variables, never pasted into a script.
    assert all("${{" not in step.get("run", "") for step in job["steps"])
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
