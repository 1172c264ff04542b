"""python manage.py audit --model M --dataset D --out DIR ... (the contract in DESIGN.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from auditsvc.battery import registry
from auditsvc.battery.context import AuditOptions
from auditsvc.battery.errors import BadInput
from auditsvc.battery.results import SEVERITY_RANK
from auditsvc.pipeline import audit_to_directory

EXIT_BAD_INPUT = 2
EXIT_VERDICT = 3
VERDICT_RANK = {"pass": 0, "warn": SEVERITY_RANK["warn"], "fail": SEVERITY_RANK["fail"]}


class Command(BaseCommand):
    help = "Audit a trained CNN on a labelled probe set; writes report.html, report.pdf and findings.json."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, type=Path, help="model.pt2 (torch.export) or TorchScript .pt/.ts")
        parser.add_argument("--dataset", required=True, type=Path, help="probe set: directory or .zip, <class>/<image>")
        parser.add_argument("--meta", type=Path, help="model.json (default: beside the model)")
        parser.add_argument("--reference", type=Path, help="a reference model to compare layers with")
        parser.add_argument("--reference-meta", type=Path, help="the reference model's model.json")
        parser.add_argument("--out", required=True, type=Path, help="directory for the report files")
        parser.add_argument("--fail-on", choices=["warn", "fail"], help="exit 3 when the verdict is at or above this")
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        parser.add_argument("--seed", type=int, default=0)

    def _sections(self) -> list[str] | None:
        """AUDITSVC_SECTIONS=shortcuts,looking runs part of the battery (benchmarks, quick checks)."""
        chosen = [name.strip() for name in os.environ.get("AUDITSVC_SECTIONS", "").split(",") if name.strip()]
        if not chosen:
            return None
        unknown = sorted(set(chosen) - set(registry.section_names()))
        if unknown:
            self._bad_input(f"AUDITSVC_SECTIONS names unknown sections: {', '.join(unknown)}")
        return chosen

    def handle(self, *args, **options):
        if options["reference_meta"] and not options["reference"]:
            self._bad_input("--reference-meta needs --reference")
        audit_options = AuditOptions(seed=options["seed"], device=options["device"], sections=self._sections())
        with _ProgressBar(enabled=sys.stderr.isatty()) as bar:
            try:
                files = audit_to_directory(options["model"], options["dataset"], options["out"],
                                           meta=options["meta"], reference=options["reference"],
                                           reference_meta=options["reference_meta"], options=audit_options,
                                           progress=bar.update)
            except BadInput as exc:
                bar.close()
                self._bad_input(str(exc))
        verdict = files.result.verdict
        self.stdout.write(f"verdict: {verdict.upper()} ({len(files.result.findings)} findings)")
        for path in (files.html, files.pdf, files.findings):
            self.stdout.write(f"  {path}")
        if options["fail_on"] and VERDICT_RANK[verdict] >= VERDICT_RANK[options["fail_on"]]:
            sys.exit(EXIT_VERDICT)

    def _bad_input(self, message: str) -> None:
        sys.stderr.write(f"error: {message}\n")
        sys.exit(EXIT_BAD_INPUT)


class _ProgressBar:
    """A tqdm bar on a terminal; one line per stage otherwise (logs, pipelines)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.stage = enabled, None, None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}")
        return self

    def update(self, fraction: float, stage: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(stage[:28].ljust(28))
            self.bar.n = round(fraction * 100)
            self.bar.refresh()
        elif stage != self.stage:
            sys.stderr.write(f"[{fraction:4.0%}] {stage}\n")
        self.stage = stage

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc_info) -> None:
        self.close()
