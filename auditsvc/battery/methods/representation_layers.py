"""Which layers describe a model's representation: activation outputs spread from early to deep,
the penultimate layer and the output. The similarity and neuron sections read the audited model's
choice from `AuditContext.representation_layers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.graph import Layer, ModelGraph

HIDDEN_LAYERS = 10           # spread from the first activation to the last; plus penultimate and output
ACTIVATION_TYPES = {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "SiLU", "GELU", "Hardswish", "Mish", "ELU", "SELU",
                    "CELU", "Hardtanh", "Tanh", "Softplus"}
ACTIVATION_OPS = {"fn:relu", "fn:silu", "fn:gelu", "fn:hardswish", "fn:mish", "fn:leaky_relu", "fn:elu",
                  "fn:hardtanh", "fn:tanh"}


@dataclass
class RepresentationLayers:
    hidden: list[Layer]              # spatial activation outputs, early to deep
    penultimate: Layer | None
    output: Layer | None

    @property
    def all(self) -> list[Layer]:
        chosen: list[Layer] = []
        for layer in [*self.hidden, self.penultimate, self.output]:
            if layer is not None and layer.node not in {c.node for c in chosen}:
                chosen.append(layer)
        return chosen

    def role(self, layer: Layer) -> str:
        if self.output is not None and layer.node == self.output.node:
            return "output"
        if self.penultimate is not None and layer.node == self.penultimate.node:
            return "penultimate"
        return "hidden"


def is_activation(layer: Layer) -> bool:
    return layer.type in ACTIVATION_TYPES or layer.type in ACTIVATION_OPS


def spread(items: list, count: int) -> list:
    """`count` items evenly spaced from the first to the last, in order."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, count).round().astype(int)))]


def representation_layers(graph: ModelGraph, hidden: int = HIDDEN_LAYERS) -> RepresentationLayers:
    """Activation outputs with a spatial map (else convolutions, else any spatial layer), spread
    early to deep, plus the penultimate layer and the output."""
    spatial = [l for l in graph.leaf_layers() if l.is_spatial and l.shape[1] * l.shape[2] > 1]
    candidates = [l for l in spatial if is_activation(l)] or [l for l in spatial if l.is_conv] or spatial
    try:
        penultimate = graph.penultimate_layer()
    except ValueError:
        penultimate = None
    try:
        output = graph.output_layer()
    except StopIteration:
        output = None
    return RepresentationLayers(spread(candidates, hidden), penultimate, output)
