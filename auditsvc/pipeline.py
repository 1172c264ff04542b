"""The audit from files to files: load a model package and a probe set, run the battery,
write report.html, report.pdf and findings.json. The command line and the workers call this."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .battery.context import AuditOptions, Progress
from .battery.dataset import ProbeSet
from .battery.loading import load_model
from .battery.results import AuditResult
from .battery.runner import run_audit
from .reports.render import write_report


@dataclass
class AuditFiles:
    result: AuditResult
    html: Path
    pdf: Path
    findings: Path


def audit_to_directory(model: Path, dataset: Path, out_dir: Path, *, meta: Path | None = None,
                       reference: Path | None = None, reference_meta: Path | None = None,
                       options: AuditOptions | None = None, progress: Progress | None = None,
                       changes: dict[str, Any] | None = None) -> AuditFiles:
    """Raises BadInput before anything is written; the three files appear together or not at all."""
    loaded = load_model(Path(model), meta)
    loaded_reference = load_model(Path(reference), reference_meta) if reference else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ProbeSet(Path(dataset), loaded.meta.classes) as probe:
        result = run_audit(loaded, probe, options, loaded_reference, progress)
    staging = Path(tempfile.mkdtemp(prefix=".audit-", dir=out_dir))
    try:
        written = write_report(result, staging, changes)
        final = {key: out_dir / path.name for key, path in written.items()}
        for key, path in written.items():
            os.replace(path, final[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return AuditFiles(result, final["html"], final["pdf"], final["json"])
