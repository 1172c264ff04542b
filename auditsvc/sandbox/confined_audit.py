"""Audits and model checks run confined: what the command line, the workers and uploads call.

    audit = ConfinedAudit(device="cpu")         # starts the child: it imports torch meanwhile
    audit.add_model(path, meta)                 # meta: model.json as a ModelMeta (or its dict)
    audit.add_dataset(path, label)
    outcome = audit.run(out_dir, options={...}) # report.html, report.pdf, findings.json in out_dir

The files the child wrote are checked (regular files, sizes, findings.json's shape) before they
are copied to `out_dir`, so a child that misbehaves cannot write anywhere else or hand back
something the service would choke on. When a report signing key is configured, report.pdf is
signed here, after the child is done: the key never enters the sandbox, and only a report.pdf
that is a consistent record of the checked findings.json is signed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditsvc.battery import BadInput, ModelMeta
from auditsvc.reports import record

from .confinement import Confinement
from .supervisor import Child, Job, Progress, SandboxError, Steps

REPORT_FILES = {"html": "report.html", "pdf": "report.pdf", "json": "findings.json"}
MAX_REPORT_BYTES = 1 << 30
MAX_FINDINGS_BYTES = 64 << 20
VERDICTS = {"pass", "warn", "fail"}


@dataclass
class AuditOutcome:
    findings_json: dict[str, Any]   # the findings.json contract, as written
    html: Path
    pdf: Path
    findings: Path
    isolation: str

    @property
    def verdict(self) -> str:
        return self.findings_json["verdict"]


class ConfinedAudit:
    """One audit in one sandboxed child. Use as a context manager (or call close) to remove the job folder."""

    def __init__(self, device: str = "cpu", confinement: Confinement | None = None, start: bool = True,
                 prime: bool = False):
        """prime: the child runs a tiny audit of its own before it is ready, for one that waits for its job."""
        self.confinement = confinement or Confinement.from_env()
        self.device, self.prime = device, prime
        self.job = Job(self.confinement)
        self.inputs: dict[str, Any] = {}
        self.child: Child | None = None
        if start:
            self.start()

    def start(self) -> "ConfinedAudit":
        if self.child is None:
            program = ["-m", "auditsvc.sandbox.child", "audit"] + (["--prime"] if self.prime else [])
            self.child = Child(self.job, "audit", self.device, program)
        return self

    def input_path(self, role: str, filename: str) -> Path:
        """Where a caller may write an input itself (a worker copying from storage) before adding it."""
        folder = self.job.in_dir / role
        folder.mkdir(exist_ok=True)
        return folder / filename

    def add_model(self, path: Path, meta: ModelMeta | dict, role: str = "model") -> None:
        inside = self.job.add_input(path, f"{role}/{Path(path).name}")
        self.inputs[role] = {"path": inside, "meta": _plain_meta(meta)}

    def add_dataset(self, path: Path, label: str | None = None) -> None:
        self.inputs["dataset"] = {"path": self.job.add_input(path, f"dataset/{Path(path).name}"),
                                  "label": label or Path(path).name}

    def run(self, out_dir: Path, options: dict[str, Any], previous: dict | None = None,
            progress: Progress | None = None, timeout: float | None = None,
            cover: dict[str, str] | None = None, steps: Steps | None = None) -> AuditOutcome:
        """cover: the audit's cover fields (audit number, organization, requester, release tag); steps:
        each battery section's status and fraction done as it runs, then the report files' (step "report")."""
        self.start()
        signer = _configured_signer()   # a bad key fails before the audit, not after
        request = {**self.inputs, "options": options, "previous": previous, "cover": cover or {},
                   "isolation": self.confinement.describe()}
        self.child.run(request, progress, timeout, steps)
        written = _checked_outputs(self.job.out_dir)
        findings = _findings(written["json"])
        if signer is not None:
            written["pdf"] = _signed_report(written, signer, self.job.root / "signed")
        paths = _publish(written, Path(out_dir))
        return AuditOutcome(findings, paths["html"], paths["pdf"], paths["json"], self.confinement.describe())

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
        self.job.remove()

    def __enter__(self) -> "ConfinedAudit":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_model(path: Path, meta: ModelMeta | dict, timeout: float = 600) -> dict[str, Any]:
    """Load the model and run one forward pass on the declared input, confined. BadInput when it fails."""
    job = Job(Confinement.from_env())
    try:
        inside = job.add_input(path, f"model/{Path(path).name}")
        return Child(job, "check").run({"model": {"path": inside, "meta": _plain_meta(meta)}}, timeout=timeout)
    finally:
        job.remove()


def _plain_meta(meta: ModelMeta | dict) -> dict:
    """model.json as the child is given it (a line of JSON): the checked value's plain form."""
    return (meta if isinstance(meta, ModelMeta) else ModelMeta.from_dict(meta)).as_dict()


def _checked_outputs(out: Path) -> dict[str, Path]:
    written = {}
    for key, name in REPORT_FILES.items():
        path = out / name
        if path.is_symlink() or not path.is_file():
            raise SandboxError(f"the sandboxed audit did not write {name}")
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise SandboxError(f"the sandboxed audit wrote a {name} larger than {MAX_REPORT_BYTES >> 20} MiB")
        written[key] = path
    return written


def _findings(path: Path) -> dict[str, Any]:
    """findings.json as written by the child, held to the contract's shape before anyone trusts it."""
    if path.stat().st_size > MAX_FINDINGS_BYTES:
        raise SandboxError(f"findings.json is larger than {MAX_FINDINGS_BYTES >> 20} MiB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise SandboxError("the sandboxed audit wrote a findings.json that is not valid JSON") from None
    if not (isinstance(data, dict) and data.get("schema") == 1 and data.get("verdict") in VERDICTS
            and isinstance(data.get("findings"), list) and isinstance(data.get("metrics"), dict)
            and isinstance(data.get("sections"), dict)
            and all(_is_finding(f) for f in data["findings"])):
        raise SandboxError("the sandboxed audit wrote a findings.json that does not follow schema 1")
    return data


def _is_finding(finding: Any) -> bool:
    return (isinstance(finding, dict)
            and all(isinstance(finding.get(key), str) for key in ("code", "category", "severity", "title", "summary"))
            and finding["severity"] in ("info", "warn", "fail") and isinstance(finding.get("evidence", {}), dict))


def _configured_signer():
    try:
        return record.configured_signer()
    except record.RecordError as exc:
        raise SandboxError(f"report signing: {exc}") from None


def _signed_report(written: dict[str, Path], signer, folder: Path) -> Path:
    """report.pdf signed by this process, once it is checked against the findings.json written with it."""
    try:
        signed = record.seal(written["pdf"].read_bytes(), written["json"].read_bytes(), signer)
    except record.RecordError as exc:
        raise SandboxError(f"report.pdf was not signed: {exc}") from None
    folder.mkdir(exist_ok=True)
    (folder / "report.pdf").write_bytes(signed)
    return folder / "report.pdf"


def _publish(written: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    """Copy the three files into out_dir, all staged first, then each replacing the old one at once;
    the copies belong to the caller, not to the sandbox user."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = {key: out_dir / f".{source.name}.{os.getpid()}.part" for key, source in written.items()}
    try:
        for key, source in written.items():
            shutil.copyfile(source, staged[key])
        for key, source in written.items():
            os.replace(staged[key], out_dir / source.name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return {key: out_dir / source.name for key, source in written.items()}


__all__ = ["AuditOutcome", "BadInput", "ConfinedAudit", "SandboxError", "check_model"]
