"""The confined side of a job: `python -I -m auditsvc.sandbox.child audit|check [--prime]`.

It imports the battery first and says it is ready, so a worker can start it before the next
job arrives; then it reads one request (a JSON line on stdin), runs it, and writes
`outcome.json` to its output folder. Its stdout carries only protocol lines (ready, progress, the
steps of an audit: each battery section, then the report files); whatever the model or a library
prints goes to stderr, the job's log.

Exit codes: 0 done, 2 refused (bad input, the message is for the user), 1 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

EXIT_DONE, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
REPORT_STEP = "report"   # the audit's last step, after the battery's sections: writing the report files
SECONDS_BETWEEN = 0.5    # between two progress lines of one stage, or two lines of one running step


class Protocol:
    """JSON lines to the parent, on a private copy of stdout."""

    def __init__(self):
        self.stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)   # a model's or a library's prints must not pose as protocol lines
        self.last = (0.0, "")
        self.last_step = (0.0, "", "")

    def send(self, **message) -> None:
        self.stream.write(json.dumps(message) + "\n")

    def progress(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage != self.last[1] or now - self.last[0] >= SECONDS_BETWEEN:
            self.last = (now, stage)
            self.send(progress=round(float(fraction), 4), stage=str(stage)[:200])

    def step(self, name: str, status: str, fraction: float) -> None:
        """A step's status at once when it changes; a running step's fraction now and then."""
        now = time.monotonic()
        if (name, status) != self.last_step[1:] or now - self.last_step[0] >= SECONDS_BETWEEN:
            self.last_step = (now, name, status)
            self.send(step=str(name)[:100], status=str(status)[:20], fraction=round(float(fraction), 4))


def check(request: dict[str, Any], progress: Callable, steps: Callable | None = None) -> dict[str, Any]:
    from auditsvc.battery import ModelMeta, load_model

    model = request["model"]
    loaded = load_model(Path(model["path"]), ModelMeta.from_dict(model["meta"]))
    return {"format": loaded.format, "sha256": loaded.sha256}


def audit(request: dict[str, Any], progress: Callable, steps: Callable | None = None) -> dict[str, Any]:
    """progress(fraction, stage) for the audit; steps(name, status, fraction) for each section, then the report."""
    from auditsvc.battery import AuditOptions, ModelMeta
    from auditsvc.battery.progress import no_steps
    from auditsvc.pipeline import load_and_audit, write_outputs
    from auditsvc.reports.changes import changes_since

    steps = steps or no_steps

    def battery_progress(fraction: float, stage: str) -> None:
        # The battery's "done" is not the audit's: the report files are written after it.
        progress(fraction, "writing the report" if stage == "done" else stage)

    model, reference, dataset = request["model"], request.get("reference"), request["dataset"]
    _check_sections(request["options"].get("sections"))
    result = load_and_audit(Path(model["path"]), Path(dataset["path"]), meta=ModelMeta.from_dict(model["meta"]),
                            reference=Path(reference["path"]) if reference else None,
                            reference_meta=ModelMeta.from_dict(reference["meta"]) if reference else None,
                            options=AuditOptions(**request["options"]), progress=battery_progress,
                            dataset_label=dataset.get("label"), steps=steps)
    result.environment["isolation"] = request["isolation"]
    previous = request.get("previous")
    changes = changes_since(previous, result.findings_json()) if previous else None
    steps(REPORT_STEP, "running", 0.0)
    write_outputs(result, Path(request["out"]), changes, cover=request.get("cover"))
    steps(REPORT_STEP, "ok", 1.0)
    return {"verdict": result.verdict, "findings": len(result.findings)}


def _check_sections(names: list[str] | None) -> None:
    from auditsvc.battery import BadInput, section_names

    unknown = sorted(set(names or []) - set(section_names()))
    if unknown:
        raise BadInput(f"AUDITSVC_SECTIONS names unknown sections: {', '.join(unknown)}; known: "
                       f"{', '.join(section_names())}")


ACTIONS = {"check": check, "audit": audit}


def _warm_up(action: str, prime: bool) -> None:
    """Import what the job needs before saying ready; a child that waits for its job (`--prime`) also
    pays the first-run costs then, so that its audit runs as fast as in a process that ran one before."""
    from auditsvc.battery import load_model  # noqa: F401
    if action == "audit":
        import matplotlib

        matplotlib.use("Agg")
        import weasyprint  # noqa: F401

        import auditsvc.pipeline  # noqa: F401
        from auditsvc.battery import section_names

        section_names()
        if prime:
            _prime()


def _prime() -> None:
    """One-time costs paid while waiting, not during the audit: a whole audit of a tiny model of our own
    (torch.export's first decomposition, the font caches, the first figures and PDF). Measured in
    bench/sandbox.py: without it a waiting child's audit took 5 s longer than the same audit in a
    process that had run one before."""
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    from auditsvc.battery import AuditOptions, ModelMeta
    from auditsvc.demo.nets import export, tiny_resnet
    from auditsvc.pipeline import load_and_audit, write_outputs

    classes = ["a", "b"]
    with tempfile.TemporaryDirectory(prefix="prime-") as scratch:
        root = Path(scratch)
        torch.export.save(export(tiny_resnet(len(classes)).eval(), (3, 16, 16)), root / "model.pt2")
        pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        for label in classes:
            (root / "probe" / label).mkdir(parents=True)
            for index in range(2):
                Image.fromarray(pixels).save(root / "probe" / label / f"{index}.png")
        meta = ModelMeta.from_dict({"name": "prime", "version": "0", "classes": classes,
                                    "input": {"size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.25] * 3}})
        result = load_and_audit(root / "model.pt2", root / "probe", meta=meta, options=AuditOptions(samples=2))
        write_outputs(result, root / "out")


def main() -> int:
    protocol = Protocol()
    warnings.simplefilter("ignore")
    action = sys.argv[1] if len(sys.argv) > 1 else "audit"
    _warm_up(action, prime="--prime" in sys.argv[2:])
    protocol.send(ready=True)
    line = sys.stdin.readline()
    if not line:
        return EXIT_FAILED   # the parent went away before giving a job
    request = json.loads(line)
    out = Path(request["out"])
    from auditsvc.battery import BadInput

    try:
        data = ACTIONS[request["action"]](request, protocol.progress, protocol.step)
    except BadInput as exc:
        _outcome(out, status="refused", message=str(exc))
        return EXIT_REFUSED
    except MemoryError:
        _outcome(out, status="failed", message="the audit ran out of memory inside the sandbox")
        return EXIT_FAILED
    except Exception as exc:
        traceback.print_exc()
        _outcome(out, status="failed", message=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        return EXIT_FAILED
    _outcome(out, status="done", **data)
    return EXIT_DONE


def _outcome(out: Path, **fields) -> None:
    (out / "outcome.json").write_text(json.dumps(fields), encoding="utf-8")


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)   # the files are written and closed; tearing torch down would only make the parent wait
