"""Which layers describe a model's representation (read by the similarity and neuron sections)."""

import torch
from torch import nn

from auditsvc.battery.methods.representation_layers import representation_layers, spread
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.demo.nets import SeparableNet, export, tiny_resnet


def test_layers_are_activations_spread_early_to_deep_then_penultimate_and_output():
    graph = ModelGraph(export(tiny_resnet(3), (3, 32, 32)), (3, 32, 32))
    chosen = representation_layers(graph, hidden=3)
    assert all(layer.type == "fn:relu" for layer in chosen.hidden) and len(chosen.hidden) == 3
    relus = [l.name for l in graph.layers if l.type == "fn:relu"]
    assert chosen.hidden[0].name == relus[0] and chosen.hidden[-1].name == relus[-1]
    assert [l.name for l in chosen.all[-2:]] == ["adaptive_avg_pool2d", "fc"]
    separable = ModelGraph(export(SeparableNet(2, widths=(4, 8)), (3, 32, 32)), (3, 32, 32))
    assert {l.type for l in representation_layers(separable).hidden} == {"Hardswish"}


def test_without_activations_the_convolutions_are_compared():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2), nn.Flatten(),
                          nn.LazyLinear(2))
    plain(torch.zeros(1, 3, 16, 16))
    graph = ModelGraph(export(plain, (3, 16, 16)), (3, 16, 16))
    assert [l.type for l in representation_layers(graph).hidden] == ["Conv2d", "Conv2d"]


def test_spread_keeps_the_first_and_the_last():
    assert spread(list(range(10)), 3) == [0, 4, 9]   # linspace 0, 4.5, 9, rounded half to even
    assert spread([1, 2], 5) == [1, 2]
