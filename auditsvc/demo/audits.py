"""The demo's two audits, side by side in worker processes (a module of its own: a spawned worker
imports the function it runs, which it cannot from `python -m`'s __main__)."""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ..battery import AuditOptions
from ..pipeline import load_and_audit, write_outputs


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
