"""The parent's side of a confined job: a job folder, the child process, its progress and outcome.

A job folder holds `in/` (the child's inputs, read-only to it), `out/` (what it writes) and
`tmp/` (its private /tmp). The child may be started before its inputs are known (a warm child
that has already imported torch); it then gets one request and ends. Everything it sends back
is treated as untrusted data: progress lines are parsed with a length cap, the outcome file
with a size cap, and a child that dies, overruns a limit or the time allowed is killed with
its whole process group and reported in one line.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from auditsvc.battery import BadInput

from .confinement import Confinement, Mount
from .folders import temporary_folder

MAX_LINE = 4096
MAX_OUTCOME_BYTES = 1 << 20
JOB_ROOT = "/job"
Progress = Callable[[float, str], None]
Steps = Callable[[str, str, float], None]   # a step's name, status and fraction done, as the child reports them
STEP_STATUSES = ("running", "ok", "error", "skipped")


class SandboxError(RuntimeError):
    """The confined child failed for a reason that is not the user's input: one line, for the log and the user."""


@dataclass
class Job:
    """A job folder and the mounts that show it to the child."""

    confinement: Confinement
    root: Path = field(default_factory=lambda: temporary_folder("job", os.environ.get("AUDITSVC_SCRATCH")))
    mounts: list[Mount] = field(default_factory=list)
    started: bool = False

    def __post_init__(self):
        os.chmod(self.root, 0o711)   # the sandbox user may pass through, not list
        for name in ("in", "out", "tmp"):
            (self.root / name).mkdir(mode=0o755)
        for name in ("out", "tmp"):
            self.confinement.prepare_writable(self.root / name)
        self.mounts = [Mount(self.root / "in", f"{JOB_ROOT}/in"), Mount(self.root / "out", f"{JOB_ROOT}/out", True),
                       Mount(self.root / "tmp", "/tmp", True)]

    @property
    def in_dir(self) -> Path:
        return self.root / "in"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    def inside(self, path: Path) -> str:
        """How the child names a file of this job folder."""
        relative = Path(path).relative_to(self.root)
        if not self.confinement.confined:
            return str(path)
        if relative.parts[0] == "tmp":
            return "/" + relative.as_posix()
        return f"{JOB_ROOT}/{relative.as_posix()}"

    def add_input(self, source: Path, name: str) -> str:
        """Show the child a file or folder of the caller: a read-only bind where the sandbox user may read
        it, otherwise a copy in in/ (always, once the child has started: its mounts are fixed)."""
        source = Path(source).resolve()
        if source.is_relative_to(self.in_dir.resolve()):   # written there by the caller already
            _make_readable(self.in_dir)
            return self.inside(source)
        if self.confinement.confined and not self.started and _world_readable(source):
            mount = Mount(source, f"{JOB_ROOT}/inputs/{name}")
            self.mounts.append(mount)
            return mount.inside
        target = self.in_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copyfile(source, target)
        _make_readable(self.in_dir)
        return self.inside(target)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Child:
    """One confined child process for one job."""

    def __init__(self, job: Job, action: str, device: str = "cpu", program: list[str] | None = None):
        """program: what Python runs, `-m auditsvc.sandbox.child <action>` unless a test stands in for it."""
        self.job, self.action, self.timeout = job, action, None
        job.started = True
        program = program or ["-m", "auditsvc.sandbox.child", action]
        command = job.confinement.command([sys.executable, "-I", *program], job.mounts, device)
        tmp = job.inside(job.root / "tmp")
        self.log_path = job.root / "child.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            env=job.confinement.environment(tmp), cwd=job.root / "tmp",
                                            start_new_session=True, close_fds=True)
        self.ready = False
        self._partial, self._dropping = b"", False   # stdout read so far after its last complete line

    def run(self, request: dict[str, Any], progress: Progress | None = None, timeout: float | None = None,
            steps: Steps | None = None) -> dict:
        """Give the child its request, relay its progress (and its steps), and return its outcome; BadInput
        when it refused the input, SandboxError when it failed otherwise. An exception raised by `progress`
        or `steps` (the caller stopping the job) kills the child and goes up to the caller."""
        deadline = time.monotonic() + timeout if timeout else None
        self.timeout = timeout
        report = progress or (lambda fraction, stage: None)
        step = steps or (lambda name, status, fraction: None)
        request = {**request, "out": self.job.inside(self.job.out_dir), "action": self.action}
        try:
            self.wait_ready(deadline)
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.close()
            for message in self._messages(deadline):
                if _is_number(message.get("progress")) and isinstance(message.get("stage"), str):
                    report(_fraction(message["progress"]), message["stage"][:200])
                elif (isinstance(message.get("step"), str) and message.get("status") in STEP_STATUSES
                      and _is_number(message.get("fraction"))):
                    step(message["step"][:100], message["status"], _fraction(message["fraction"]))
            code = self.process.wait(timeout=_remaining(deadline, minimum=5))
        except (BrokenPipeError, subprocess.TimeoutExpired):
            code = self.process.poll()
        finally:
            self.kill()
        return self._outcome(code)

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream and not stream.closed:
                stream.close()

    def wait_ready(self, deadline: float | None) -> None:
        if self.ready:
            return
        for message in self._messages(deadline):
            if message.get("ready") is True:
                self.ready = True
                return
        raise SandboxError(_sentences("the sandboxed process did not start.", self._log_tail()))

    def _messages(self, deadline: float | None):
        """JSON objects from the child's stdout until it closes; anything else is ignored."""
        for line in self._lines(deadline):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message

    def _lines(self, deadline: float | None):
        """The child's stdout line by line, each as soon as it is complete (a buffered reader would keep
        lines that came in one read until the child writes again); longer lines than MAX_LINE are dropped."""
        stream = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while True:
                if not selector.select(timeout=_remaining(deadline)):
                    raise SandboxError(f"the job took longer than the {self.timeout / 60:.0f} minutes allowed; stopped")
                chunk = os.read(stream, 1 << 16)
                if not chunk:
                    return
                *lines, self._partial = (self._partial + chunk).split(b"\n")
                for line in lines:
                    if self._dropping:   # the rest of a line that was too long
                        self._dropping = False
                    elif len(line) <= MAX_LINE:
                        yield line
                if len(self._partial) > MAX_LINE:
                    self._partial, self._dropping = b"", True

    def _outcome(self, code: int | None) -> dict:
        outcome = _read_outcome(self.job.out_dir / "outcome.json")
        status, message = outcome.get("status"), _one_line(outcome.get("message"))
        if code == 2 and status == "refused" and message:
            raise BadInput(message)
        if code == 0 and status == "done":
            return outcome
        if status == "failed" and message:
            raise SandboxError(message)
        raise SandboxError(self._death(code))

    def _death(self, code: int | None) -> str:
        limits = self.job.confinement.limits
        number = _signal_number(code, self.job.confinement.confined)
        if number:
            name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
            if number == signal.SIGXCPU:
                return f"the model used more than the {limits.cpu_seconds} s of CPU time the sandbox allows"
            if number == signal.SIGXFSZ:
                return f"the audit tried to write a file larger than the {limits.file_mb} MiB the sandbox allows"
            return _sentences(f"the sandboxed process was killed ({name}); it may have run out of memory.",
                              self._log_tail())
        return _sentences(f"the sandboxed process ended with code {code}.", self._log_tail())

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, os.path.getsize(self.log_path) - 2000))
                lines = log.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return f"Last log line: {lines[-1][:300]}" if lines else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def _sentences(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _signal_number(code: int | None, confined: bool) -> int:
    """The signal that ended the child: negative codes from Popen, 128 + n from bubblewrap's init."""
    if code is not None and code < 0:
        return -code
    if confined and code is not None and 128 < code < 128 + 65:
        return code - 128
    return 0


def _read_outcome(path: Path) -> dict:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_OUTCOME_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _one_line(value: Any) -> str:
    return " ".join(value.split())[:1000] if isinstance(value, str) else ""


def _remaining(deadline: float | None, minimum: float = 0.0) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), minimum)


def _world_readable(path: Path) -> bool:
    """Whether the unprivileged sandbox user can read the file or every file and folder below it."""
    if os.geteuid() != 0:
        return os.access(path, os.R_OK)
    paths = [path] + (list(path.rglob("*")) if path.is_dir() else [])
    for item in paths:
        mode = item.lstat().st_mode
        needed = 0o005 if item.is_dir() else 0o004
        if mode & needed != needed:
            return False
    return True


def _make_readable(path: Path) -> None:
    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        if not item.is_symlink():
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
