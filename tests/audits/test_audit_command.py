"""`python manage.py audit`: exit codes 0 / 2 / 3, one-line errors, files written or none."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from django.core.management import call_command

from auditsvc.demo.nets import PlainNet
from tests.conftest import write_meta, write_package, write_probe
from tests.records import make_signing_key

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return subprocess.run([sys.executable, "manage.py", "audit", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_audit_writes_three_files_and_gates_on_the_verdict(tiny_package, tiny_probe, tmp_path):
    out = tmp_path / "out"
    done = run_cli("--model", tiny_package, "--dataset", tiny_probe, "--out", out, "--seed", 3, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["findings.json", "report.html", "report.pdf"]
    findings = json.loads((out / "findings.json").read_text())
    assert findings["environment"]["seed"] == 3 and findings["model"]["name"] == "tiny"
    assert f"verdict: {findings['verdict'].upper()}" in done.stdout
    if findings["verdict"] != "pass":
        gated = run_cli("--model", tiny_package, "--dataset", tiny_probe, "--out", tmp_path / "o2", "--fail-on", "warn")
        assert gated.returncode == 3


def test_an_onnx_model_is_audited_with_every_quick_section_ok(tiny_probe, tmp_path):
    torch.manual_seed(0)
    model = write_package(tmp_path / "package", PlainNet(3, widths=(4, 8)), ["a", "b", "c"], fmt="onnx")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "manage.py", "audit", "--model", str(model), "--dataset", str(tiny_probe),
                           "--out", str(out), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "AUDITSVC_SECTIONS": "summary,performance,shortcuts,looking"})
    assert done.returncode == 0, done.stderr
    findings = json.loads((out / "findings.json").read_text())
    assert findings["model"]["format"] == "onnx"
    assert {name: section["status"] for name, section in findings["sections"].items()} == {
        "summary": "ok", "performance": "ok", "shortcuts": "ok", "looking": "ok"}
    report = (out / "report.html").read_text()
    assert "converted from ONNX (opset " in report and "on 18 probe images" in report


def test_a_keras_model_is_audited_in_the_sandbox_with_every_section(tiny_probe, tmp_path):
    from tests.keras_models import plain, save_package   # imports Keras: only this test needs it

    model = save_package(tmp_path / "model", plain(), ["a", "b", "c"])
    out = tmp_path / "out"
    done = run_cli("--model", model, "--dataset", tiny_probe, "--out", out, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    findings = json.loads((out / "findings.json").read_text())
    assert findings["model"]["format"] == "keras"
    statuses = {name: section["status"] for name, section in findings["sections"].items()}
    assert statuses.pop("reference") == "skipped"   # no --reference given
    assert set(statuses.values()) == {"ok"}, statuses
    report = (out / "report.html").read_text()
    assert "converted from Keras 3." in report and "the activation of &#39;logits&#39;" in report
    assert "logits match Keras within" in report and "on 18 probe images" in report


def _bad(capsys, tmp_path, *args) -> str:
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exited:
        call_command("audit", *map(str, args), "--out", str(out))
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert not out.exists() or not any(out.iterdir())
    return error


def test_bad_model_inputs(capsys, tmp_path, tiny_probe):
    pickle = tmp_path / "model.pt"
    torch.save(PlainNet(3), pickle)
    write_meta(tmp_path / "model.json", ["a", "b", "c"])
    assert "arbitrary code" in _bad(capsys, tmp_path, "--model", pickle, "--dataset", tiny_probe)
    assert "not found" in _bad(capsys, tmp_path, "--model", tmp_path / "none.pt2", "--dataset", tiny_probe)


def test_a_keras_lambda_layer_exits_2_in_one_line(capsys, tmp_path, tiny_probe):
    from tests.keras_models import keras, layers, save_package   # imports Keras: only the Keras tests need it

    inputs = keras.Input((16, 16, 3))
    shifted = layers.Lambda(lambda t: t + 1, name="shift")(inputs)
    model = save_package(tmp_path, keras.Model(inputs, layers.Dense(3)(layers.Flatten()(shifted))), ["a", "b", "c"])
    assert "layer 'shift' is a Lambda layer" in _bad(capsys, tmp_path, "--model", model, "--dataset", tiny_probe)


def test_bad_dataset_inputs(capsys, tmp_path, tiny_package):
    other = write_probe(tmp_path / "other", ["x", "y"], per_class=2)
    assert "not among the model's classes" in _bad(capsys, tmp_path, "--model", tiny_package, "--dataset", other)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../a/x.png", b"x")
    assert "path traversal" in _bad(capsys, tmp_path, "--model", tiny_package, "--dataset", evil)


def test_missing_arguments_exit_2():
    done = run_cli("--model", "x.pt2")
    assert done.returncode == 2 and "required" in done.stderr


def test_part_of_the_battery_from_the_environment(tiny_package, tiny_probe, tmp_path, capsys, monkeypatch):
    out = tmp_path / "part"
    done = subprocess.run([sys.executable, "manage.py", "audit", "--model", str(tiny_package), "--dataset",
                           str(tiny_probe), "--out", str(out), "--device", "cpu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "AUDITSVC_SECTIONS": "summary, shortcuts"})
    assert done.returncode == 0, done.stderr
    assert list(json.loads((out / "findings.json").read_text())["sections"]) == ["summary", "shortcuts"]
    monkeypatch.setenv("AUDITSVC_SECTIONS", "shortcuts,tea_leaves")
    assert "tea_leaves" in _bad(capsys, tmp_path, "--model", tiny_package, "--dataset", tiny_probe)


def test_a_configured_signing_key_signs_the_report(tiny_package, tiny_probe, tmp_path):
    """The parent signs report.pdf after the sandboxed child wrote it; verify-report accepts it."""
    key, out = make_signing_key(tmp_path / "key"), tmp_path / "signed"
    env = {**os.environ, "AUDITSVC_SECTIONS": "summary", "AUDITSVC_SIGNING_KEY": str(key.p12),
           "AUDITSVC_SIGNING_PASSWORD": key.password}
    done = subprocess.run([sys.executable, "manage.py", "audit", "--model", str(tiny_package), "--dataset",
                           str(tiny_probe), "--out", str(out), "--device", "cpu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    verified = subprocess.run([sys.executable, "manage.py", "verify-report", str(out / "report.pdf"), "--trust",
                               str(key.certificate), "--require-signature"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert verified.returncode == 0, verified.stderr
    findings = json.loads((out / "findings.json").read_text())
    assert f"model sha256:     {findings['model']['sha256']}" in verified.stdout
    assert "intact; covers the whole file; signer trusted" in verified.stdout


def test_a_signing_key_that_cannot_be_read_stops_the_audit(tiny_package, tiny_probe, tmp_path, capsys, settings):
    settings.REPORT_SIGNING_KEY = str(tmp_path / "none.p12")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        call_command("audit", "--model", str(tiny_package), "--dataset", str(tiny_probe), "--out", str(out))
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: report signing: the signing key") and error.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


class RangeGuarded(torch.nn.Module):
    """A model that refuses inputs beyond a range: it passes the load check, and the saliency methods'
    noisy inputs make it raise, so that section errors for real, inside the sandbox."""

    def __init__(self):
        super().__init__()
        self.net = PlainNet(3, widths=(4, 8))

    def forward(self, x):
        torch._assert_async((x.abs() < 2.2).all(), "input out of range")
        return self.net(x)


def test_a_failed_section_makes_fail_on_warn_exit_3(tiny_probe, tmp_path, capsys, monkeypatch):
    """An audit whose sections crash is incomplete: WARN at least, never PASS."""
    torch.manual_seed(0)
    model = write_package(tmp_path / "guarded", RangeGuarded(), ["a", "b", "c"])
    monkeypatch.setenv("AUDITSVC_SECTIONS", "summary,saliency")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        call_command("audit", "--model", str(model), "--dataset", str(tiny_probe), "--out", str(out),
                     "--device", "cpu", "--fail-on", "warn")
    assert exited.value.code == 3
    assert "verdict: WARN" in capsys.readouterr().out
    findings = json.loads((out / "findings.json").read_text())
    assert findings["sections"]["saliency"]["status"] == "error"
    assert findings["verdict"] == "warn" and findings["findings"][0]["code"] == "health.incomplete"
    assert "section saliency failed" in findings["findings"][0]["title"]
    assert "Incomplete audit" in (out / "report.html").read_text()
