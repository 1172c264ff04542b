"""python manage.py audit --model M --dataset D --out DIR ...: audit a model from files.

The arguments, model.json, the model archive's members and --out are checked here; the model
itself is only ever loaded in a sandboxed child process (auditsvc.sandbox), which also reads
the probe set and writes the report. Exit 0, 3 when the verdict reaches --fail-on, 2 with one
line for bad input, 1 with one line when the audit could not run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from auditsvc.battery import BadInput, Verdict, load_meta, model_kind

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_VERDICT = 3
MAX_SEED = 2**32 - 1


def seed(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEED:
        raise BadInput(f"--seed must be a whole number from 0 to {MAX_SEED}, got {text[:40]!r}")
    return int(text)


class Command(BaseCommand):
    help = "Audit a trained CNN on a labelled probe set; writes report.html, report.pdf and findings.json."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, type=Path,
                            help="model.pt2 (torch.export), TorchScript .pt/.ts, model.onnx or model.keras (Keras 3)")
        parser.add_argument("--dataset", required=True, type=Path, help="probe set: directory or .zip, <class>/<image>")
        parser.add_argument("--meta", type=Path, help="model.json (default: beside the model)")
        parser.add_argument("--reference", type=Path, help="a reference model to compare layers with")
        parser.add_argument("--reference-meta", type=Path, help="the reference model's model.json")
        parser.add_argument("--out", required=True, type=Path, help="directory for the report files")
        parser.add_argument("--fail-on", choices=["warn", "fail"], help="exit 3 when the verdict is at or above this")
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        parser.add_argument("--seed", default="0", help=f"0 to {MAX_SEED}")

    def handle(self, *args, **options):
        from auditsvc.sandbox import ConfinedAudit, SandboxError, SandboxUnavailable, sandbox_device

        try:
            inputs = _checked_inputs(options)
            with ConfinedAudit(device=sandbox_device(options["device"])) as audit, \
                    _ProgressBar(enabled=sys.stderr.isatty()) as bar:
                audit.add_model(options["model"], inputs["meta"])
                if options["reference"]:
                    audit.add_model(options["reference"], inputs["reference_meta"], role="reference")
                audit.add_dataset(options["dataset"])
                outcome = audit.run(options["out"], {"seed": inputs["seed"], "device": options["device"],
                                                     "sections": _sections()}, progress=bar.update)
        except BadInput as exc:
            self._exit(EXIT_BAD_INPUT, str(exc))
        except (SandboxUnavailable, SandboxError) as exc:
            self._exit(EXIT_FAILED, str(exc))
        verdict = outcome.verdict
        self.stdout.write(f"verdict: {verdict.upper()} ({len(outcome.findings_json['findings'])} findings)")
        for path in (outcome.html, outcome.pdf, outcome.findings):
            self.stdout.write(f"  {path}")
        if options["fail_on"] and Verdict.of(verdict) >= Verdict(options["fail_on"]):
            sys.exit(EXIT_VERDICT)

    def _exit(self, code: int, message: str) -> None:
        sys.stderr.write(f"error: {' '.join(message.split())}\n")
        sys.exit(code)


def _checked_inputs(options: dict) -> dict:
    """Everything that can be refused without loading the model, before any work starts."""
    if options["reference_meta"] and not options["reference"]:
        raise BadInput("--reference-meta needs --reference")
    chosen_seed = seed(str(options["seed"]))
    model, reference = options["model"], options["reference"]
    model_kind(model)
    meta = load_meta(options["meta"] or model.with_name("model.json"))
    reference_meta = None
    if reference:
        model_kind(reference)
        reference_meta = load_meta(options["reference_meta"] or reference.with_name("model.json"))
    if not options["dataset"].exists():
        raise BadInput(f"dataset {options['dataset']} not found")
    _check_out(options["out"])
    return {"meta": meta, "reference_meta": reference_meta, "seed": chosen_seed}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {out} cannot be created ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out} is not writable")


def _sections() -> list[str] | None:
    """AUDITSVC_SECTIONS=shortcuts,looking runs part of the battery (benchmarks, quick checks)."""
    chosen = [name.strip() for name in os.environ.get("AUDITSVC_SECTIONS", "").split(",") if name.strip()]
    return chosen or None


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
