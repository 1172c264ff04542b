"""python -m auditsvc.demo --out DIR [--seed N]: build the tank demo (cached) and audit both models.

Writes DIR/{shortcut,clean,probe} (the demo) and DIR/reports/{shortcut,clean}/ (report.html,
report.pdf, findings.json), and prints where they are.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ..battery import AuditOptions
from ..pipeline import load_and_audit, write_outputs
from .build import build_demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m auditsvc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the demo and its reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-only", action="store_true", help="build the models and probe set, audit nothing")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    built = build_demo(args.out, seed=args.seed)
    print("tank demo" + (" (cached)" if built["cached"] else f" built in {built['build_seconds']:.0f} s"))
    for name, accuracy in built["accuracy"].items():
        print(f"  {name:9} on held-out scenes: weather-aligned {accuracy['aligned']:.1%}, "
              f"weather-flipped {accuracy['flipped']:.1%}")
    if args.build_only:
        return
    probe = Path(built["paths"]["probe"])
    # The shortcut model is audited against the clean one as its reference: where do their layers diverge?
    jobs = {"shortcut": (Path(built["paths"]["shortcut"]), Path(built["paths"]["clean"])),
            "clean": (Path(built["paths"]["clean"]), None)}
    for outcome in audit_in_parallel(jobs, probe, args.out / "reports", args.seed):
        print(f"\naudit of the {outcome['name']} model: {outcome['verdict'].upper()} in {outcome['seconds']:.0f} s")
        for severity, title in outcome["findings"]:
            print(f"  [{severity}] {title}")
        print("\n".join(f"  {path}" for path in outcome["files"]))


def audit_in_parallel(jobs: dict[str, tuple[Path, Path | None]], probe: Path, reports: Path, seed: int) -> list[dict]:
    """Audit the models side by side, one process each with its share of the cores: the two audits
    are independent, and one process with all threads leaves cores idle in the battery's many
    small steps. Results come back in the order of `jobs`."""
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(audit_one, name, model, probe, reference, reports / name, seed, threads)
                   for name, (model, reference) in jobs.items()]
        return [future.result() for future in futures]


def audit_one(name: str, model: Path, probe: Path, reference: Path | None, out: Path, seed: int,
              threads: int) -> dict:
    """In a worker process: one audit and its three files; what the parent prints."""
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    result = load_and_audit(model, probe, reference=reference, options=AuditOptions(seed=seed))
    # Models this command built itself are trusted; uploaded ones only ever run in the sandbox.
    result.environment["isolation"] = "this process: the demo's own models, built on this machine"
    files = write_outputs(result, out)
    return {"name": name, "verdict": result.verdict, "seconds": time.perf_counter() - started,
            "findings": [(f.severity, f.title) for f in result.findings],
            "files": [str(files.html), str(files.pdf), str(files.findings)]}

if __name__ == "__main__":
    main()
