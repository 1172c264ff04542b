"""The audit from files to files, in this process: load a model package and a probe set, run the
battery, write report.html, report.pdf and findings.json.

This loads the model here, so it is for models that are trusted or already confined: the
sandboxed child (auditsvc.sandbox.child) calls it, and so do tests and benchmarks on models they
built themselves. Uploaded models go through `auditsvc.sandbox`."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .battery import AuditOptions, AuditResult, ModelMeta, Progress, StepReport, audit, load_model, open_probe_set
from .reports.render import write_report


@dataclass
class AuditFiles:
    result: AuditResult
    html: Path
    pdf: Path
    findings: Path


def load_and_audit(model: Path, dataset: Path, *, meta: ModelMeta | Path | None = None,
                   reference: Path | None = None, reference_meta: ModelMeta | Path | None = None,
                   options: AuditOptions | None = None, progress: Progress | None = None,
                   dataset_label: str | None = None, steps: StepReport | None = None) -> AuditResult:
    """Load and audit; raises BadInput (one line) before any work on bad input. progress and steps: as
    `battery.audit` takes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model(Path(model), meta)
        loaded_reference = load_model(Path(reference), reference_meta) if reference else None
        with open_probe_set(Path(dataset), loaded.meta.classes) as probe:
            probe.label = dataset_label or probe.label
            return audit(loaded, probe, options, loaded_reference, progress, steps)


def write_outputs(result: AuditResult, out_dir: Path, changes: dict[str, Any] | None = None,
                  cover: dict[str, str] | None = None) -> AuditFiles:
    """The three files appear in out_dir together or not at all. cover: the report cover's audit fields."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".audit-", dir=out_dir))
    try:
        written = write_report(result, staging, changes, cover)
        final = {key: out_dir / path.name for key, path in written.items()}
        for key, path in written.items():
            os.replace(path, final[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return AuditFiles(result, final["html"], final["pdf"], final["json"])
