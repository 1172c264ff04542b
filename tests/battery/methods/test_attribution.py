"""Each attribution on the exported graph against Captum on the eager model: same numbers."""

from dataclasses import replace

import pytest
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
from torch import nn

from auditsvc.battery.methods import attribution
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.demo.nets import export

SIZE = (3, 24, 24)


class Net(nn.Module):
    """Small residual CNN; `functional` picks F.relu_ calls or nn.ReLU modules (same function)."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 3)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def _relu(self, x, module):
        return F.relu_(x) if self.functional else module(x)

    def forward(self, x):
        x = self._relu(self.bn1(self.conv1(x)), self.relu1)
        x = self._relu(x + self.conv2(x), self.relu2)
        x = self._relu(self.conv3(x), self.relu3)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    modular = Net(functional=False).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        modular.bn1.running_mean.uniform_(-0.2, 0.2)
        modular.bn1.running_var.uniform_(0.5, 1.5)
    functional = Net(functional=True).eval()
    functional.load_state_dict(modular.state_dict())
    return modular, functional, ModelGraph(export(functional, SIZE), SIZE)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    inputs = torch.randn(4, *SIZE)
    return inputs, torch.tensor([0, 1, 2, 1])


def close(ours, theirs, atol=1e-5):
    theirs = theirs.detach()
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-4, atol=atol * scale)


def test_gradient(models, batch):
    modular, _, graph = models
    close(attribution.gradient(graph, *batch), Saliency(modular).attribute(batch[0], target=batch[1], abs=True))


def test_guided_backprop_sees_functional_relus(models, batch):
    modular, functional, graph = models
    ours = attribution.guided_backprop(graph, *batch)
    close(ours, GuidedBackprop(modular).attribute(batch[0], target=batch[1]))
    # Captum on the functional-ReLU model silently falls back to the plain gradient.
    captum_functional = GuidedBackprop(functional).attribute(batch[0].clone(), target=batch[1])
    plain = Saliency(functional).attribute(batch[0].clone(), target=batch[1], abs=False)
    torch.testing.assert_close(captum_functional, plain)
    assert not torch.allclose(ours, plain, atol=1e-6)


def test_deconvnet_sees_functional_relus(models, batch):
    modular, _, graph = models
    close(attribution.deconvnet(graph, *batch), Deconvolution(modular).attribute(batch[0], target=batch[1]))


def test_smoothgrad_with_the_same_noise(models, batch):
    modular, _, graph = models
    torch.manual_seed(7)
    ours = attribution.smoothgrad(graph, *batch, samples=5, stdev=0.3, chunk=8)
    torch.manual_seed(7)
    theirs = NoiseTunnel(Saliency(modular)).attribute(batch[0], nt_type="smoothgrad", nt_samples=5, stdevs=0.3,
                                                     nt_samples_batch_size=2, target=batch[1], abs=True)
    close(ours, theirs)


def test_smoothgrad_is_reproducible_from_a_generator(models, batch):
    _, _, graph = models
    runs = [attribution.smoothgrad(graph, *batch, samples=3, stdev=0.3, chunk=8,
                                   generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])


def test_smoothgrad_from_a_generator_leaves_the_global_rng_as_it_was(models, batch):
    _, _, graph = models
    torch.manual_seed(11)
    state = torch.get_rng_state()
    attribution.smoothgrad(graph, *batch, samples=3, stdev=0.3, chunk=8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)


def test_integrated_gradients_with_a_fixed_step_count(models, batch):
    modular, _, graph = models
    baseline = torch.full((1, *SIZE), -2.0)
    ours = attribution.integrated_gradients(graph, *batch, baseline=baseline, steps=16, chunk=10, first_steps=16)
    theirs = IntegratedGradients(modular).attribute(batch[0], baselines=baseline.expand_as(batch[0]),
                                                    target=batch[1], n_steps=16, method="gausslegendre")
    close(ours.values, theirs)
    assert ours.per_image["steps"] == [16] * 4


def test_adaptive_integrated_gradients_are_captums_at_each_images_final_step_count(models, batch):
    modular, _, graph = models
    inputs, targets = batch
    baseline = torch.full((1, *SIZE), -2.0)
    ours = attribution.integrated_gradients(graph, inputs, targets, baseline=baseline, steps=256, chunk=8)
    steps, errors = ours.per_image["steps"], ours.per_image["completeness_error"]
    assert len(set(steps)) > 1   # some images stop at the first count, some do not
    for i, count in enumerate(steps):
        theirs = IntegratedGradients(modular).attribute(inputs[i:i + 1], baselines=baseline, target=targets[i:i + 1],
                                                        n_steps=count, method="gausslegendre")
        close(ours.values[i:i + 1], theirs)
    # The completeness error, from the eager model's scores at the image and at the baseline.
    with torch.no_grad():
        scores = modular(inputs).gather(1, targets.view(-1, 1))[:, 0]
        difference = scores - modular(baseline)[0, targets]
    total = ours.values.flatten(1).sum(1)
    expected = (total - difference).abs() / difference.abs().clamp(min=attribution.IG_SCORE_FLOOR)
    torch.testing.assert_close(torch.tensor(errors), expected, rtol=1e-3, atol=1e-5)
    assert all(error <= attribution.IG_TOLERANCE for error in errors)


class Saturating(nn.Module):
    """Scores tanh(+-mean pixel): from a black baseline, the score of an image with a large mean
    rises within the first few percent of the path and then stays flat, a sharp bend to integrate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 3)
            self.conv.weight[1].neg_()
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.tanh(self.conv(x).mean(dim=(2, 3)))


class CountingPasses:
    """A graph that counts the images in every pass with gradients: the path points (Captum's
    completeness check runs its two forward passes without gradients)."""

    def __init__(self, graph: ModelGraph):
        self.graph, self.passes = graph, []

    def __call__(self, inputs):
        if torch.is_grad_enabled():
            self.passes.append(len(inputs))
        return self.graph(inputs)


@pytest.fixture(scope="module")
def saturating():
    size = (3, 8, 8)
    return ModelGraph(export(Saturating().eval(), size), size)


def test_only_the_images_with_a_hard_path_are_computed_again_with_more_steps(saturating):
    generator = torch.Generator().manual_seed(0)
    easy = 0.5 * (1 + 0.2 * torch.randn(3, 3, 8, 8, generator=generator))
    hard = 100 * (1 + 0.2 * torch.randn(1, 3, 8, 8, generator=generator))
    inputs, targets = torch.cat([easy[:2], hard, easy[2:]]), torch.tensor([0, 1, 0, 1])
    counting = CountingPasses(saturating)
    ours = attribution.integrated_gradients(counting, inputs, targets, baseline=torch.zeros(1, 3, 1, 1),
                                            steps=256, chunk=8)
    steps, errors = ours.per_image["steps"], ours.per_image["completeness_error"]
    assert steps[0] == steps[1] == steps[3] == 8 and steps[2] > 8
    assert all(error <= attribution.IG_TOLERANCE for error in errors)
    # 8 steps of all four images, then each count of the hard one's alone; never more than 8 points a pass.
    redone = sum(count for count in attribution.ig_step_counts(8, 256) if 8 < count <= steps[2])
    assert sum(counting.passes) == 4 * 8 + redone
    assert max(counting.passes) == 8
    # Each image's attributions are still Captum's at its own count.
    for i, count in enumerate(steps):
        theirs = IntegratedGradients(saturating).attribute(inputs[i:i + 1], baselines=0.0, target=int(targets[i]),
                                                           n_steps=count, method="gausslegendre")
        close(ours.values[i:i + 1], theirs)


def test_an_image_still_above_the_tolerance_at_the_cap_says_so(saturating):
    generator = torch.Generator().manual_seed(1)
    inputs = 1000 * (1 + 0.2 * torch.randn(2, 3, 8, 8, generator=generator))
    ours = attribution.integrated_gradients(saturating, inputs, torch.tensor([0, 1]), baseline=torch.zeros(1, 3, 1, 1),
                                            steps=16, chunk=8)
    assert ours.per_image["steps"] == [16, 16]
    assert all(error > attribution.IG_TOLERANCE for error in ours.per_image["completeness_error"])


def test_a_score_that_barely_moves_is_judged_against_the_floor_not_its_own_tiny_change():
    attributions = torch.tensor([[0.0005, 0.0005], [0.6, 0.4]])
    delta = torch.tensor([0.0005, 0.002])   # sum of attributions minus the score difference
    errors = attribution.completeness_error(attributions, delta)
    # A score difference of 0.0005 counts as the floor (0.1): 0.5%, not 100%; 0.998 counts as itself.
    torch.testing.assert_close(errors, torch.tensor([0.0005 / attribution.IG_SCORE_FLOOR, 0.002 / 0.998]))


def test_the_step_counts_double_up_to_the_cap():
    assert attribution.ig_step_counts(8, 256) == [8, 16, 32, 64, 128, 256]
    assert attribution.ig_step_counts(8, 50) == [8, 16, 32, 50]
    assert attribution.ig_step_counts(8, 4) == [4]
    assert attribution.ig_step_counts(16, 16) == [16]


def test_grad_cam(models, batch):
    modular, _, graph = models
    layer = next(l.name for l in graph.layers if l.name == "conv2")
    ours = attribution.grad_cam(graph, *batch, layer)
    cam = LayerGradCam(modular, modular.conv2).attribute(batch[0], target=batch[1], relu_attributions=True)
    close(ours, LayerAttribution.interpolate(cam, SIZE[1:], interpolate_mode="bilinear"))
    assert ours.shape == (4, 1, *SIZE[1:])


def test_occlusion(models, batch):
    modular, _, graph = models
    grey = torch.zeros(1, *SIZE)
    ours = attribution.occlusion(graph, *batch, window=6, stride=3, baseline=grey, chunk=16)
    theirs = Occlusion(lambda x: F.softmax(modular(x), dim=1)).attribute(
        batch[0], sliding_window_shapes=(3, 6, 6), strides=(3, 3, 3), baselines=grey.expand_as(batch[0]),
        target=batch[1], perturbations_per_eval=1)
    close(ours, theirs, atol=1e-4)  # probabilities of differently batched passes: float32 noise


# --- the table of methods ------------------------------------------------------------------

def settings(graph: ModelGraph, chunk: int = 8) -> attribution.AttributionSettings:
    return attribution.AttributionSettings(
        chunk=chunk, grad_cam_layer="conv2", baseline=torch.full((1, 3, 1, 1), -2.0), ig_steps=4,
        smoothgrad_samples=2, smoothgrad_stdev=0.3, noise=lambda: torch.Generator().manual_seed(3))


def test_the_table_lists_six_methods_and_which_need_relus(models):
    _, _, graph = models
    assert list(attribution.METHODS) == ["gradient", "guided_backprop", "deconvnet", "smoothgrad",
                                         "integrated_gradients", "grad_cam"]
    assert [m for m, method in attribution.METHODS.items() if method.rewrites_relus] == ["guided_backprop",
                                                                                          "deconvnet"]
    assert [m for m, method in attribution.METHODS.items() if method.sampled] == ["smoothgrad",
                                                                                   "integrated_gradients"]
    assert attribution.applicable(graph) == list(attribution.METHODS)
    assert attribution.METHODS["integrated_gradients"].title == "Integrated gradients"


def test_the_table_runs_the_functions_chunk_by_chunk(models, batch):
    _, _, graph = models
    computed = attribution.heatmaps(graph, *batch, settings(graph, chunk=3), attribution.METHODS)
    maps = computed.maps
    assert set(maps) == set(computed.seconds) == set(attribution.METHODS)
    assert all(m.shape == (4, *SIZE[1:]) for m in maps.values())
    close(torch.from_numpy(maps["gradient"]), attribution.heatmap(attribution.gradient(graph, *batch)))
    close(torch.from_numpy(maps["grad_cam"]), attribution.heatmap(attribution.grad_cam(graph, *batch, "conv2")))
    again = attribution.heatmaps(graph, *batch, settings(graph, chunk=3), ["smoothgrad"]).maps
    torch.testing.assert_close(again["smoothgrad"], maps["smoothgrad"])   # the same noise on every call
    # Integrated gradients say per image what they did, over both chunks (3 images, then 1); the cap is 4 steps.
    assert list(computed.per_image) == ["integrated_gradients"]
    assert computed.per_image["integrated_gradients"]["steps"] == [4] * 4
    assert len(computed.per_image["integrated_gradients"]["completeness_error"]) == 4


def test_integrated_gradients_in_the_table_adapt_or_keep_a_fixed_count(models, batch):
    _, _, graph = models
    adaptive = replace(settings(graph), ig_steps=256)
    steps = attribution.heatmaps(graph, *batch, adaptive, ["integrated_gradients"]).per_image[
        "integrated_gradients"]["steps"]
    assert min(steps) == attribution.IG_FIRST_STEPS and max(steps) < 256
    fixed = replace(settings(graph), ig_steps=16, ig_fixed=True)
    computed = attribution.heatmaps(graph, *batch, fixed, ["integrated_gradients"])
    assert computed.per_image["integrated_gradients"]["steps"] == [16] * 4
    method = attribution.METHODS["integrated_gradients"]
    # Progress counts the first steps and one redo: what most images take.
    assert method.passes(adaptive) == 8 + 16 and method.passes(fixed) == 16
