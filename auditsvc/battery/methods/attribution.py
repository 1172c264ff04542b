"""Attribution methods on a ModelGraph, through Captum.

Each function takes normalized inputs (n, C, H, W) and target class indices (n,) and
returns attributions shaped like the input (Grad-CAM: (n, 1, H, W), upsampled). Captum does
the standard methods on the graph's fast copy; guided backprop and deconvnet rewrite the
graph's ReLUs, which also covers functional ReLUs that Captum's hooks never see. Work is
chunked so memory stays bounded: `chunk` images per forward/backward pass.
"""

from __future__ import annotations

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
    """Mean |gradient| over noisy copies of each input (Smilkov et al. 2017)."""
    if generator is not None:  # Captum draws its noise from the global RNG
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    per_pass = min(samples, max(1, chunk // len(inputs)))  # noise samples per forward/backward pass
    return NoiseTunnel(Saliency(graph)).attribute(
        inputs, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, nt_samples_batch_size=per_pass,
        target=targets, abs=True)


def integrated_gradients(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, *, baseline: torch.Tensor,
                         steps: int, chunk: int) -> torch.Tensor:
    """Path integral of gradients from a baseline image (Sundararajan et al. 2017)."""
    return IntegratedGradients(graph).attribute(inputs, baselines=baseline.expand_as(inputs), target=targets,
                                                       n_steps=steps, internal_batch_size=chunk)


def grad_cam(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
    """Gradient-weighted class activation map of `layer`, upsampled to the input (Selvaraju et al. 2017)."""
    with graph.rewrite(taps=[layer]) as rewrite:
        cam = LayerGradCam(rewrite.module, rewrite.taps[layer]).attribute(inputs, target=targets,
                                                                         relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), interpolate_mode="bilinear")


def occlusion(graph: ModelGraph, inputs: torch.Tensor, targets: torch.Tensor, *, window: int, stride: int,
              baseline: torch.Tensor, chunk: int) -> torch.Tensor:
    """Drop in the target class probability when a window is greyed out, averaged per pixel (Zeiler & Fergus 2014)."""
    channels, height, width = inputs.shape[1:]
    windows = ((height - window) // stride + 1) * ((width - window) // stride + 1)
    per_eval = max(1, min(windows, chunk // len(inputs)))
    method = Occlusion(lambda batch: F.softmax(graph(batch), dim=1))
    with torch.inference_mode():
        return method.attribute(inputs, sliding_window_shapes=(channels, window, window),
                                strides=(channels, stride, stride), baselines=baseline.expand_as(inputs),
                                target=targets, perturbations_per_eval=per_eval)


def heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) -> (n, H, W): max |value| over channels, as in Simonyan et al."""
    return attribution.detach().abs().amax(dim=1)
