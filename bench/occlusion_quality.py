"""Occlusion maps of a trained net: the exact incremental map against Captum's and against each of
Krypton's approximate modes, with their times and rank correlations with the exact map.

A random-weight net's occlusion maps are flat (hiding a window barely moves its probabilities), so
their rank correlations measure noise. This bench trains the reference ResNet-18-style net for a few
hundred steps on a task where one object decides the class (a coloured square, its hue the class, on
blocky clutter) and occludes its probe images, where the maps have a peak to find. The weights are
cached under build/bench_cache.

    .venv/bin/python bench/occlusion_quality.py [--images 64] [--side 128] [--steps 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from auditsvc.battery.methods.incremental_occlusion import (  # noqa: E402
    EXACT,
    Approximation,
    IncrementalOcclusion,
)
from auditsvc.battery.model.graph import ModelGraph  # noqa: E402
from auditsvc.battery.sections.occlusion import APPROXIMATE  # noqa: E402
from auditsvc.demo.nets import export, resnet18  # noqa: E402

warnings.filterwarnings("ignore")
CLASSES, WINDOW, STRIDE, CHUNK = 10, 16, 8, 32
MEAN, STD = 0.45, 0.25
MODES = {
    "exact": EXACT,
    "threshold 0.6": Approximation(threshold=0.6),
    "drill-down 2, 25% (offered)": APPROXIMATE,
    "threshold 0.6 + drill-down 2, 25%": Approximation(threshold=0.6, coarse=2, drill_share=0.25),
    "drill-down 3, 10%": Approximation(coarse=3, drill_share=0.1),
    "threshold 0.4 + drill-down 3, 10%": Approximation(threshold=0.4, coarse=3, drill_share=0.1),
}


def images(count: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized (count, 3, side, side) images and their classes: blocky clutter with one square whose hue is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    blocks = rng.random((count, side // 8, side // 8, 3)) * 0.6 + 0.2
    pixels = np.kron(blocks, np.ones((1, 8, 8, 1)))
    square = side // 5
    for image, label in zip(pixels, labels):
        top, left = rng.integers(0, side - square, 2)
        image[top:top + square, left:left + square] = colorsys.hsv_to_rgb(label / CLASSES, 1.0, 1.0)
    tensors = torch.from_numpy((pixels - MEAN) / STD).float().permute(0, 3, 1, 2).contiguous()
    return tensors, torch.from_numpy(labels)


def trained_net(side: int, steps: int) -> torch.nn.Module:
    cache = ROOT / "build" / "bench_cache" / f"occlusion_resnet18_{side}_{steps}.pt"
    torch.manual_seed(0)
    model = resnet18(CLASSES)
    if cache.exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        inputs, labels = images(32, side, seed=1000 + step)
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"  training step {step}: loss {loss.item():.3f}", file=sys.stderr, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = trained_net(args.side, args.steps)
    graph = ModelGraph(export(model, (3, args.side, args.side)), (3, args.side, args.side))
    inputs, labels = images(args.images, args.side, seed=0)
    with torch.inference_mode():
        targets = graph(inputs).argmax(dim=1)
    grey = torch.full((1, 3, 1, 1), (0.5 - MEAN) / STD)

    started = time.perf_counter()
    with torch.inference_mode():
        theirs = torch.cat([Occlusion(lambda b: F.softmax(graph(b), dim=1)).attribute(
            inputs[i:i + CHUNK], sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE),
            baselines=grey.expand_as(inputs[i:i + CHUNK]), target=targets[i:i + CHUNK], perturbations_per_eval=1)
            for i in range(0, len(inputs), CHUNK)])[:, 0]
    captum_seconds = time.perf_counter() - started

    rows, maps = {}, {}
    for name, approximation in MODES.items():
        engine = IncrementalOcclusion(graph, window=WINDOW, stride=STRIDE, approximation=approximation)
        started = time.perf_counter()
        maps[name] = torch.cat([engine.attribute(inputs[i:i + CHUNK], targets[i:i + CHUNK], grey, chunk=CHUNK)
                                for i in range(0, len(inputs), CHUNK)])[:, 0]
        seconds = time.perf_counter() - started
        exact = maps["exact"]
        correlations = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(maps[name].numpy(), exact.numpy())]
        rows[name] = {"seconds": seconds, "speedup_vs_captum": captum_seconds / seconds,
                      "rank_correlation_mean": float(np.mean(correlations)),
                      "rank_correlation_min": float(np.min(correlations)),
                      "max_abs_difference": float((maps[name] - exact).abs().max()), "mode": engine.mode}
    accuracy = float((targets == labels).float().mean())
    print(f"trained ResNet-18-style net, 3x{args.side}x{args.side}, {args.images} images "
          f"(accuracy {accuracy:.0%}), window {WINDOW}, stride {STRIDE}, {torch.get_num_threads()} threads")
    print(f"largest drop {float(exact.max()):.3f}; Captum's Occlusion {captum_seconds:.2f} s, "
          f"its largest difference from the exact incremental map {float((theirs - exact).abs().max()):.1e}")
    print(f"\n{'mode':<46}{'seconds':>9}{'x Captum':>10}{'rank corr mean':>16}{'min':>8}{'max |diff|':>12}")
    for name, row in rows.items():
        print(f"{name:<46}{row['seconds']:>9.2f}{row['speedup_vs_captum']:>10.2f}"
              f"{row['rank_correlation_mean']:>16.4f}{row['rank_correlation_min']:>8.4f}{row['max_abs_difference']:>12.4f}")
    keeps = [name for name, row in rows.items() if row["rank_correlation_mean"] >= 0.99]
    fastest = max(keeps, key=lambda name: rows[name]["speedup_vs_captum"])
    print(f"\nfastest mode whose mean rank correlation with the exact map is >= 0.99: {fastest}")
    if args.json:
        args.json.write_text(json.dumps({"captum_seconds": captum_seconds, "accuracy": accuracy, "modes": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
