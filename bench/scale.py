"""Benchmark: does the whole battery scale with the probe set? Time, peak memory and each section's growth.

Workload: a small ResNet-style net (auditsvc.demo.nets, untrained, seeded) at 3x64x64, 10 classes, and
probe sets of blocky random images with a weak label-correlated cue (a bright corner patch, more often
in the even classes), so the statistics have something to find. Probe sets are generated once and
cached in build/bench_scale/ under a key of their parameters.

Every size runs the whole battery in a fresh subprocess, so its peak memory (VmHWM) is its own. The
table gives images, seconds (with loading), seconds per image, peak memory and every section's seconds;
then the growth exponent of time against images (the least-squares slope of log seconds on log images)
per section and overall, over every size and between the two largest alone (sections of a few seconds
at the smallest size are noisy there). A section whose exponent is above 1.15, or a run above 3 GB, is flagged.

    .venv/bin/python bench/scale.py [--sizes 200 1000 10000] [--arch tiny|resnet18] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = [f"class_{i}" for i in range(10)]
SIDE, BLOCK = 64, 8
CUE_RATE = (0.7, 0.3)      # share of images with the bright corner: even classes, odd classes
MAX_SLOPE, MAX_PEAK_MB = 1.15, 3 * 1024
CACHE = ROOT / "build" / "bench_scale"


def build_model(directory: Path, arch: str) -> Path:
    import torch

    from auditsvc.demo.nets import export, resnet18, tiny_resnet

    model_path = directory / "model.pt2"
    if model_path.exists():
        return model_path
    torch.manual_seed(0)
    model = (tiny_resnet if arch == "tiny" else resnet18)(len(CLASSES)).eval()
    directory.mkdir(parents=True, exist_ok=True)
    torch.export.save(export(model, (3, SIDE, SIDE)), directory / "partial.pt2")
    meta = {"name": f"{arch}-scale", "version": "1", "classes": CLASSES,
            "input": {"size": [3, SIDE, SIDE], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    (directory / "model.json").write_text(json.dumps(meta))
    (directory / "partial.pt2").rename(model_path)
    return model_path


def build_probe(directory: Path, images: int, seed: int = 0) -> Path:
    """`images` PNGs, as many per class; written once (the folder appears complete or not at all)."""
    from PIL import Image

    probe = directory / "probe"
    if probe.exists():
        return probe
    partial = directory / "probe.partial"
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (partial / name).mkdir(parents=True, exist_ok=True)
    labels = np.arange(images) % len(CLASSES)
    blocks = rng.random((images, SIDE // BLOCK, SIDE // BLOCK, 3), dtype=np.float32)
    cued = rng.random(images) < np.where(labels % 2 == 0, *CUE_RATE)
    for i in range(images):
        pixels = (blocks[i].repeat(BLOCK, 0).repeat(BLOCK, 1) * 200).astype(np.uint8)
        if cued[i]:
            pixels[:BLOCK, :BLOCK] = 255
        Image.fromarray(pixels).save(partial / CLASSES[labels[i]] / f"{i:05d}.png", compress_level=1)
    partial.rename(probe)
    return probe


def peak_mb() -> float:
    """This process's peak resident memory, MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(model_path: Path, probe_path: Path, out: Path) -> None:
    """The child: the whole battery once; writes its times and peak memory to `out`."""
    warnings.filterwarnings("ignore")
    from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set

    started = time.perf_counter()
    loaded = load_model(model_path)
    loaded_peak = peak_mb()
    rise: dict[str, float] = {}   # how far each section raised the high-water mark, MB

    def finished(name: str, status: str, fraction: float) -> None:
        if status != "running":
            rise[name] = peak_mb() - loaded_peak - sum(rise.values())

    with open_probe_set(probe_path, loaded.meta.classes) as probe:
        result = audit(loaded, probe, AuditOptions(), steps=finished)
    total = time.perf_counter() - started
    out.write_text(json.dumps({
        "images": result.dataset["images"], "seconds": total, "peak_mb": peak_mb(), "loaded_mb": loaded_peak,
        "peak_rise_mb": rise,
        "sections": {s.name: s.seconds for s in result.sections},
        "status": {s.name: s.status for s in result.sections},
        "caps": {s.name: s.data["sample_cap"] for s in result.sections
                 if isinstance(s.data, dict) and "sample_cap" in s.data},
        "verdict": str(result.verdict),
    }))


def slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log seconds on log images (times under 10 ms are floored: noise)."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 0.01)), 1)[0])


def measure(sizes: list[int], arch: str, threads: int) -> list[dict]:
    model_path = build_model(CACHE / f"model-{arch}-{SIDE}-seed0", arch)
    runs = []
    for images in sizes:
        generated = time.perf_counter()
        probe_path = build_probe(CACHE / f"probe-{images}-{SIDE}-b{BLOCK}-cue{CUE_RATE[0]}-{CUE_RATE[1]}-seed0", images)
        generated = time.perf_counter() - generated
        out = CACHE / f"run-{arch}-{images}.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, __file__, "--child", str(model_path), str(probe_path), str(out)],
                       check=True, env=env)
        run = json.loads(out.read_text())
        run["generation_seconds"] = generated
        runs.append(run)
        print(f"  {images} images: {run['seconds']:.1f} s, peak {run['peak_mb']:.0f} MB", file=sys.stderr)
    return runs


def report(runs: list[dict]) -> dict:
    sizes = [run["images"] for run in runs]
    names = list(runs[0]["sections"])
    slopes = {name: slope(sizes, [run["sections"][name] for run in runs]) for name in names}
    slopes["whole battery"] = slope(sizes, [run["seconds"] for run in runs])
    print(f"{'images':>8}{'seconds':>10}{'s/image':>10}{'peak MB':>10}")
    for run in runs:
        flag = "  <- over 3 GB" if run["peak_mb"] > MAX_PEAK_MB else ""
        print(f"{run['images']:>8}{run['seconds']:>10.1f}{run['seconds'] / run['images']:>10.4f}"
              f"{run['peak_mb']:>10.0f}{flag}")
    last = {name: slope(sizes[-2:], [run["sections"][name] for run in runs[-2:]]) for name in names}
    last["whole battery"] = slope(sizes[-2:], [run["seconds"] for run in runs[-2:]])
    rises = runs[-1].get("peak_rise_mb", {})
    print(f"\n{'section':<24}" + "".join(f"{n:>9}" for n in sizes) + f"{'slope':>8}{'last':>7}"
          + (f"{'+MB at ' + str(sizes[-1]):>14}" if rises else ""))
    for name in [*names, "whole battery"]:
        times = [run["sections"][name] if name in run["sections"] else run["seconds"] for run in runs]
        flag = "  <- super-linear" if slopes[name] > MAX_SLOPE else ""
        rise = f"{rises[name]:>14.0f}" if name in rises else (" " * 14 if rises else "")
        print(f"{name:<24}" + "".join(f"{t:>9.2f}" for t in times) + f"{slopes[name]:>8.2f}{last[name]:>7.2f}"
              f"{rise}{flag}")
    print("(slope: of log seconds on log images over every size; last: between the two largest sizes alone)")
    if rises:
        print(f"(+MB: how far the section raised the peak memory, in the run order, above "
              f"{runs[-1]['loaded_mb']:.0f} MB after loading the model)")
    caps = {name: cap for run in runs for name, cap in run.get("caps", {}).items()}
    if caps:
        print("\nsample caps: " + ", ".join(f"{name} {cap}" for name, cap in caps.items()))
    flagged = [n for n, s in slopes.items() if s > MAX_SLOPE] + [f"{r['images']} images: {r['peak_mb']:.0f} MB"
                                                                  for r in runs if r["peak_mb"] > MAX_PEAK_MB]
    print("flagged: " + (", ".join(flagged) if flagged else "nothing"))
    return {"runs": runs, "slopes": slopes, "last_slopes": last, "flagged": flagged}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        run_one(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 10000])
    parser.add_argument("--arch", choices=["tiny", "resnet18"], default="tiny")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"workload: {args.arch} ResNet-style, 3x{SIDE}x{SIDE}, {len(CLASSES)} classes, sizes {args.sizes}, "
          f"{args.threads} threads, load {os.getloadavg()[0]:.2f}")
    summary = report(measure(sorted(args.sizes), args.arch, args.threads))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
