"""The parent's side of a job holds against a child that misbehaves: lies in its outcome, floods its
output, hangs, dies. Each ends in one clear line, the child's whole process group gone."""

from __future__ import annotations

import os
import shutil
import textwrap

import pytest

from auditsvc.battery.errors import BadInput
from auditsvc.sandbox import Confinement, Limits, SandboxError
from auditsvc.sandbox.supervisor import Child, Job

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

READY = 'import json, sys; print(json.dumps({"ready": True}), flush=True); request = json.loads(sys.stdin.readline())\n'


def run_child(body: str, timeout: float | None = 60, limits: Limits | None = None, progress=None, steps=None):
    job = Job(Confinement("bubblewrap", limits or Limits()))
    try:
        child = Child(job, "test", program=["-c", READY + textwrap.dedent(body)])
        return child.run({}, progress=progress, timeout=timeout, steps=steps), child
    finally:
        job.remove()


def test_progress_is_relayed_and_junk_ignored():
    seen = []
    outcome, _ = run_child("""
        import json, pathlib
        print("a library printing to stdout")
        print("x" * 100000)
        print(json.dumps({"progress": 0.5, "stage": "half"}))
        print(json.dumps({"progress": 7, "stage": "too far"}))
        print(json.dumps([1, 2]))
        pathlib.Path(request["out"], "outcome.json").write_text(json.dumps({"status": "done", "n": 1}))
    """, progress=lambda fraction, stage: seen.append((fraction, stage)))
    assert outcome == {"status": "done", "n": 1}
    assert seen == [(0.5, "half"), (1.0, "too far")]


def test_each_line_is_relayed_as_soon_as_it_is_complete():
    """Two lines in one write: the second is relayed before the child writes again (here the child waits
    for the parent to have seen it, and would wait until the timeout otherwise)."""
    job = Job(Confinement("bubblewrap", Limits()))
    seen = []

    def progress(fraction, stage):
        seen.append(stage)
        if stage == "second":
            (job.out_dir / "seen").touch()

    try:
        child = Child(job, "test", program=["-c", READY + textwrap.dedent("""
            import pathlib, sys, time
            out = pathlib.Path(request["out"])
            sys.stdout.write('{"progress": 0.1, "stage": "first"}\\n{"progress": 0.2, "stage": "second"}\\n')
            sys.stdout.flush()
            while not (out / "seen").exists():
                time.sleep(0.05)
            (out / "outcome.json").write_text('{"status": "done"}')
        """)])
        assert child.run({}, progress=progress, timeout=60) == {"status": "done"}
    finally:
        job.remove()
    assert seen == ["first", "second"]


def test_steps_are_relayed_and_junk_ignored():
    seen = []
    outcome, _ = run_child("""
        import json, pathlib
        for message in ({"step": "summary", "status": "running", "fraction": 0.25},
                        {"step": "summary", "status": "ok", "fraction": 1},
                        {"step": "x" * 300, "status": "running", "fraction": 2},
                        {"step": "summary", "status": "hacked", "fraction": 0.5},
                        {"step": "summary", "status": "ok", "fraction": "half"},
                        {"step": "summary", "status": "ok", "fraction": True},
                        {"step": ["summary"], "status": "ok", "fraction": 1}):
            print(json.dumps(message))
        print('{"step": "summary", "status": "ok", "fraction": NaN}')
        pathlib.Path(request["out"], "outcome.json").write_text(json.dumps({"status": "done"}))
    """, steps=lambda name, status, fraction: seen.append((name, status, fraction)))
    assert outcome == {"status": "done"}
    assert seen == [("summary", "running", 0.25), ("summary", "ok", 1.0), ("x" * 100, "running", 1.0)]


def test_a_caller_that_stops_the_job_kills_the_child():
    """A cancelled audit's progress writer raises: the child it was reading from dies with its process group."""
    def stop(fraction, stage):
        raise KeyError("cancelled")

    job = Job(Confinement("bubblewrap", Limits()))
    try:
        body = 'print(json.dumps({"progress": 0.1, "stage": "working"}), flush=True); import time; time.sleep(600)'
        child = Child(job, "test", program=["-c", READY + body])
        with pytest.raises(KeyError):
            child.run({}, progress=stop, timeout=60)
        assert child.process.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(child.process.pid, 0)
    finally:
        job.remove()


def test_a_refusal_becomes_bad_input_in_one_line():
    with pytest.raises(BadInput, match="^the model is wrong in two ways$"):
        run_child("""
            import json, pathlib, sys
            pathlib.Path(request["out"], "outcome.json").write_text(
                json.dumps({"status": "refused", "message": "the model is wrong\\n in two   ways"}))
            sys.exit(2)
        """)


@pytest.mark.parametrize("body, message", [
    ("import sys; sys.exit(0)", "ended with code 0"),                       # no outcome at all
    ("import os; os.kill(os.getpid(), 9)", r"killed \(SIGKILL\); it may have run out of memory\.$"),
    ("""
        import os, pathlib
        os.symlink("/etc/passwd", pathlib.Path(request["out"], "outcome.json"))
     """, "ended with code 0"),                                               # a link is not an outcome
    ("""
        import pathlib
        pathlib.Path(request["out"], "outcome.json").write_text('{"status": "done", "pad": "' + "x" * (2 << 20) + '"}')
     """, "ended with code 0"),                                               # too large to read
    ("""
        import json, pathlib, sys
        pathlib.Path(request["out"], "outcome.json").write_text(json.dumps({"status": "refused"}))
        sys.exit(2)
     """, "ended with code 2"),                                               # a refusal needs its reason
])
def test_a_child_that_lies_or_dies_is_a_sandbox_error(body, message):
    with pytest.raises(SandboxError, match=message):
        run_child(body)


def test_a_child_that_hangs_is_stopped_at_the_time_limit():
    with pytest.raises(SandboxError, match="longer than"):
        run_child("import time; time.sleep(600)", timeout=3)


def test_a_child_over_its_cpu_time_is_named():
    with pytest.raises(SandboxError, match="CPU time"):
        run_child("while True: pass", limits=Limits(cpu_seconds=1))


def test_the_whole_process_group_is_gone_afterwards():
    _, child = run_child("""
        import json, pathlib, subprocess
        subprocess.Popen(["sleep", "300"])
        pathlib.Path(request["out"], "outcome.json").write_text(json.dumps({"status": "done"}))
    """)
    with pytest.raises(ProcessLookupError):
        os.killpg(child.process.pid, 0)
