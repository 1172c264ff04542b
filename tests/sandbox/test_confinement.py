"""What a model that got to run code could do inside the sandbox: these run Python in the same
confinement as an audit and check that it cannot reach the network, the host's files, the
parent's secrets or more than its limits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from auditsvc.sandbox import Confinement, Limits
from auditsvc.sandbox.supervisor import Job

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (.ci/run installs it)")


def confined_python(code: str, limits: Limits | None = None, env: dict | None = None, timeout: float = 120):
    """Run `code` in the audit sandbox; returns (exit code, the JSON it printed last, stderr)."""
    confinement = Confinement("bubblewrap", limits or Limits())
    job = Job(confinement)
    try:
        command = confinement.command([sys.executable, "-I", "-c", textwrap.dedent(code)], job.mounts)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=job.root / "tmp",
                              env={**confinement.environment("/tmp"), **(env or {})})
        lines = done.stdout.strip().splitlines()
        return done.returncode, json.loads(lines[-1]) if lines else None, done.stderr
    finally:
        job.remove()


def test_no_network():
    code, report, _ = confined_python("""
        import json, socket
        try:
            socket.create_connection(("127.0.0.1", 22), timeout=2)
            reached = True
        except OSError as exc:
            reached = str(exc)
        print(json.dumps({"reached": reached, "interfaces": [n for _, n in socket.if_nameindex()]}))
    """)
    assert code == 0 and report["reached"] is not True and report["interfaces"] == ["lo"]


def test_host_files_are_out_of_sight_and_out_of_reach(tmp_path):
    secret = tmp_path / "other-organization-model.pt2"
    secret.write_text("private")
    marker = tmp_path / "written-by-the-model"
    on_the_host = [str(secret), "/etc/shadow", "/var/log", str(Path(__file__).resolve().parents[1])]
    assert all(os.path.exists(path) for path in on_the_host)
    code, report, _ = confined_python(f"""
        import json, os, torch
        seen = {{}}
        for path in {on_the_host!r}:
            seen[path] = os.path.exists(path)
        wrote = []
        for path in ({str(marker)!r}, "/usr/evil", {str(Path(sys.prefix) / "evil")!r}, "/job/in/evil"):
            try:
                open(path, "w").write("x"); wrote.append(path)
            except OSError:
                pass
        try:  # the op a TorchScript model could call: creates the file it maps
            torch.from_file({str(marker)!r}, shared=True, size=16); wrote.append("from_file")
        except Exception:
            pass
        print(json.dumps({{"seen": seen, "wrote": wrote, "uid": os.getuid()}}))
    """)
    assert code == 0
    assert not any(report["seen"].values()), report["seen"]
    assert report["wrote"] == [] and not marker.exists()
    if os.geteuid() == 0:
        assert report["uid"] == 65534   # root's sandbox drops to nobody


def test_the_parents_secrets_stay_with_the_parent(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    code, report, _ = confined_python("import json, os; print(json.dumps(dict(os.environ)))")
    assert code == 0 and "do-not-leak" not in json.dumps(report)
    assert "DATABASE_URL" not in report and report["HOME"] == "/tmp"


def test_a_private_tmp_that_is_gone_afterwards():
    code, report, _ = confined_python("""
        import json, os
        open("/tmp/scratch", "w").write("x")
        print(json.dumps({"tmp": os.listdir("/tmp")}))
    """)
    # besides the child's own file, at most the folder above a checkout that lives under /tmp
    here = {Path(sys.prefix).relative_to("/tmp").parts[0]} if sys.prefix.startswith("/tmp/") else set()
    assert code == 0 and set(report["tmp"]) - here == {"scratch"}
    assert not Path("/tmp/scratch").exists()


def test_memory_beyond_the_limit_fails_inside():
    code, report, _ = confined_python("""
        import json
        try:
            block = bytearray(3 << 30); result = "allocated"
        except MemoryError:
            result = "MemoryError"
        print(json.dumps({"result": result}))
    """, Limits(memory_mb=2048))
    assert code == 0 and report["result"] == "MemoryError"


def test_a_file_beyond_the_size_limit_cannot_be_written():
    code, report, _ = confined_python("""
        import json, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            open("/tmp/big", "wb").write(b"x" * (3 << 20)); result = "written"
        except OSError as exc:
            result = "refused"
        print(json.dumps({"result": result}))
    """, Limits(file_mb=1))
    assert code == 0 and report["result"] == "refused"


def test_processes_beyond_the_limit_cannot_start():
    code, report, _ = confined_python("""
        import json, threading, time
        started = 0
        try:
            for _ in range(200):
                threading.Thread(target=time.sleep, args=(2,), daemon=True).start(); started += 1
        except RuntimeError:
            pass
        print(json.dumps({"started": started}))
    """, Limits(processes=64))
    assert code == 0 and report["started"] < 64


def test_cpu_time_beyond_the_limit_ends_the_process():
    code, _, _ = confined_python("while True: pass", Limits(cpu_seconds=1), timeout=60)
    assert code == 128 + 24   # SIGXCPU, reported by bubblewrap's init as 128 + the signal


def test_without_bubblewrap_nothing_runs_unless_allowed(monkeypatch):
    from auditsvc.sandbox import SandboxUnavailable

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("AUDITSVC_ALLOW_UNCONFINED", raising=False)
    with pytest.raises(SandboxUnavailable, match="AUDITSVC_ALLOW_UNCONFINED=1"):
        Confinement.from_env()
    monkeypatch.setenv("AUDITSVC_ALLOW_UNCONFINED", "1")
    confinement = Confinement.from_env()
    assert not confinement.confined and "unconfined" in confinement.describe()


@pytest.mark.parametrize("value", ["-5", "1e9", "٣", "lots"])
def test_limit_settings_are_whole_positive_numbers(monkeypatch, value):
    monkeypatch.setenv("AUDITSVC_SANDBOX_MEMORY_MB", value)
    with pytest.raises(ValueError, match="AUDITSVC_SANDBOX_MEMORY_MB"):
        Limits.from_env()
