"""Uploaded models run here: in a bubblewrap sandbox, one child process per job.

A model file is code. The parent process never loads one; it starts a confined child
(`child.py`) that loads the model, runs the battery and writes the report files, and reads
back only checked files and JSON. See `confinement.py` for what the child can reach.
"""

from .child import REPORT_STEP
from .confined_audit import AuditOutcome, ConfinedAudit, check_model
from .confinement import Confinement, Limits, SandboxUnavailable, sandbox_device
from .supervisor import SandboxError

__all__ = ["REPORT_STEP", "AuditOutcome", "ConfinedAudit", "Confinement", "Limits", "SandboxError",
           "SandboxUnavailable", "check_model", "sandbox_device"]
