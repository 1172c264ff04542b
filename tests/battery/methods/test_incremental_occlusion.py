"""Incremental occlusion gives Captum's Occlusion maps on every kind of net, windows and strides, says
where it went full, and its projective-field arithmetic holds against a brute-force forward pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from scipy.stats import spearmanr
from torch import nn

from auditsvc.battery.methods import attribution
from auditsvc.battery.methods.incremental_occlusion import EXACT, Approximation, IncrementalOcclusion, projective_range
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.demo.nets import PlainNet, SeparableNet, export, tiny_resnet
from tests.families import INPUT, build


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: a second thread mostly spins


class Geometry(nn.Module):
    """Every border case of a window op: padding at the borders, dilation, a 1x1 convolution with stride 2
    (it skips rows, so a changed part can fall between the rows it reads), max pooling in ceil mode (its
    last windows run past the padding), average pooling over zero padding, 'same' padding of an even
    kernel (one pixel more at the end), and a fixed mask multiplying the map."""

    def __init__(self, side: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.dilated = nn.Conv2d(6, 6, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.skip = nn.Conv2d(6, 8, 1, stride=2)
        self.average = nn.AvgPool2d(3, 1, 1)
        self.even = nn.Conv2d(8, 8, 4, padding="same")
        self.head = nn.Linear(8, 3)
        out = -(-(side + 2 - 3) // 2) + 1   # the ceil-mode pool's output side
        out = (out - 1) // 2 + 1
        self.register_buffer("mask", torch.linspace(0.5, 1.5, out * out).view(1, 1, out, out))

    def forward(self, x):
        x = F.hardswish(self.dilated(F.relu(self.conv1(x))))
        x = F.relu(self.skip(self.pool(x))) * self.mask
        x = F.silu(self.even(self.average(x)))
        return self.head(x.mean(dim=(2, 3)))


def sharpened(model: nn.Module, size: tuple[int, int, int]) -> nn.Module:
    """The model with its last weighted layer rescaled so that over the test images its outputs vary by
    about 3 around 3 (a shift the softmax ignores, which keeps a ReLU after a convolutional head active):
    probabilities that move when a region is hidden, where a random net's barely depend on the image."""
    model.eval()
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    outputs = []
    # (cloned: SqueezeNet's head has an in-place ReLU after the convolution)
    hook = last.register_forward_hook(lambda module, args, output: outputs.append(output.clone()))
    with torch.no_grad():
        last.bias.zero_()
        model(batch(size)[0])
        hook.remove()
        classes = outputs[0].transpose(0, 1).flatten(1)   # (classes, images [x positions])
        mean = classes.mean(dim=1)
        gain = 3.0 / max(float((classes - mean[:, None]).std()), 1e-12)
        last.weight.mul_(gain)
        last.bias.copy_(3.0 - gain * mean)
    return model


def graph_of(model: nn.Module, size: tuple[int, int, int]) -> ModelGraph:
    return ModelGraph(export(model, size), size)


def batch(size: tuple[int, int, int], classes: int = 2, count: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(count, *size, generator=generator), torch.arange(count) % classes


def captum(graph: ModelGraph, inputs, targets, window: int, stride: int, baseline) -> torch.Tensor:
    channels = inputs.shape[1]
    return Occlusion(lambda x: F.softmax(graph(x), dim=1)).attribute(
        inputs, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
        baselines=baseline.expand_as(inputs), target=targets, perturbations_per_eval=8)


def assert_same_as_captum(graph: ModelGraph, size, window: int, stride: int, classes: int = 2,
                          chunk: int = 32) -> IncrementalOcclusion:
    inputs, targets = batch(size, classes)
    grey = torch.full((1, size[0], 1, 1), 0.2)
    engine = IncrementalOcclusion(graph, window=window, stride=stride)
    ours = engine.attribute(inputs, targets, grey, chunk=chunk)
    theirs = captum(graph, inputs, targets, window, stride, grey)
    assert ours.shape == theirs.shape == inputs.shape
    assert float(theirs.abs().max()) > 0.01, "the maps must show something for the comparison to mean anything"
    assert float((ours - theirs).abs().max()) < 1e-4
    return engine


SMALL = (3, 24, 24)


@pytest.mark.parametrize("name, model", [
    ("plain conv/BN/ReLU/max pool", lambda: PlainNet(2, widths=(8, 16, 16))),
    ("residual", lambda: tiny_resnet(2)),
    ("depthwise-separable, Hardswish", lambda: SeparableNet(2, widths=(8, 16, 16))),
])
def test_demo_nets_give_captums_maps(name, model):
    torch.manual_seed(0)
    engine = assert_same_as_captum(graph_of(sharpened(model(), SMALL), SMALL), SMALL, window=6, stride=3)
    assert engine.incremental_ops > 0


@pytest.mark.parametrize("family", ["shufflenet", "densenet", "inception", "squeezenet", "convnext", "resnext"])
def test_family_nets_give_captums_maps(family):
    """Channel shuffle (view, transpose, view) with split and chunk; dense concatenation; parallel branches
    with ceil-mode pooling; fire modules; channels-last LayerNorm and Linear between permutes; grouped
    convolutions."""
    engine = assert_same_as_captum(graph_of(sharpened(build(family, 0), INPUT), INPUT), INPUT, window=8, stride=4)
    assert engine.incremental_ops > 0


@pytest.mark.parametrize("window, stride", [(5, 2), (7, 3), (4, 4), (3, 1), (26, 1)],
                         ids=["not dividing", "stride 3", "tiling", "stride 1", "whole image"])
def test_border_geometry_gives_captums_maps_for_any_window_and_stride(window, stride):
    """Windows that do not divide the image are cut off at the right and bottom edge, as Captum places them."""
    torch.manual_seed(0)
    size = (3, 26, 26)
    engine = assert_same_as_captum(graph_of(sharpened(Geometry(26), size), size), size, window, stride, classes=3)
    if window < 26:
        assert engine.steps["conv2d"].mode == "patch"


def test_the_number_of_windows_per_pass_does_not_change_the_maps():
    torch.manual_seed(0)
    graph = graph_of(sharpened(tiny_resnet(2), SMALL), SMALL)
    inputs, targets = batch(SMALL)
    grey = torch.zeros(1, 3, 1, 1)
    engine = IncrementalOcclusion(graph, window=5, stride=3)
    assert engine._windows_per_pass(len(inputs), chunk=1) < engine.positions
    one_by_one = engine.attribute(inputs, targets, grey, chunk=1)
    all_at_once = engine.attribute(inputs, targets, grey, chunk=10_000)
    assert float((one_by_one - all_at_once).abs().max()) < 1e-5   # convolutions of other batch sizes round otherwise


def test_a_squeeze_and_excitation_gate_sends_the_rest_to_full_and_the_mode_says_where():
    graph = graph_of(sharpened(build("senet", 0), INPUT), INPUT)
    engine = assert_same_as_captum(graph, INPUT, window=8, stride=4)
    # The stem and the first block's convolutions are followed; the gate is a global pool of the map.
    assert engine.steps["conv2d"].mode == "patch"
    assert "full from layer1.se:adaptive_avg_pool2d on (it reads the whole map)" in engine.mode
    assert engine.mode.startswith(f"incremental for {engine.incremental_ops} of ")


def test_a_change_covering_most_of_a_map_runs_the_rest_in_full():
    torch.manual_seed(0)
    graph = graph_of(sharpened(PlainNet(2, widths=(8, 16, 16)), SMALL), SMALL)
    engine = assert_same_as_captum(graph, SMALL, window=8, stride=4)
    # An 8-pixel window of the 24-pixel image changes 4 rows of the 6x6 map after two 3x3 convolutions and
    # two 2x2 pools; the third convolution adds one row either side: all 6.
    assert "full from features.8 on (what a window changes covers 100% of its 6x6 map)" in engine.mode
    assert engine.steps["max_pool2d_1"].mode == "patch" and engine.steps["max_pool2d_1"].region.height == 4


def test_occlusion_uses_it_by_default_and_keeps_captum_reachable():
    torch.manual_seed(0)
    graph = graph_of(sharpened(tiny_resnet(2), SMALL), SMALL)
    inputs, targets = batch(SMALL)
    grey = torch.zeros(1, 3, 1, 1)
    default = attribution.occlusion(graph, inputs, targets, window=6, stride=3, baseline=grey, chunk=8)
    incremental = IncrementalOcclusion(graph, window=6, stride=3).attribute(inputs, targets, grey, chunk=8)
    assert torch.equal(default, incremental)
    theirs = attribution.occlusion(graph, inputs, targets, window=6, stride=3, baseline=grey, chunk=8, method="captum")
    assert float((default - theirs).abs().max()) < 1e-4
    assert attribution.occlusion_mode(graph, window=6, stride=3) == IncrementalOcclusion(graph, window=6,
                                                                                          stride=3).mode
    with pytest.raises(ValueError, match="stride <= window"):
        IncrementalOcclusion(graph, window=3, stride=4)


# --- the projective field of one convolution or pooling --------------------------------------------

def reads(row: int, kernel: int, stride: int, padding: int, dilation: int) -> set[int]:
    """The input rows output row `row` reads."""
    return {row * stride - padding + dilation * j for j in range(kernel)}


@pytest.mark.parametrize("kernel, stride, padding, dilation",
                         [(k, s, p, d) for k, s, p, d in itertools.product((1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2))
                          if p <= d * (k - 1)])
def test_projective_range_holds_every_changed_output_row_and_no_unchanged_one_outside(kernel, stride, padding,
                                                                                      dilation):
    length = 17
    generator = torch.Generator().manual_seed(kernel * 100 + stride * 10 + padding + dilation)
    signal = torch.randn(1, 2, length, 1, generator=generator)
    weight = torch.randn(3, 2, kernel, 1, generator=generator)

    def convolve(x):
        return F.conv2d(x, weight, stride=(stride, 1), padding=(padding, 0), dilation=(dilation, 1))[0, :, :, 0]

    before = convolve(signal)
    out_size = before.shape[1]
    for start in range(length):
        for stop in range(start + 1, length + 1):
            changed_input = signal.clone()
            changed_input[:, :, start:stop] += 1.0 + torch.rand(1, 2, stop - start, 1, generator=generator)
            changed = {o for o in range(out_size) if not torch.equal(convolve(changed_input)[:, o], before[:, o])}
            touching = {o for o in range(out_size)
                        if reads(o, kernel, stride, padding, dilation) & set(range(start, stop))}
            first, last = (int(v) for v in projective_range(start, stop, kernel, stride, padding, dilation, out_size))
            assert touching <= set(range(first, last)), (start, stop)
            assert changed <= touching   # (a dilated kernel can straddle the change: then fewer change)
            if dilation == 1:   # no gaps in the kernel: the range is exactly the rows that read the change
                assert set(range(first, last)) == touching == changed, (start, stop)


# --- Krypton's approximate modes ---------------------------------------------------------------------

def _maps(graph: ModelGraph, approximation: Approximation, window: int = 6, stride: int = 2) -> torch.Tensor:
    inputs, targets = batch(SMALL)
    engine = IncrementalOcclusion(graph, window=window, stride=stride, approximation=approximation)
    return engine.attribute(inputs, targets, torch.zeros(1, 3, 1, 1), chunk=16)


@pytest.fixture(scope="module")
def residual_graph() -> ModelGraph:
    torch.manual_seed(0)
    return graph_of(sharpened(tiny_resnet(2), SMALL), SMALL)


def test_the_limits_of_the_approximate_modes_are_exact(residual_graph):
    """A threshold of the whole side, or drilling down everywhere, is the exact map."""
    exact = _maps(residual_graph, EXACT)
    assert float((_maps(residual_graph, Approximation(threshold=1.0)) - exact).abs().max()) < 1e-6
    assert float((_maps(residual_graph, Approximation(coarse=3, drill_share=1.0)) - exact).abs().max()) < 1e-6
    assert Approximation(coarse=3, drill_share=1.0).exact and not Approximation(threshold=0.5).exact


def test_thresholding_cuts_every_changed_rectangle_and_keeps_the_map_close(residual_graph):
    engine = IncrementalOcclusion(residual_graph, window=6, stride=2, approximation=Approximation(threshold=0.5))
    patches = [s for s in engine.steps.values() if s.mode == "patch" and s.kind != "input"]
    assert patches and all(s.region.height <= -(-s.region.map_size[0] // 2) for s in patches)
    assert sum(s.mode == "full" for s in engine.steps.values()) <= sum(
        s.mode == "full" for s in IncrementalOcclusion(residual_graph, window=6, stride=2).steps.values())
    exact, approximate = _maps(residual_graph, EXACT), _maps(residual_graph, Approximation(threshold=0.5))
    assert not torch.equal(exact, approximate)
    assert _rank_correlation(approximate, exact) > 0.5


def test_drill_down_computes_the_coarse_positions_exactly_and_interpolates_between(residual_graph):
    """With nothing drilled, the map is the bilinear interpolation of the coarse positions' drops; the
    positions next to the largest coarse drops are the ones drilled."""
    inputs, targets = batch(SMALL)
    grey = torch.zeros(1, 3, 1, 1)
    exact = IncrementalOcclusion(residual_graph, window=6, stride=2)
    coarse = IncrementalOcclusion(residual_graph, window=6, stride=2,
                                  approximation=Approximation(coarse=2, drill_share=0.0))
    with torch.inference_mode():
        truth = exact._drops(inputs, targets.view(-1, 1), grey.expand_as(inputs), torch.arange(exact.positions), 16,
                             lambda f: None).view(len(inputs), *exact.grid)
        estimate = coarse._drilled_drops(inputs, targets.view(-1, 1), grey.expand_as(inputs), 16,
                                         lambda f: None).view(len(inputs), *exact.grid)
    rows, cols = exact.grid   # 10x10 positions: knots 0, 2, 4, 6, 8 and 9
    assert torch.allclose(estimate[:, ::2, ::2], truth[:, ::2, ::2], atol=1e-6)
    assert torch.allclose(estimate[:, 9, 9], truth[:, 9, 9], atol=1e-6)
    assert torch.allclose(estimate[:, 1, 0], (truth[:, 0, 0] + truth[:, 2, 0]) / 2, atol=1e-6)
    assert torch.allclose(estimate[:, 3, 3], truth[:, 2:5:2, 2:5:2].mean(dim=(1, 2)), atol=1e-6)
    drilled = IncrementalOcclusion(residual_graph, window=6, stride=2,
                                   approximation=Approximation(coarse=2, drill_share=0.3))
    with torch.inference_mode():
        some = drilled._drilled_drops(inputs, targets.view(-1, 1), grey.expand_as(inputs), 16,
                                      lambda f: None).view(len(inputs), *exact.grid)
    computed = (some - truth).abs() < 1e-6
    knots = torch.zeros(rows, dtype=torch.bool)
    knots[[0, 2, 4, 6, 8, 9]] = True
    others = ~(knots[:, None] & knots[None, :])   # 64 positions
    assert (computed[:, others].sum(dim=1) >= round(0.3 * 64) - 1).all()   # (some interpolations happen to be right)
    assert _rank_correlation(some, truth) > _rank_correlation(estimate, truth)


def test_the_mode_names_the_approximation(residual_graph):
    engine = IncrementalOcclusion(residual_graph, window=6, stride=2,
                                  approximation=Approximation(threshold=0.6, coarse=2, drill_share=0.25))
    assert engine.mode.endswith("approximate: projective fields cut to 60% of each map's side; every 2nd window "
                                "position per axis first, then the 25% of the others next to the largest drops "
                                "(the rest interpolated)")
    with pytest.raises(ValueError, match="threshold"):
        Approximation(threshold=0.0)


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.mean([spearmanr(x.ravel(), y.ravel())[0] for x, y in zip(a.numpy(), b.numpy())]))
