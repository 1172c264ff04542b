"""Receptive fields read from the graph: hand-computed values, and the input gradient of one unit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.receptive_field import ReceptiveField, receptive_fields
from auditsvc.demo.nets import PlainNet, ResNet, SeparableNet, export, tiny_resnet


def graph_of(model: nn.Module, size=(3, 32, 32)) -> ModelGraph:
    torch.manual_seed(0)
    return ModelGraph(export(model.eval(), size), size)


def dilated_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AvgPool2d(3, stride=2, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def field(size: float, jump: float, start: float) -> ReceptiveField:
    return ReceptiveField((size, size), (jump, jump), (start, start))


def test_plain_net_fields_match_hand_computed_values():
    fields = receptive_fields(graph_of(PlainNet(2, widths=(4, 8))))
    # conv 3x3 pad 1, then max pool 2x2 stride 2, twice.
    assert fields["features.0"] == field(3, 1, 0)
    assert fields["features.2"] == field(3, 1, 0)       # BatchNorm and ReLU keep the field
    assert fields["features.3"] == field(4, 2, 0.5)
    assert fields["features.4"] == field(8, 2, 0.5)
    assert fields["features.7"] == field(10, 4, 1.5)


def test_residual_net_fields_take_the_union_of_both_paths():
    fields = receptive_fields(graph_of(tiny_resnet(3)))
    assert fields["conv1"] == field(3, 1, 0)
    assert fields["layer1.0:relu_1"] == field(5, 1, 0)
    assert fields["layer1"] == field(7, 1, 0)                   # identity shortcut: the conv path is wider
    assert fields["layer2.0.downsample.0"] == field(7, 2, 0)    # 1x1 stride-2 shortcut
    assert fields["layer2.0.conv1"] == field(9, 2, 0)
    assert fields["layer2"] == field(13, 2, 0)


def test_stem_with_strided_conv_and_padded_max_pool():
    fields = receptive_fields(graph_of(ResNet(2, widths=(4, 8), blocks_per_stage=1), (3, 64, 64)))
    assert fields["conv1"] == field(7, 2, 0)     # 7x7, stride 2, padding 3
    assert fields["pool"] == field(11, 4, 0)     # 3x3 max pool, stride 2, padding 1


def test_dilated_convolution_and_average_pool():
    fields = receptive_fields(graph_of(dilated_net()))
    assert fields["0"] == field(5, 1, 0)       # 3x3 dilated by 2 sees 5x5
    assert fields["2"] == field(7, 2, 0)
    assert fields["4"] == field(11, 4, 0)      # 3x3 average pool, stride 2, padding 1
    top, left, bottom, right = fields["5"].window(0, 0)  # global pooling sees everything
    assert top <= 0 and left <= 0 and bottom >= 32 and right >= 32


MODELS = {
    "plain": (lambda: PlainNet(2, widths=(4, 8)), (3, 32, 32)),
    "resnet": (lambda: tiny_resnet(2), (3, 24, 24)),
    "resnet-stem": (lambda: ResNet(2, widths=(4, 8), blocks_per_stage=1), (3, 48, 48)),
    "separable": (lambda: SeparableNet(2, 1, widths=(4, 8)), (1, 32, 32)),
    "dilated": (dilated_net, (3, 32, 32)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_input_gradient_of_a_unit_lies_exactly_inside_its_field(name):
    """The gradient of one unit w.r.t. the input is non-zero only inside the computed field, and
    reaches its edges (clipped to the image)."""
    factory, size = MODELS[name]
    graph = graph_of(factory(), size)
    fields = receptive_fields(graph)
    layers = [layer for layer in graph.leaf_layers() if layer.name in fields and layer.shape[1] > 1]
    assert layers
    # Rows are independent: six images probe the centre unit (max pooling routes the gradient through
    # one input per window, so only their union need fill the field), two probe the corners.
    inputs = torch.randn(8, *size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    with graph.rewrite(outputs=[layer.name for layer in layers], fast=False) as rewrite:
        _, *outputs = rewrite.module(inputs)
    for layer, output in zip(layers, outputs):
        _, h, w = layer.shape
        units = [(h // 2, w // 2)] * 6 + [(0, 0), (h - 1, w - 1)]
        chosen = sum(output[i, :, row, col].sum() for i, (row, col) in enumerate(units))
        (gradient,) = torch.autograd.grad(chosen, inputs, retain_graph=True)
        reached = gradient.abs().sum(dim=1) > 0
        for i, (row, col) in enumerate(units):
            top, left, bottom, right = fields[layer.name].clipped_window(row, col, size[1], size[2])
            outside = reached[i].clone()
            outside[top:bottom, left:right] = False
            assert not outside.any(), (layer.name, row, col)
        support = reached[:6].any(dim=0).nonzero()
        top, left, bottom, right = fields[layer.name].clipped_window(h // 2, w // 2, size[1], size[2])
        first, last = support.min(dim=0).values.tolist(), support.max(dim=0).values.tolist()
        assert (first[0], first[1], last[0] + 1, last[1] + 1) == (top, left, bottom, right), layer.name


def test_windows_are_clipped_to_the_image():
    corner = field(10, 4, 1.5)
    assert corner.window(0, 0) == (-3, -3, 7, 7)
    assert corner.clipped_window(0, 0, 32, 32) == (0, 0, 7, 7)
    assert corner.clipped_window(7, 7, 32, 32) == (25, 25, 32, 32)
    assert corner.center(2, 3) == (9.5, 13.5)
    assert corner.describe() == "10x10 px, stride 4"
    assert corner.as_dict() == {"size": [10, 10], "jump": [4, 4], "start": [1.5, 1.5], "exact": True}
