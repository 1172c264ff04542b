"""Activation maximization engine: seeded, drives its targets, works on any CNN of the battery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditsvc.battery.methods import feature_visualization as visualize
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.meta import InputSpec
from auditsvc.battery.methods.feature_visualization import FourierImage, Settings, Target, maximize
from auditsvc.demo.nets import PlainNet, SeparableNet, export

STRIPE_CLASSES = 3


def stripes(count: int, channels: int, side: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy task: the orientation of a striped pattern (0, 60 or 120 degrees), random colour, period, phase.
    Pixels in [0, 1], (count, channels, side, side), and the labels."""
    labels = torch.randint(0, STRIPE_CLASSES, (count,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    angle = labels.float() * math.pi / STRIPE_CLASSES + (torch.rand(count, generator=generator) - 0.5) * 0.3
    period = 4 + 4 * torch.rand(count, generator=generator)
    phase = torch.rand(count, generator=generator) * 2 * math.pi
    along = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    wave = 0.5 + 0.4 * torch.sin(along * 2 * math.pi / period[:, None, None] + phase[:, None, None])
    colour = 0.5 + 0.5 * torch.rand(count, channels, 1, 1, generator=generator)
    noise = 0.1 * torch.randn(count, channels, side, side, generator=generator)
    return (wave[:, None] * colour + noise).clamp(0, 1), labels


def trained_on_stripes(model: nn.Module, channels: int, side: int, steps: int = 60) -> nn.Module:
    """A model trained for a second or two on `stripes` (mean 0.5, std 0.25); about 100% accurate.
    One thread: small batches train no faster on more, and much slower on a busy machine."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            pixels, labels = stripes(32, channels, side, generator)
            loss = F.cross_entropy(model((pixels - 0.5) / 0.25), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def spec_for(channels: int, side: int) -> InputSpec:
    return InputSpec(channels, side, side, (0.5,) * channels, (0.25,) * channels)


@pytest.fixture(scope="module")
def stripes_graph() -> ModelGraph:
    torch.manual_seed(0)
    model = trained_on_stripes(PlainNet(STRIPE_CLASSES, 3, widths=(8, 16)), 3, 32)
    return ModelGraph(export(model, (3, 32, 32)), (3, 32, 32))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_seed_gives_the_same_images(stripes_graph):
    targets = [Target(0), Target(2), Target(1, visualize.feature_layers(stripes_graph, [1.0])[0])]
    settings = Settings(steps=24)
    first = maximize(stripes_graph, spec_for(3, 32), targets, seeded(5), settings)
    second = maximize(stripes_graph, spec_for(3, 32), targets, seeded(5), settings)
    other = maximize(stripes_graph, spec_for(3, 32), targets, seeded(6), settings)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.scores, second.scores)
    assert np.abs(first.images - other.images).max() > 0.05


def test_class_images_reach_their_class_on_a_trained_model(stripes_graph):
    threads = torch.get_num_threads()
    result = maximize(stripes_graph, spec_for(3, 32), [Target(c) for c in range(STRIPE_CLASSES)], seeded(),
                      Settings(steps=96))
    assert torch.get_num_threads() == threads  # the ascent runs on one thread, then the setting is restored
    assert result.images.shape == (STRIPE_CLASSES, 32, 32, 3)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert (result.scores >= 0.9).all(), result.scores
    # The scores are measured on the images as returned: recompute them from the pixels.
    pixels = torch.from_numpy(result.images).permute(0, 3, 1, 2)
    with torch.no_grad():
        probabilities = stripes_graph((pixels - 0.5) / 0.25).softmax(dim=1)
    np.testing.assert_allclose(probabilities[range(STRIPE_CLASSES), range(STRIPE_CLASSES)].numpy(), result.scores,
                               atol=1e-4)


def test_channel_images_drive_their_channel_far_above_grey(stripes_graph):
    layer = visualize.feature_layers(stripes_graph, [1.0])[0]
    channels = [0, 1, 2, 3]
    targets = [Target(c, layer) for c in channels]
    result = maximize(stripes_graph, spec_for(3, 32), targets, seeded(), Settings(steps=48))
    grey = torch.zeros(1, 3, 32, 32)  # pixel value 0.5 after normalization
    with torch.no_grad():
        _, outputs = stripes_graph.activations(grey, [layer])
    at_grey = outputs[layer][0, channels].mean(dim=(1, 2)).numpy()
    assert (result.scores > at_grey + 0.1).all(), (result.scores, at_grey)


def test_an_inactive_channel_still_gets_a_gradient():
    """A ReLU channel that is off everywhere on a grey image has no gradient there; the warm-up with
    deconvnet ReLUs must still move it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[0].bias.fill_(-3.0)  # first layer off for any image near grey
    graph = ModelGraph(export(model, (3, 16, 16)), (3, 16, 16))
    layer = visualize.feature_layers(graph, [1.0])[0]
    result = maximize(graph, spec_for(3, 16), [Target(0, layer), Target(1, layer)], seeded(), Settings(steps=48))
    assert (result.scores > 0).all(), result.scores


def test_a_grey_separable_net_without_relu_reaches_its_classes():
    channels, side = 1, 32
    torch.manual_seed(0)
    model = trained_on_stripes(SeparableNet(STRIPE_CLASSES, channels, widths=(8, 16)), channels, side, steps=80)
    graph = ModelGraph(export(model, (channels, side, side)), (channels, side, side))
    result = maximize(graph, spec_for(channels, side), [Target(c) for c in range(STRIPE_CLASSES)], seeded(),
                      Settings(steps=96))
    assert result.images.shape == (STRIPE_CLASSES, side, side, channels)
    assert (result.scores >= 0.9).all(), result.scores


def test_large_inputs_are_parameterized_at_a_smaller_side_and_resampled():
    torch.manual_seed(0)
    model = SeparableNet(2, 3, widths=(4, 8)).eval()
    graph = ModelGraph(export(model, (3, 160, 160)), (3, 160, 160))
    result = maximize(graph, spec_for(3, 160), [Target(0), Target(1)], seeded(), Settings(steps=4, max_side=64))
    assert result.images.shape == (2, 160, 160, 3)
    assert np.isfinite(result.images).all() and np.isfinite(result.scores).all()


def test_fourier_image_starts_near_grey_and_stays_in_pixel_range():
    for channels in (1, 3):
        image = FourierImage(2, channels, 24, 30, seeded())()
        assert image.shape == (2, channels, 24, 30)
        assert (image - 0.5).abs().max() < 0.05
    image = FourierImage(1, 3, 16, 16, seeded())
    with torch.no_grad():
        image.spectrum.mul_(1e4)
    pixels = image()
    assert 0 <= pixels.min() and pixels.max() <= 1


def test_random_affine_is_the_identity_without_transformations():
    settings = Settings(jitter=0.0, scale=0.0, rotation=0.0)
    theta = visualize.random_affine(3, settings, seeded())
    torch.testing.assert_close(theta, torch.eye(2, 3).expand(3, 2, 3))
    images = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(visualize.resample(images, theta, (8, 8)), images, atol=1e-5, rtol=0)


def test_feature_layers_run_from_early_to_deep_and_strongest_channels_rank_by_mean(stripes_graph):
    layers = visualize.feature_layers(stripes_graph, (0.0, 1.0))
    assert layers == ["features.2", "features.6"]  # the two ReLUs of a two-block PlainNet
    pooled = np.array([[0.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    assert visualize.strongest_channels(pooled, 2) == [1, 2]
    assert visualize.macs_per_image(stripes_graph) == 3 * 8 * 9 * 32 * 32 + 8 * 16 * 9 * 16 * 16 + 16 * 3


def test_a_truncated_rewrite_gives_exactly_the_full_runs_activations_and_stops_at_its_layer(stripes_graph):
    early, deep = visualize.feature_layers(stripes_graph, (0.0, 1.0))
    batch = torch.randn(4, 3, 32, 32, generator=seeded())
    for relu in (None, "deconv"):
        with stripes_graph.rewrite(outputs=[early, deep], relu=relu) as full:
            _, *expected = full.module(batch)
        with stripes_graph.rewrite(outputs=[early, deep], relu=relu, truncate=True) as truncated:
            assert [torch.equal(a, b) for a, b in zip(truncated.module(batch), expected)] == [True, True]
        with stripes_graph.rewrite(outputs=[early], relu=relu, truncate=True) as truncated:
            (only,) = truncated.module(batch)
            ops = {str(n.target) for n in truncated.module.module.graph.nodes if n.op == "call_function"}
        assert torch.equal(only, expected[0])
        assert not any("linear" in op or "addmm" in op or "mean" in op for op in ops), ops  # nothing past it


def test_channel_images_are_the_same_with_the_model_cut_at_their_layer(stripes_graph, monkeypatch):
    """A channel-only run cuts the model after its layer; the images are those of the uncut model."""
    targets = [Target(c, visualize.feature_layers(stripes_graph, [0.0])[0]) for c in range(3)]
    cut = maximize(stripes_graph, spec_for(3, 32), targets, seeded(3), Settings(steps=24))
    rewrite = ModelGraph.rewrite
    monkeypatch.setattr(ModelGraph, "rewrite", lambda self, truncate=False, **kwargs: rewrite(self, **kwargs))
    monkeypatch.setattr(visualize, "_forward", lambda graph, rewrite, layers, relu, truncate: _uncut_forward(
        graph, rewrite, layers, relu))
    whole = maximize(stripes_graph, spec_for(3, 32), targets, seeded(3), Settings(steps=24))
    np.testing.assert_array_equal(cut.images, whole.images)
    np.testing.assert_array_equal(cut.scores, whole.scores)


def _uncut_forward(graph, rewrite, layers, relu):
    def forward(batch):
        logits, *outputs = rewrite.module(batch)
        return logits, dict(zip(layers, outputs))
    return forward


def test_the_schedule_stops_once_every_score_has_converged_and_never_runs_past_its_steps():
    flat = visualize.Schedule(256, warmup=16)
    growing = visualize.Schedule(256, warmup=16)
    for step in range(256):
        if step >= flat.end:
            break
        flat.record(step, torch.tensor([0.99, 0.0]))          # a saturated class and a dead channel
        growing.record(step, torch.tensor([1.0 + 0.01 * step, 0.5]))
    assert flat.fade_from == 256 * visualize.CONVERGENCE_FROM
    assert flat.end == flat.fade_from + math.ceil(flat.fade_from / 3)
    assert [flat.strength(s) for s in (0, flat.fade_from - 1)] == [1.0, 1.0] and flat.strength(flat.end - 1) == 0.0
    assert growing.end == 256 and growing.fade_from == 192   # one image still improving: the full schedule


def test_easy_class_images_stop_early_and_still_reach_their_class(stripes_graph):
    result = maximize(stripes_graph, spec_for(3, 32), [Target(c) for c in range(STRIPE_CLASSES)], seeded(),
                      Settings(steps=256))
    assert result.steps < 256 and (result.scores >= 0.9).all(), (result.steps, result.scores)
    short = maximize(stripes_graph, spec_for(3, 32), [Target(0)], seeded(), Settings(steps=20))
    assert short.steps == 20
