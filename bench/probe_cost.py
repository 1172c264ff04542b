"""What the shortcut probes cost: seconds on the tank demo (200 images) and on 1000 probe images.

    .venv/bin/python bench/probe_cost.py [--images 1000]

Builds the tank demo if needed (build/demo), renders a larger balanced probe set of the same
scenes, and times the shortcut probes and "where the model looks" on the demo's shortcut model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditsvc.battery import AuditOptions  # noqa: E402
from auditsvc.demo.build import ALIGNED, FLIPPED, build_demo, render_cells, write_probe  # noqa: E402
from auditsvc.pipeline import load_and_audit  # noqa: E402

SECTIONS = ["shortcuts", "looking"]


def timed(model: Path, probe: Path) -> dict[str, float]:
    started = time.perf_counter()
    result = load_and_audit(model, probe, options=AuditOptions(sections=SECTIONS))
    seconds = {s.name: s.seconds for s in result.sections}
    seconds["total (with loading)"] = time.perf_counter() - started
    seconds["verdict"] = result.verdict
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    demo = build_demo(root / "build" / "demo", log=lambda message: None)
    model = Path(demo["paths"]["shortcut"])
    rows = {"demo probe (200)": timed(model, Path(demo["paths"]["probe"]))}
    with tempfile.TemporaryDirectory() as tmp:
        per_cell = args.images // 4
        scenes = render_cells(np.random.default_rng(12345), dict.fromkeys(ALIGNED + FLIPPED, per_cell))
        write_probe(Path(tmp) / "probe", scenes)
        rows[f"{4 * per_cell} probe images"] = timed(model, Path(tmp) / "probe")
    print(f"{'probe set':<22}{'shortcuts s':>13}{'looking s':>11}{'total s':>9}  verdict")
    for name, row in rows.items():
        print(f"{name:<22}{row['shortcuts']:>13.1f}{row['looking']:>11.1f}{row['total (with loading)']:>9.1f}  "
              f"{row['verdict']}")


if __name__ == "__main__":
    main()
