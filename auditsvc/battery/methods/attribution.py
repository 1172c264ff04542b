"""Attribution methods on a ModelGraph, through Captum, and the one table of the saliency methods.

Each function takes normalized inputs (n, C, H, W) and target class indices (n,) and
returns attributions shaped like the input (Grad-CAM: (n, 1, H, W), upsampled). Captum does
the standard methods on the graph's fast copy; guided backprop and deconvnet rewrite the
graph's ReLUs, which also covers functional ReLUs that Captum's hooks never see. Every hook or
rewrite lives inside one `graph.rewrite(...)` block and is gone when the function returns. Work
is chunked so memory stays bounded: `chunk` images per forward/backward pass.

`METHODS` lists the saliency methods the battery shows and checks, each behind one signature
`(graph, inputs, targets, AttributionSettings) -> attributions`; a method that adapts its work to
each image (integrated gradients) returns `Attributions`, which also say what it did per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from ..model.graph import ModelGraph
from ..progress import SectionProgress, no_progress, shares
from .incremental_occlusion import IncrementalOcclusion


def gradient(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """|d score / d pixel| (Simonyan et al. 2014)."""
    return Saliency(graph).attribute(inputs, target=targets, abs=True)


def guided_backprop(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient with every ReLU passing back only positive gradients where it was active (Springenberg 2015).

    Same numbers as Captum's GuidedBackprop on a model with nn.ReLU modules; here the ReLUs are
    rewritten in the graph, so functional and in-place ReLUs count too, with no hooks."""
    with graph.rewrite(relu="guided") as rewrite:
        return _input_gradient(rewrite.module, inputs, targets)


def deconvnet(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Gradient with every ReLU's backward replaced by a ReLU of the gradient (Zeiler & Fergus 2014)."""
    with graph.rewrite(relu="deconv") as rewrite:
        return _input_gradient(rewrite.module, inputs, targets)


def _input_gradient(module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        inputs = inputs.detach().clone().requires_grad_(True)
        scores = module(inputs).gather(1, targets.view(-1, 1)).sum()
        return torch.autograd.grad(scores, inputs)[0]


def smoothgrad(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, *, samples: int,
               stdev: float, chunk: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean |gradient| over noisy copies of each input (Smilkov et al. 2017).

    Captum draws the noise from the global RNG. Given a `generator`, the global RNG is seeded from it
    inside a fork: the noise depends on the generator alone, and the global RNG is left as it was."""
    per_pass = min(samples, max(1, chunk // len(inputs)))  # noise samples per forward/backward pass
    with _global_rng_seeded_from(generator, inputs.device):
        return NoiseTunnel(Saliency(graph)).attribute(
            inputs, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, nt_samples_batch_size=per_pass,
            target=targets, abs=True)


@contextmanager
def _global_rng_seeded_from(generator: torch.Generator | None, device: torch.device):
    """The global RNG seeded from `generator` until the block ends, then as it was; no generator: untouched."""
    if generator is None:
        yield
        return
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        yield


@dataclass(frozen=True)
class Attributions:
    """A method's attributions, and what it did per image where that differs between images."""
    values: torch.Tensor                                      # shaped like the inputs
    per_image: dict[str, list] = field(default_factory=dict)  # name -> one value per image


IG_FIRST_STEPS = 8        # Gauss-Legendre steps every image starts with
IG_TOLERANCE = 0.01       # completeness error an image may keep (1% of its score difference)
# Score differences (logits) below this count as this much: 1% of 0.1 logit is 1e-3, well above the
# float32 rounding of the score and of a sum of ~10^5 attributions (about 1e-5 logit), and a score
# that barely leaves the baseline's (odds change under 11%) has little to split among pixels.
IG_SCORE_FLOOR = 0.1


def ig_step_counts(first: int, most: int) -> list[int]:
    """The step counts an image may be computed with: `first`, doubled until `most` (fixed: first == most)."""
    counts = [min(first, most)]
    while counts[-1] < most:
        counts.append(min(2 * counts[-1], most))
    return counts


def integrated_gradients(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, *, baseline: torch.Tensor,
                         steps: int, chunk: int, first_steps: int = IG_FIRST_STEPS) -> Attributions:
    """Path integral of gradients from a baseline image (Sundararajan et al. 2017), by Captum's
    Gauss-Legendre rule with as many steps as each image's completeness needs.

    Every image starts with `first_steps`; the images whose completeness error is above IG_TOLERANCE
    are computed again, together, with twice the steps, up to `steps`. Each image's attributions are
    Captum's at its final step count; per image: "steps" and "completeness_error"."""
    method = IntegratedGradients(graph)
    baselines = baseline.expand_as(inputs)
    values = torch.empty_like(inputs)
    used = torch.zeros(len(inputs), dtype=torch.long, device=inputs.device)
    errors = torch.full((len(inputs),), float("inf"), device=inputs.device)
    pending = torch.arange(len(inputs), device=inputs.device)
    for count in ig_step_counts(first_steps, steps):
        # Captum puts `internal_batch_size // images` steps of every pending image in one pass (at least one).
        attributions, delta = method.attribute(
            inputs[pending], baselines=baselines[pending], target=targets[pending], n_steps=count,
            method="gausslegendre", internal_batch_size=max(chunk, len(pending)), return_convergence_delta=True)
        values[pending], used[pending] = attributions.detach(), count
        errors[pending] = completeness_error(attributions.detach(), delta).to(errors.dtype)
        pending = pending[~(errors[pending] <= IG_TOLERANCE)]   # NaN too: computed again, up to the cap
        if not len(pending):
            break
    return Attributions(values, {"steps": used.tolist(), "completeness_error": errors.tolist()})


def completeness_error(attributions: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Per image |sum of attributions - (score(input) - score(baseline))| / |score(input) - score(baseline)|,
    the difference counted as at least IG_SCORE_FLOOR. Captum's convergence delta is the signed numerator,
    so the score difference is the attributions' sum minus it (summed as Captum sums them)."""
    difference = attributions.reshape(len(attributions), -1).sum(1) - delta
    return delta.abs() / difference.abs().clamp(min=IG_SCORE_FLOOR)


def grad_cam(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
    """Gradient-weighted class activation map of `layer`, upsampled to the input (Selvaraju et al. 2017)."""
    with graph.rewrite(taps=[layer]) as rewrite:
        cam = LayerGradCam(rewrite.module, rewrite.taps[layer]).attribute(inputs, target=targets,
                                                                         relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), interpolate_mode="bilinear")


def occlusion(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, *, window: int, stride: int,
              baseline: torch.Tensor, chunk: int, progress: SectionProgress = no_progress,
              method: str = "incremental") -> torch.Tensor:
    """Drop in the target class probability when a window is greyed out, averaged per pixel (Zeiler & Fergus 2014).

    method "incremental": each window recomputes only the part of each map it changes (Krypton, see
    incremental_occlusion.py); "captum": Captum's Occlusion, every window through the whole model. The same
    numbers (up to float rounding)."""
    if method == "incremental":
        engine = IncrementalOcclusion(graph, window=window, stride=stride)
        return engine.attribute(inputs, targets, baseline, chunk=chunk, progress=progress)
    if method != "captum":
        raise ValueError(f"unknown occlusion method {method!r}; use 'incremental' or 'captum'")
    channels, height, width = inputs.shape[1:]
    windows = (-(-(height - window) // stride) + 1) * (-(-(width - window) // stride) + 1)   # as Captum places them
    per_eval = max(1, min(windows, chunk // len(inputs)))
    evaluations = 1 + -(-windows // per_eval)   # the unoccluded inputs once, then the windows in groups
    calls = [0]

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        progress(calls[0] / evaluations)
        return F.softmax(graph(batch), dim=1)

    occluder = Occlusion(probabilities)
    with torch.inference_mode():
        return occluder.attribute(inputs, sliding_window_shapes=(channels, window, window),
                                  strides=(channels, stride, stride), baselines=baseline.expand_as(inputs),
                                  target=targets, perturbations_per_eval=per_eval)


def occlusion_mode(graph: ModelGraph, *, window: int, stride: int) -> str:
    """How far the incremental occlusion follows each window before running the rest in full, in words."""
    return IncrementalOcclusion(graph, window=window, stride=stride).mode


def heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) -> (n, H, W): max |value| over channels, as in Simonyan et al."""
    return attribution.detach().abs().amax(dim=1)


# --- the table of saliency methods ---------------------------------------------------------

@dataclass(frozen=True)
class AttributionSettings:
    """What the methods with settings read. The audit's settings are `AuditContext.attribution_settings`;
    a check that needs cheaper ones replaces fields (`dataclasses.replace`)."""
    chunk: int                           # images per forward/backward pass
    grad_cam_layer: str
    baseline: torch.Tensor               # integrated gradients' starting image, (1, C, 1, 1) normalized
    ig_steps: int                        # the most integrated-gradient steps an image gets
    smoothgrad_samples: int
    smoothgrad_stdev: float              # noise std in normalized units
    noise: Callable[[], torch.Generator]  # a fresh seeded generator per call: SmoothGrad's noise repeats
    ig_fixed: bool = False               # every image exactly ig_steps (maps to compare between models)
    path_chunk: int | None = None        # images per pass of integrated gradients' path points (None: chunk)

    @property
    def ig_step_counts(self) -> list[int]:
        return ig_step_counts(self.ig_steps if self.ig_fixed else IG_FIRST_STEPS, self.ig_steps)


@dataclass(frozen=True)
class AttributionMethod:
    name: str                # key in findings.json
    label: str               # figure column heading (may hold a line break)
    attribute: Callable[[ModelGraph, torch.Tensor, torch.Tensor, AttributionSettings], torch.Tensor | Attributions]
    rewrites_relus: bool = False   # defined by how gradients pass ReLUs: only for a model with ReLUs
    sampled: bool = False          # averages over noise samples or path steps, whose number settings may lower
    passes: Callable[[AttributionSettings], int] = lambda settings: 1   # backward passes per image, for progress

    @property
    def title(self) -> str:
        return self.label.replace("\n", " ")

    def applies_to(self, graph: ModelGraph) -> bool:
        return bool(graph.relu_count) or not self.rewrites_relus

    def heatmaps(self, graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor,
                 settings: AttributionSettings, progress: SectionProgress = no_progress) -> torch.Tensor:
        """(n, H, W) maps on the CPU, `settings.chunk` images at a time."""
        return self.heatmaps_per_image(graph, inputs, targets, settings, progress)[0]

    def heatmaps_per_image(self, graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor,
                           settings: AttributionSettings, progress: SectionProgress = no_progress,
                           ) -> tuple[torch.Tensor, dict[str, list]]:
        """The maps, and what the method did per image (`Attributions.per_image`, empty for most)."""
        step, maps, per_image = settings.chunk, [], {}
        for i in range(0, len(inputs), step):
            attributions = self.attribute(graph, inputs[i:i + step], targets[i:i + step], settings)
            if isinstance(attributions, torch.Tensor):
                attributions = Attributions(attributions)
            maps.append(heatmap(attributions.values).cpu())
            for key, values in attributions.per_image.items():
                per_image.setdefault(key, []).extend(values)
            progress((i + step) / len(inputs))
        return torch.cat(maps), per_image


METHODS: dict[str, AttributionMethod] = {method.name: method for method in (
    AttributionMethod("gradient", "Gradient", lambda g, x, t, s: gradient(g, x, t)),
    AttributionMethod("guided_backprop", "Guided\nbackprop", lambda g, x, t, s: guided_backprop(g, x, t),
                      rewrites_relus=True),
    AttributionMethod("deconvnet", "Deconvnet", lambda g, x, t, s: deconvnet(g, x, t), rewrites_relus=True),
    AttributionMethod("smoothgrad", "SmoothGrad", lambda g, x, t, s: smoothgrad(
        g, x, t, samples=s.smoothgrad_samples, stdev=s.smoothgrad_stdev, chunk=s.chunk, generator=s.noise()),
        sampled=True, passes=lambda s: s.smoothgrad_samples),
    AttributionMethod("integrated_gradients", "Integrated\ngradients", lambda g, x, t, s: integrated_gradients(
        g, x, t, baseline=s.baseline, steps=s.ig_steps, chunk=s.path_chunk or s.chunk,
        first_steps=s.ig_step_counts[0]),
        sampled=True, passes=lambda s: sum(s.ig_step_counts[:2])),   # the first count and one redo, as most need
    AttributionMethod("grad_cam", "Grad-CAM", lambda g, x, t, s: grad_cam(g, x, t, s.grad_cam_layer)),
)}


def applicable(graph: ModelGraph) -> list[str]:
    """The methods that apply to this graph, in the table's order."""
    return [name for name, method in METHODS.items() if method.applies_to(graph)]


@dataclass
class Heatmaps:
    maps: dict[str, np.ndarray]                 # method -> (n, H, W)
    seconds: dict[str, float]                   # method -> seconds its maps took
    per_image: dict[str, dict[str, list]]       # method -> what it did per image, for the methods that say


def heatmaps(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, settings: AttributionSettings,
             methods: Iterable[str], progress: SectionProgress = no_progress) -> Heatmaps:
    """Each method's (n, H, W) maps of `inputs` for `targets`, the seconds each took, and what each did per image."""
    methods = list(methods)
    parts = shares(progress, [METHODS[name].passes(settings) for name in methods])
    result = Heatmaps({}, {}, {})
    for name, part in zip(methods, parts):
        started = time.perf_counter()
        maps, per_image = METHODS[name].heatmaps_per_image(graph, inputs, targets, settings, part)
        result.maps[name] = maps.numpy()
        result.seconds[name] = time.perf_counter() - started
        if per_image:
            result.per_image[name] = per_image
    return result
