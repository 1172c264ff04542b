"""A worker keeps one sandboxed child waiting, so the next audit does not wait for torch to import.

The child is started (and imports the battery) while the worker is idle; an audit takes it,
gives it its inputs and its one request, and the worker starts the next. A child serves one
audit only: nothing of one organization's audit is left in the process that runs the next.
"""

from __future__ import annotations

import atexit
import threading

from .confined_audit import ConfinedAudit
from .confinement import sandbox_device

_waiting: dict[str, ConfinedAudit] = {}
_lock = threading.Lock()


def take(device: str) -> ConfinedAudit:
    """The waiting child for this device if it is still alive, else a new one."""
    device = sandbox_device(device)
    with _lock:
        audit = _waiting.pop(device, None)
    if audit is not None and audit.child is not None and audit.child.process.poll() is None:
        return audit
    if audit is not None:
        audit.close()
    return ConfinedAudit(device=device)


def prepare(device: str) -> None:
    """Start the child for the next audit now (it imports in its own process)."""
    device = sandbox_device(device)
    with _lock:
        if device not in _waiting:
            _waiting[device] = ConfinedAudit(device=device, prime=True)


@atexit.register
def _close_waiting() -> None:
    with _lock:
        for audit in _waiting.values():
            audit.close()
        _waiting.clear()
