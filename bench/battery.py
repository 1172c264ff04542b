"""Benchmark: the whole battery on the reference workload, against Captum in the same run.

Reference workload: a ResNet-18-style net at 3x128x128, 10 classes, 64 probe
images. Prints the time of every section and of the whole battery, peak memory, and
Captum doing the same attributions on the eager model, with the ratio ours / Captum (integrated
gradients: Captum at a fixed 32 steps, ours with as many as each image's completeness needs),
then the integrated-gradient steps each image needed and the worst completeness error; then the
occlusion maps of every probe image computed both ways on the exported graph, incremental and
Captum's Occlusion, their times and the largest difference between them. Beside each attribution's time, its
ideal: its passes times the best pass time per image over batch sizes 8 to 64.

    .venv/bin/python bench/battery.py [--images 64] [--side 128] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set  # noqa: E402
from auditsvc.battery.methods import attribution  # noqa: E402
from auditsvc.battery.methods.attribution import IG_FIRST_STEPS, ig_step_counts  # noqa: E402
from auditsvc.battery.model.graph import ModelGraph  # noqa: E402
from auditsvc.demo.nets import export, resnet18  # noqa: E402

warnings.filterwarnings("ignore")
CLASSES = [f"class_{i}" for i in range(10)]
IG_STEPS, SMOOTHGRAD_SAMPLES, WINDOW, STRIDE = 32, 16, 16, 8   # IG_STEPS: Captum's; ours adapts per image


def build_workload(directory: Path, images: int, side: int) -> tuple[Path, Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = resnet18(len(CLASSES)).eval()
    model_path, probe_path = write_workload(directory, model, "resnet18-bench", side, images)
    return model_path, probe_path, model


def write_workload(directory: Path, model: torch.nn.Module, name: str, side: int, images: int) -> tuple[Path, Path]:
    """The model exported as a package and a probe set of blocky images, one class folder per class."""
    package = directory / "model"
    package.mkdir()
    torch.export.save(export(model, (3, side, side)), package / "model.pt2")
    meta = {"name": name, "version": "1", "classes": CLASSES,
            "input": {"size": [3, side, side], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    (package / "model.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = directory / "probe" / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        smooth = rng.random((side // 8, side // 8, 3))  # blocky images, not pure noise
        pixels = (np.kron(smooth, np.ones((8, 8, 1))) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return package / "model.pt2", directory / "probe"


def with_relu_modules(model: torch.nn.Module) -> torch.nn.Module:
    """The same eager model with its functional ReLUs as nn.ReLU modules, so Captum's hooks see them."""
    traced = torch.fx.symbolic_trace(model)
    for index, node in enumerate([n for n in traced.graph.nodes if n.target in (F.relu, F.relu_, torch.relu)]):
        traced.add_module(f"relu_{index}", torch.nn.ReLU())
        with traced.graph.inserting_after(node):
            module_call = traced.graph.call_module(f"relu_{index}", (node.args[0],))
        node.replace_all_uses_with(module_call)
        traced.graph.erase_node(node)
    traced.recompile()
    return traced


def captum_times(model, inputs, targets, chunk: int, grad_cam_module, spec) -> dict[str, float]:
    """The same attributions with Captum on the eager model, chunked the same way."""
    black = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)]).view(1, -1, 1, 1).expand_as(inputs)
    grey = torch.tensor([(0.5 - m) / s for m, s in zip(spec.mean, spec.std)]).view(1, -1, 1, 1).expand_as(inputs)
    stdev = 0.15 * float(np.mean([1 / s for s in spec.std]))
    relu_modules = with_relu_modules(model)
    occlusion_per_eval = 1  # 32 images per forward pass, as ours; measured fastest for Captum here (1 < 2 < 4)
    runs = {
        "gradient": lambda x, t: Saliency(model).attribute(x, target=t, abs=True),
        "guided_backprop": lambda x, t: GuidedBackprop(model).attribute(x, target=t),
        "guided_backprop_relu_modules": lambda x, t: GuidedBackprop(relu_modules).attribute(x, target=t),
        "deconvnet": lambda x, t: Deconvolution(model).attribute(x, target=t),
        "smoothgrad": lambda x, t: NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, stdevs=stdev,
            nt_samples_batch_size=max(1, chunk // len(x)), target=t, abs=True),
        "integrated_gradients": lambda x, t: IntegratedGradients(model).attribute(
            x, baselines=black[: len(x)], target=t, n_steps=IG_STEPS, internal_batch_size=chunk),
        "grad_cam": lambda x, t: LayerAttribution.interpolate(
            LayerGradCam(model, grad_cam_module).attribute(x, target=t, relu_attributions=True),
            tuple(x.shape[2:]), interpolate_mode="bilinear"),
        "occlusion": lambda x, t: Occlusion(lambda b: F.softmax(model(b), dim=1)).attribute(
            x, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE), baselines=grey[: len(x)],
            target=t, perturbations_per_eval=occlusion_per_eval),
    }
    seconds = {}
    for method, run in runs.items():
        started = time.perf_counter()
        for i in range(0, len(inputs), chunk):
            run(inputs[i:i + chunk].clone(), targets[i:i + chunk])
        seconds[method] = time.perf_counter() - started
    return seconds


def occlusion_both_ways(graph: ModelGraph, inputs, targets, chunk: int, spec) -> dict:
    """The section's occlusion maps of every image, incremental and with Captum's Occlusion, on the same graph."""
    grey = torch.tensor([(0.5 - m) / s for m, s in zip(spec.mean, spec.std)]).view(1, -1, 1, 1)
    maps, seconds = {}, {}
    for method in ("incremental", "captum"):
        started = time.perf_counter()
        maps[method] = torch.cat([
            attribution.occlusion(graph, inputs[i:i + chunk], targets[i:i + chunk], window=WINDOW, stride=STRIDE,
                                  baseline=grey, chunk=chunk, method=method)
            for i in range(0, len(inputs), chunk)])
        seconds[method] = time.perf_counter() - started
    return {"seconds": seconds, "max_abs_difference": float((maps["incremental"] - maps["captum"]).abs().max()),
            "largest_drop": float(maps["captum"].max()),
            "mode": attribution.occlusion_mode(graph, window=WINDOW, stride=STRIDE)}


def best_pass_seconds(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Per image, the fastest forward pass and forward+backward pass (gradient to the input) over batch sizes."""
    best = {"forward": float("inf"), "forward_backward": float("inf")}
    for size in (8, 16, 32, 64):
        repeats = -(-size // len(inputs))   # as many images as the batch size, repeating a small probe set
        x, t = inputs.repeat(repeats, 1, 1, 1)[:size], targets.repeat(repeats)[:size]
        for _ in range(2):
            started = time.perf_counter()
            with torch.inference_mode():
                graph(x)
            best["forward"] = min(best["forward"], (time.perf_counter() - started) / len(x))
            started = time.perf_counter()
            with torch.enable_grad():
                leaf = x.clone().requires_grad_(True)
                torch.autograd.grad(graph(leaf).gather(1, t.view(-1, 1)).sum(), leaf)
            best["forward_backward"] = min(best["forward_backward"], (time.perf_counter() - started) / len(x))
    return best


def ideal_seconds(best: dict[str, float], images: int, ig_points: int, positions: int) -> dict[str, float]:
    """Each attribution's passes times the best pass time: the limit for doing the same passes."""
    backward = {"gradient": 1, "guided_backprop": 1, "guided_backprop_relu_modules": 1, "deconvnet": 1,
                "smoothgrad": SMOOTHGRAD_SAMPLES, "integrated_gradients": ig_points / images, "grad_cam": 1}
    ideal = {method: passes * images * best["forward_backward"] for method, passes in backward.items()}
    ideal["occlusion"] = (positions + 1) * images * best["forward"]   # one whole pass per window, as Captum
    return ideal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, probe_path, eager = build_workload(Path(tmp), args.images, args.side)
        options = AuditOptions(samples=args.images, smoothgrad_samples=SMOOTHGRAD_SAMPLES,
                               occlusion_window=WINDOW, occlusion_stride=STRIDE, batch_size=32)
        started = time.perf_counter()
        loaded = load_model(model_path)
        with open_probe_set(probe_path, loaded.meta.classes) as probe:
            result = audit(loaded, probe, options)
            total = time.perf_counter() - started
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            spec = loaded.meta.input
            inputs = probe.tensors(range(len(probe)), spec)
        sections = {s.name: s for s in result.sections}
        targets = torch.as_tensor(np.argmax(eager(inputs).detach().numpy(), axis=1))
        grad_cam_layer = sections["saliency"].data["grad_cam_layer"]
        module = dict(eager.named_modules())[grad_cam_layer.split(":")[0]]
        theirs = captum_times(eager, inputs, targets, options.batch_size, module, spec)
        graph = ModelGraph(loaded.program, spec.size)
        both = occlusion_both_ways(graph, inputs, targets, options.batch_size, spec)
        best = best_pass_seconds(graph, inputs, targets)
    ours = dict(sections["saliency"].data["method_seconds"])
    ours["occlusion"] = sections["occlusion"].data["method_seconds"]["occlusion"]
    ours["guided_backprop_relu_modules"] = ours["guided_backprop"]
    print(f"workload: ResNet-18-style, 3x{args.side}x{args.side}, {len(CLASSES)} classes, {args.images} images, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"\n{'section':<24}{'status':>8}{'seconds':>10}")
    for s in result.sections:
        print(f"{s.name:<24}{s.status:>8}{s.seconds:>10.2f}")
    print(f"{'whole battery':<24}{'':>8}{total:>10.2f}   (with loading)")
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")
    ig = sections["saliency"].data["integrated_gradients"]
    ig_steps = [image["steps"] for image in ig["images"]]
    counts = ig_step_counts(IG_FIRST_STEPS, ig["max_steps"])
    computed = sum(c for steps in ig_steps for c in counts if c <= steps)   # an image redone pays every round
    positions = (-(-(args.side - WINDOW) // STRIDE) + 1) ** 2   # window positions, as Captum places them
    ideal = ideal_seconds(best, args.images, computed, positions)
    print(f"\nbest pass per image: forward {best['forward'] * 1e3:.1f} ms, forward+backward "
          f"{best['forward_backward'] * 1e3:.1f} ms (batch sizes 8 to 64)")
    print(f"{'attribution':<30}{'ours s':>9}{'Captum s':>10}{'ours/Captum':>13}{'ideal s':>9}{'ours/ideal':>12}")
    for method, seconds in theirs.items():
        print(f"{method:<30}{ours[method]:>9.2f}{seconds:>10.2f}{ours[method] / seconds:>13.2f}"
              f"{ideal[method]:>9.2f}{ours[method] / ideal[method]:>12.2f}")
    print("(ideal: the method's passes times the best pass time; occlusion's: one whole forward pass per window "
          "position and one unoccluded, which the incremental engine goes below by computing only part of each)")
    print("(guided_backprop: Captum on the functional-ReLU net never sees a ReLU, so it computes the plain "
          "gradient; guided_backprop_relu_modules: the same net with nn.ReLU modules, where Captum is right)")
    ig_errors = [image["completeness_error"] for image in ig["images"]]
    print(f"(integrated_gradients: ours adaptive, Gauss-Legendre steps per image until the completeness error is "
          f"under {ig['tolerance']:.0%}, at most {ig['max_steps']}; Captum {IG_STEPS} for every image)")
    print(f"\nintegrated gradients steps per image: min {min(ig_steps)}, median {np.median(ig_steps):g}, "
          f"max {max(ig_steps)}; path points computed {computed} (Captum: {IG_STEPS * len(ig_steps)}); "
          f"per image {ig_steps}")
    print(f"worst completeness error {max(ig_errors):.4%}; images above {ig['tolerance']:.0%} at "
          f"{ig['max_steps']} steps: {sum(e > ig['tolerance'] for e in ig_errors)}")
    incremental, captum = both["seconds"]["incremental"], both["seconds"]["captum"]
    print(f"\nocclusion maps of all {args.images} images on the exported graph (window {WINDOW}, stride {STRIDE}):")
    print(f"{'incremental s':>15}{'Captum s':>10}{'incremental/Captum':>20}{'max |difference|':>18}{'largest drop':>14}")
    print(f"{incremental:>15.2f}{captum:>10.2f}{incremental / captum:>20.2f}{both['max_abs_difference']:>18.1e}"
          f"{both['largest_drop']:>14.3f}")
    print(f"incremental mode: {both['mode']}")
    if args.json:
        args.json.write_text(json.dumps({"sections": {s.name: s.seconds for s in result.sections}, "total": total,
                                         "peak_mb": peak_mb, "ours": ours, "captum": theirs,
                                         "ig_steps": ig_steps, "ig_completeness_error": ig_errors,
                                         "best_pass_seconds": best, "ideal": ideal,
                                         "occlusion": both}, indent=2))


if __name__ == "__main__":
    main()
