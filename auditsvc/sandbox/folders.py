"""Temporary folders (a sandbox's job folder, a worker's scratch folder) named after the machine and the
process that made them: `auditsvc-<kind>-<host>-<pid>-<random>`. A process removes its own when it is
done; one that was killed (SIGKILL, a lost container) cannot, so the first folder a process makes on a
machine also removes those of that machine's processes that no longer run. A job folder holds copies
of a model and a probe set: left behind, they would fill the disk."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
_NAME = re.compile(r"^auditsvc-(?:job|scratch)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
_swept = threading.Event()


def temporary_folder(kind: str, parent: str | None = None) -> Path:
    """A new private folder for `kind` ("job" or "scratch") in `parent` (else the system's temp folder)."""
    if not _swept.is_set():
        _swept.set()
        remove_left_behind(parent, os.environ.get("AUDITSVC_SCRATCH"))
    return Path(tempfile.mkdtemp(prefix=f"auditsvc-{kind}-{_HOST}-{os.getpid()}-", dir=parent))


def remove_left_behind(*parents: str | None) -> list[Path]:
    """The folders of this machine's processes that no longer run, in `parents` and the temp folder, removed."""
    removed = left_behind(*parents)
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def left_behind(*parents: str | None) -> list[Path]:
    """The folders of this machine's processes that no longer run, in `parents` and the temp folder."""
    found = []
    for parent in {Path(p or tempfile.gettempdir()) for p in (*parents, None)}:
        for folder in parent.glob("auditsvc-*"):
            match = _NAME.match(folder.name)
            if match and match["host"] == _HOST and not _running(int(match["pid"])) and folder.is_dir():
                found.append(folder)
    return found


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's: running
        return True
    return True
