"""Benchmark: what running the model in the bubblewrap sandbox costs per audit.

One small audit (a ResNet-18-style net at 3x64x64, 64 probe images, sections summary and
performance) timed four ways, each `--repeats` times (median):

  in-process       pipeline.audit_files + write_outputs in this process, imports done:
                   what an audit cost before the sandbox, in a worker that had torch loaded
  warm sandbox     a confined child started (and done importing) before the audit, as a worker
                   keeps one waiting: the audit's wall time from handing over its inputs
  unconfined child the same child with no bubblewrap, started cold: the child process's own cost
  cold sandbox     the confined child started cold: what an upload check or the CLI pays

Sandbox cost per audit = warm sandbox - in-process (the worker path) and cold sandbox -
unconfined child (bubblewrap's own set-up). Also prints the cold child's start-up (imports).

    .venv/bin/python bench/sandbox.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditsvc.battery.context import AuditOptions  # noqa: E402
from auditsvc.battery.meta import ModelMeta  # noqa: E402
from auditsvc.demo.nets import export, resnet18  # noqa: E402
from auditsvc.pipeline import audit_files, write_outputs  # noqa: E402
from auditsvc.sandbox import ConfinedAudit, Confinement, Limits  # noqa: E402

warnings.filterwarnings("ignore")
CLASSES = [f"class_{i}" for i in range(10)]
OPTIONS = {"seed": 0, "device": "cpu", "sections": ["summary", "performance"]}


def build(directory: Path, images: int = 64, side: int = 64) -> tuple[Path, dict, Path]:
    torch.manual_seed(0)
    package = directory / "model"
    package.mkdir()
    torch.export.save(export(resnet18(len(CLASSES)).eval(), (3, side, side)), package / "model.pt2")
    meta = {"name": "sandbox-bench", "version": "1", "classes": CLASSES,
            "input": {"size": [3, side, side], "mean": [0.5] * 3, "std": [0.25] * 3}}
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = directory / "probe" / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return package / "model.pt2", meta, directory / "probe"


def in_process(model: Path, meta: dict, probe: Path, out: Path) -> float:
    started = time.perf_counter()
    result = audit_files(model, probe, meta=ModelMeta.from_dict(meta), options=AuditOptions(**OPTIONS))
    write_outputs(result, out)
    return time.perf_counter() - started


def confined(model: Path, meta: dict, probe: Path, out: Path, confinement: Confinement, warm: bool) -> dict:
    started = time.perf_counter()
    with ConfinedAudit(confinement=confinement) as audit:
        audit.add_model(model, meta)
        audit.add_dataset(probe)
        startup = None
        if warm:
            audit.child.wait_ready(deadline=None)
            startup = time.perf_counter() - started
            started = time.perf_counter()
        audit.run(out, OPTIONS)
    return {"seconds": time.perf_counter() - started, "startup": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    limits = Limits.from_env()
    sandbox, plain = Confinement("bubblewrap", limits), Confinement("unconfined", limits)
    with tempfile.TemporaryDirectory() as scratch:
        model, meta, probe = build(Path(scratch))
        out = Path(scratch) / "out"
        in_process(model, meta, probe, out)  # warm this process's caches once, as a running worker has them
        runs: dict[str, list[float]] = {"in-process": [], "warm sandbox": [], "unconfined child": [],
                                        "cold sandbox": [], "cold start-up (imports)": []}
        for _ in range(args.repeats):
            runs["in-process"].append(in_process(model, meta, probe, out))
            warm = confined(model, meta, probe, out, sandbox, warm=True)
            runs["warm sandbox"].append(warm["seconds"])
            runs["cold start-up (imports)"].append(warm["startup"])
            runs["unconfined child"].append(confined(model, meta, probe, out, plain, warm=False)["seconds"])
            runs["cold sandbox"].append(confined(model, meta, probe, out, sandbox, warm=False)["seconds"])
    median = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in median.items():
        print(f"{name:26s} {value:7.2f} s   (runs: {', '.join(f'{v:.2f}' for v in runs[name])})")
    worker_cost = median["warm sandbox"] - median["in-process"]
    bubblewrap_cost = median["cold sandbox"] - median["unconfined child"]
    print(f"sandbox cost per audit, worker with a waiting child: {worker_cost:+.2f} s")
    print(f"bubblewrap's own cost (cold sandbox - unconfined child): {bubblewrap_cost:+.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"median": median, "runs": runs, "worker_cost": worker_cost,
                                         "bubblewrap_cost": bubblewrap_cost}, indent=2))


if __name__ == "__main__":
    main()
