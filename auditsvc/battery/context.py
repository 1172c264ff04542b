"""What every section shares: the model graph, the probe set, options, and computed-once data.

The forward pass over the whole probe set happens once (`outputs`), in batches under
`torch.inference_mode`; sections read logits, probabilities and predictions from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from .dataset import ProbeDataset
from .model.graph import ModelGraph
from .model.loading import LoadedModel

Progress = Callable[[float, str], None]


@dataclass
class AuditOptions:
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 32
    samples: int = 8                 # images shown in per-image figures
    ig_steps: int = 32
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15   # noise std as a fraction of the input range
    occlusion_window: int | None = None   # pixels; default about 1/8 of the input side
    occlusion_stride: int | None = None   # default half the window
    sections: list[str] | None = None     # None: the whole battery

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Outputs:
    logits: np.ndarray          # (N, K) float32
    probabilities: np.ndarray   # (N, K)
    predictions: np.ndarray     # (N,) int
    finite: np.ndarray          # (N,) bool: logits are all finite


@dataclass
class AuditContext:
    model: LoadedModel
    graph: ModelGraph
    probe: ProbeDataset
    options: AuditOptions
    reference: LoadedModel | None = None
    progress: Progress = field(default=lambda fraction, stage: None)
    cache: dict[str, Any] = field(default_factory=dict)   # results one section shares with a later one

    @property
    def spec(self):
        return self.model.meta.input

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.meta.classes

    @property
    def device(self) -> torch.device:
        return self.graph.device

    @cached_property
    def labels(self) -> np.ndarray:
        return self.probe.labels

    @cached_property
    def outputs(self) -> Outputs:
        logits = np.zeros((len(self.probe), len(self.classes)), dtype=np.float32)
        with torch.inference_mode():
            for indices, batch in self.probe.batches(self.spec, self.options.batch_size):
                logits[indices] = self.graph(batch.to(self.device)).float().cpu().numpy()
        finite = np.isfinite(logits).all(axis=1)
        safe = np.where(np.isfinite(logits), logits, 0.0)
        shifted = safe - safe.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return Outputs(logits, probabilities, probabilities.argmax(axis=1), finite)

    @cached_property
    def sample_indices(self) -> list[int]:
        """Images for per-image figures: spread over classes, correct and wrong ones, seeded."""
        rng = np.random.default_rng(self.options.seed)
        predictions = self.outputs.predictions
        per_class: list[list[int]] = []
        for label in rng.permutation(self.probe.present_classes):
            members = np.flatnonzero(self.labels == label)
            right = list(rng.permutation(members[predictions[members] == label]))
            wrong = list(rng.permutation(members[predictions[members] != label]))
            # Mostly correct images, with a wrong one second where there is one.
            per_class.append(right[:1] + wrong[:1] + right[1:] + wrong[1:])
        chosen: list[int] = []
        while len(chosen) < min(self.options.samples, len(self.probe)):
            for members in per_class:
                if members and len(chosen) < self.options.samples:
                    chosen.append(int(members.pop(0)))
        return chosen

    @cached_property
    def reference_graph(self) -> ModelGraph | None:
        if self.reference is None:
            return None
        return ModelGraph(self.reference.program, self.reference.meta.input.size, self.device,
                          self.reference.module_types)

    def pooled_activations(self, names: list[str], graph: ModelGraph | None = None) -> dict[str, np.ndarray]:
        """(N, channels) per layer over the whole probe set: spatial maps averaged, one pass per batch.

        Cached per graph and layer, so sections share the passes."""
        graph = graph or self.graph
        key = "model" if graph is self.graph else "reference"
        store = self.cache.setdefault(f"pooled:{key}", {})
        missing = [n for n in names if n not in store]
        if missing:
            spec = self.spec if graph is self.graph else self.reference.meta.input
            parts: dict[str, list[np.ndarray]] = {n: [] for n in missing}
            with torch.inference_mode():
                for _, batch in self.probe.batches(spec, self.options.batch_size):
                    _, outputs = graph.activations(batch.to(self.device), missing)
                    for name, value in outputs.items():
                        value = value.float()
                        pooled = value.mean(dim=(2, 3)) if value.dim() == 4 else value.flatten(1)
                        parts[name].append(pooled.cpu().numpy())
            store.update({n: np.concatenate(parts[n]) for n in missing})
        return {n: store[n] for n in names}

    def sample_batch(self) -> torch.Tensor:
        return self.probe.tensors(self.sample_indices, self.spec).to(self.device)

    def sample_pixels(self) -> np.ndarray:
        return self.probe.pixels(self.sample_indices, self.spec)

    def sample_label(self, index: int) -> str:
        """'tank -> no_tank (0.93)': true class, predicted class and its probability."""
        truth, predicted = self.classes[self.labels[index]], self.classes[self.outputs.predictions[index]]
        probability = self.outputs.probabilities[index, self.outputs.predictions[index]]
        arrow = "=" if truth == predicted else "->"
        return f"{truth} {arrow} {predicted} ({probability:.2f})" if arrow == "->" else f"{truth} ({probability:.2f})"

    def generator(self, salt: str) -> torch.Generator:
        """A torch RNG seeded from the audit seed and the caller's name: reproducible, independent."""
        import zlib

        return torch.Generator(device="cpu").manual_seed(self.options.seed * 1_000_003 + zlib.crc32(salt.encode()))
