"""Benchmark: what running the model in the bubblewrap sandbox costs per audit.

One audit (a ResNet-18-style net at 3x64x64, 64 probe images, sections summary and performance)
of a model no process here has seen before (it is built in a process of its own), timed four
ways, each `--repeats` times (median):

  in-process       a process that has imported the battery and run an audit of another model
                   (a long-lived worker before the sandbox) audits this one in itself
  warm sandbox     a confined child started before the audit and primed the same way, as a
                   worker keeps one waiting: the audit's wall time from handing over its inputs
  cold in-process  a fresh process that imports the battery and audits (the command line before
                   the sandbox), imports included
  unconfined child a child process started cold with no bubblewrap
  cold sandbox     the confined child started cold: what an upload check or the CLI pays

Sandbox cost per audit = warm sandbox - in-process (a worker's audit) and cold sandbox -
unconfined child (bubblewrap's own set-up, also timed alone on /bin/true). Also prints a waiting
child's start-up (imports and priming: idle time of a worker between audits).

    .venv/bin/python bench/sandbox.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
CLASSES = [f"class_{i}" for i in range(10)]
OPTIONS = {"seed": 0, "device": "cpu", "sections": ["summary", "performance"]}


def build(directory: Path, images: int = 64, side: int = 64) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from auditsvc.demo.nets import export, resnet18

    torch.manual_seed(0)
    package = directory / "model"
    package.mkdir()
    torch.export.save(export(resnet18(len(CLASSES)).eval(), (3, side, side)), package / "model.pt2")
    meta = {"name": "sandbox-bench", "version": "1", "classes": CLASSES,
            "input": {"size": [3, side, side], "mean": [0.5] * 3, "std": [0.25] * 3}}
    (package / "model.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = directory / "probe" / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def in_process(directory: Path, warm: bool) -> float:
    """In this process: after the same warm-up a waiting sandboxed child does (a worker that ran audits
    before), or from the start of the process, imports included (the command line before the sandbox)."""
    started = time.perf_counter()
    from auditsvc.battery import AuditOptions, load_meta
    from auditsvc.pipeline import load_and_audit, write_outputs
    from auditsvc.sandbox.child import _warm_up

    model = directory / "model" / "model.pt2"
    if warm:
        _warm_up("audit", prime=True)
        started = time.perf_counter()
    result = load_and_audit(model, directory / "probe", meta=load_meta(model.with_name("model.json")),
                         options=AuditOptions(**OPTIONS))
    write_outputs(result, Path(tempfile.mkdtemp()))
    return time.perf_counter() - started


def confined(directory: Path, mode: str, warm: bool) -> dict:
    from auditsvc.sandbox import ConfinedAudit, Confinement, Limits

    model = directory / "model" / "model.pt2"
    started = time.perf_counter()
    with ConfinedAudit(confinement=Confinement(mode, Limits.from_env()), prime=warm) as audit:
        audit.add_model(model, json.loads(model.with_name("model.json").read_text()))
        audit.add_dataset(directory / "probe")
        startup = None
        if warm:
            audit.child.wait_ready(deadline=None)
            startup = time.perf_counter() - started
            started = time.perf_counter()
        audit.run(Path(tempfile.mkdtemp()), OPTIONS)
    return {"seconds": time.perf_counter() - started, "startup": startup}


def bubblewrap_start_up(repeats: int = 20) -> float:
    """The confinement alone: `true` run through the sandbox minus run through prlimit only, median."""
    from auditsvc.sandbox import Confinement, Limits
    from auditsvc.sandbox.supervisor import Job

    timings = {}
    for mode in ("bubblewrap", "unconfined"):
        confinement = Confinement(mode, Limits.from_env())
        job = Job(confinement)
        command = confinement.command(["/bin/true"], job.mounts)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(command, check=True, env=confinement.environment("/tmp"))
            samples.append(time.perf_counter() - started)
        job.remove()
        timings[mode] = statistics.median(samples)
    return timings["bubblewrap"] - timings["unconfined"]


def in_a_fresh_process(*args: str) -> str:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)        # steps run in fresh processes
    parser.add_argument("--in-process", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cold-in-process", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return build(args.build)
    if args.in_process or args.cold_in_process:
        return print(f"{in_process(args.in_process or args.cold_in_process, warm=bool(args.in_process)):.4f}")
    runs: dict[str, list[float]] = {"in-process": [], "warm sandbox": [], "cold in-process": [],
                                    "unconfined child": [], "cold sandbox": [], "waiting child start-up": []}
    with tempfile.TemporaryDirectory() as scratch:
        workload = Path(scratch)
        in_a_fresh_process("--build", str(workload))
        for _ in range(args.repeats):
            runs["in-process"].append(float(in_a_fresh_process("--in-process", str(workload)).splitlines()[-1]))
            runs["cold in-process"].append(
                float(in_a_fresh_process("--cold-in-process", str(workload)).splitlines()[-1]))
            warm = confined(workload, "bubblewrap", warm=True)
            runs["warm sandbox"].append(warm["seconds"])
            runs["waiting child start-up"].append(warm["startup"])
            runs["unconfined child"].append(confined(workload, "unconfined", warm=False)["seconds"])
            runs["cold sandbox"].append(confined(workload, "bubblewrap", warm=False)["seconds"])
    median = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in median.items():
        print(f"{name:24s} {value:7.2f} s   (runs: {', '.join(f'{v:.2f}' for v in runs[name])})")
    worker_cost = median["warm sandbox"] - median["in-process"]
    bubblewrap_cost = median["cold sandbox"] - median["unconfined child"]
    cold_cost = median["cold sandbox"] - median["cold in-process"]
    print(f"sandbox cost per audit, worker with a waiting child: {worker_cost:+.2f} s")
    print(f"bubblewrap's own cost (cold sandbox - unconfined child): {bubblewrap_cost:+.2f} s")
    print(f"a cold audit (command line, upload check) against one in a fresh process: {cold_cost:+.2f} s")
    start_up = bubblewrap_start_up()
    print(f"bubblewrap's start-up alone (namespaces, mounts, user switch; median of 20): {start_up * 1000:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"median": median, "runs": runs, "worker_cost": worker_cost,
                                         "bubblewrap_cost": bubblewrap_cost, "cold_cost": cold_cost,
                                         "bubblewrap_start_up": start_up}, indent=2))


if __name__ == "__main__":
    main()
