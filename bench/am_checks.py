"""Benchmark: activation maximization and the explanation checks, against their ideal time.

Two workloads on one thread: the reference one (ResNet-18-style net at 3x128x128, 10 classes, see
battery.py) and a real-size one (a ConvNeXt-tiny-style net at 3x224x224, from auditsvc.demo.nets:
torchvision does not import beside the pinned torch). Runs the saliency section (whose maps the checks reuse),
then activation_max and explanation_checks, and prints each section's seconds, their parts, and the
best forward+backward time per image over batch sizes, from which a section's ideal time follows:
passes (forward+backward per image) x that best time.

    .venv/bin/python bench/am_checks.py [--net resnet18|convnext|both] [--images 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set  # noqa: E402
from auditsvc.battery.model.graph import ModelGraph  # noqa: E402
from auditsvc.demo.nets import ConvNeXt, resnet18  # noqa: E402
from battery import CLASSES, write_workload  # noqa: E402  (bench/battery.py, beside this file)

warnings.filterwarnings("ignore")
SECTIONS = ["saliency", "activation_max", "explanation_checks"]


def build(directory: Path, net: str, images: int) -> tuple[Path, Path, int]:
    torch.manual_seed(0)
    model, side = (resnet18(len(CLASSES)), 128) if net == "resnet18" else (ConvNeXt(len(CLASSES)), 224)
    model_path, probe_path = write_workload(directory, model.eval(), f"{net}-bench", side, images)
    return model_path, probe_path, side


def best_pass_seconds(graph: ModelGraph, side: int, sizes=(1, 2, 4, 8, 16, 32)) -> dict[int, float]:
    """Seconds per image of one forward+backward (input gradient) of the fast graph, per batch size."""
    out = {}
    for size in sizes:
        batch = torch.randn(size, 3, side, side)
        times = []
        for _ in range(3):
            x = batch.clone().requires_grad_(True)
            started = time.perf_counter()
            F.log_softmax(graph(x), 1)[:, 0].sum().backward()
            times.append(time.perf_counter() - started)
        out[size] = min(times) / size
        if size * out[size] > 20:
            break
    return out


def run(net: str, images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model_path, probe_path, side = build(Path(tmp), net, images)
        loaded = load_model(model_path)
        graph = ModelGraph(loaded.program, loaded.meta.input.size)
        per_image = best_pass_seconds(graph, side)
        options = AuditOptions(samples=8, batch_size=32, sections=SECTIONS)
        with open_probe_set(probe_path, loaded.meta.classes) as probe:
            result = audit(loaded, probe, options)
    sections = {s.name: s for s in result.sections}
    return {"net": net, "side": side, "pass_seconds_per_image": per_image,
            "sections": {name: {"status": s.status, "seconds": round(s.seconds, 2),
                                "parts": s.data.get("method_seconds"),
                                "passes": s.data.get("passes")} for name, s in sections.items()},
            "am": {k: sections["activation_max"].data.get(k) for k in ("class_steps", "channel_steps", "all_reached",
                                                                         "min_probability")},
            "am_channels": sections["activation_max"].data.get("channels"),
            "checks": sections["explanation_checks"].data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=["resnet18", "convnext", "both"], default="both")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [run(net, args.images) for net in (["resnet18", "convnext"] if args.net == "both" else [args.net])]
    for r in results:
        best = min(r["pass_seconds_per_image"].items(), key=lambda kv: kv[1])
        print(f"\n{r['net']} at {r['side']} px, 1 thread, torch {torch.__version__}")
        print("forward+backward s/image by batch size: "
              + ", ".join(f"{k}: {v:.4f}" for k, v in r["pass_seconds_per_image"].items())
              + f"  (best {best[1]:.4f} at {best[0]})")
        for name, s in r["sections"].items():
            print(f"  {name:<20}{s['status']:>6}{s['seconds']:>9.2f} s  parts {s['parts']}  passes {s['passes']}")
        print(f"  activation max: {r['am']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
