"""What every section shares: the model graph, the probe set, options, and computed-once data.

The forward pass over the whole probe set happens once (`outputs`), in batches under
`torch.inference_mode`; sections read logits, probabilities and predictions from here.

Whatever more than one section (or the runner) needs is a named property or method here, computed
by whichever asks first: `metrics`, `grad_cam_layer`, `attribution_settings`, `sample_attributions`,
`looking`, `representation_layers`, `feature_channels`, `pooled_activations(...)`. So sections run in
any order, and what a section reads is visible from what it calls. A value that needs random numbers
draws them from its own seeded generator (`generator(salt)`), never from the global RNG's state, so it
is the same whichever section asks first. The computations live in `metrics`, `methods/` and
`probes/`, imported where used, so importing `AuditOptions` stays light.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .dataset import ProbeDataset
from .model.graph import ModelGraph
from .model.loading import LoadedModel
from .progress import Progress, SectionProgress, no_progress

if TYPE_CHECKING:
    from .methods.attribution import AttributionSettings
    from .methods.representation_layers import RepresentationLayers
    from .probes.attribution_regions import Looking


@dataclass
class AuditOptions:
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 32
    samples: int = 8                 # images shown in per-image figures
    ig_steps: int = 256              # integrated gradients' most steps per image (most images need 8-32)
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15   # noise std as a fraction of the input range
    occlusion_window: int | None = None   # pixels; default about 1/8 of the input side
    occlusion_stride: int | None = None   # default half the window
    occlusion_approximate: bool = False   # Krypton's approximate modes; the report states their error
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
class SampleAttributions:
    """Every applicable saliency method's maps of the sample images, for their predicted class."""
    indices: list[int]                # probe indices, as context.sample_indices
    maps: dict[str, np.ndarray]       # method -> (n, H, W), in the order of attribution.METHODS
    seconds: dict[str, float]         # method -> seconds its maps took
    per_image: dict[str, dict[str, list]] = field(default_factory=dict)   # method -> what it did per image

    def of(self, indices: list[int]) -> dict[str, np.ndarray]:
        """The maps of some of the sample images, in the order given."""
        rows = [self.indices.index(i) for i in indices]
        return {method: values[rows] for method, values in self.maps.items()}


@dataclass
class AuditContext:
    model: LoadedModel
    graph: ModelGraph
    probe: ProbeDataset
    options: AuditOptions
    reference: LoadedModel | None = None
    progress: Progress = field(default=lambda fraction, stage: None)
    section_progress: SectionProgress = no_progress   # the running section's (the runner sets it)
    # pooled_activations' per-layer results, per graph ("model", "reference")
    _pooled: dict[str, dict[str, np.ndarray]] = field(default_factory=lambda: {"model": {}, "reference": {}},
                                                      init=False, repr=False)

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
        done = 0
        with torch.inference_mode():
            for indices, batch in self.probe.batches(self.spec, self.options.batch_size):
                logits[indices] = self.graph(batch.to(self.device)).float().cpu().numpy()
                done += len(indices)
                self.section_progress(done / len(self.probe))
        finite = np.isfinite(logits).all(axis=1)
        safe = np.where(np.isfinite(logits), logits, 0.0)
        shifted = safe - safe.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return Outputs(logits, probabilities, probabilities.argmax(axis=1), finite)

    @cached_property
    def sample_indices(self) -> list[int]:
        """Images for per-image figures: spread over classes, and within a class over the manifest
        attributes' values (examples all of one weather would look like a weather shortcut), mostly
        correct ones with a wrong one second where there is one; seeded."""
        rng = np.random.default_rng(self.options.seed)
        predictions = self.outputs.predictions
        attributes = [self.probe.attribute(name) for name in self.probe.attribute_names]
        per_class: list[list[int]] = []
        for label in rng.permutation(self.probe.present_classes):
            strata: dict[tuple, list[int]] = {}
            for index in rng.permutation(np.flatnonzero(self.labels == label)):
                strata.setdefault(tuple(values[index] for values in attributes), []).append(int(index))
            groups = [sorted(members, key=lambda i: predictions[i] != label) for members in strata.values()]
            ordered = [group[row] for row in range(max(map(len, groups))) for group in groups if row < len(group)]
            stratum_of = {i: key for key, members in strata.items() for i in members}
            wrongs = [i for i in ordered if predictions[i] != label]
            if wrongs and ordered[0] not in wrongs:   # second: a wrong one, of another stratum where there is one
                wrong = next((i for i in wrongs if stratum_of[i] != stratum_of[ordered[0]]), wrongs[0])
                ordered.remove(wrong)
                ordered.insert(1, wrong)
            per_class.append(ordered)
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

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """Accuracy per class and per attribute group, calibration: findings.json's "metrics"."""
        from .metrics import probe_metrics

        return probe_metrics(self.outputs.probabilities, self.outputs.predictions, self.labels, self.probe,
                             self.classes)

    @cached_property
    def grad_cam_layer(self) -> str:
        """Where Grad-CAM reads: the deepest layer that still has a spatial map."""
        return self.graph.last_spatial_layer().name

    @cached_property
    def attribution_settings(self) -> "AttributionSettings":
        """The saliency methods' settings from the options: SmoothGrad noise as a share of the input
        range, integrated gradients from a black image."""
        from .methods.attribution import AttributionSettings

        spec = self.spec
        black = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)], device=self.device).view(1, -1, 1, 1)
        return AttributionSettings(
            chunk=self.options.batch_size, grad_cam_layer=self.grad_cam_layer, baseline=black,
            ig_steps=self.options.ig_steps, smoothgrad_samples=self.options.smoothgrad_samples,
            smoothgrad_stdev=self.options.smoothgrad_noise * float(np.mean([1 / s for s in spec.std])),
            noise=partial(self.generator, "smoothgrad"))

    @cached_property
    def sample_attributions(self) -> SampleAttributions:
        """Every applicable saliency method on the sample images: the saliency section shows these maps,
        the explanation checks test them."""
        from .methods import attribution

        inputs = self.sample_batch()
        targets = torch.as_tensor(self.outputs.predictions[self.sample_indices], device=self.device)
        computed = attribution.heatmaps(self.graph, inputs, targets, self.attribution_settings,
                                        attribution.applicable(self.graph), self.section_progress)
        return SampleAttributions(list(self.sample_indices), computed.maps, computed.seconds, computed.per_image)

    @cached_property
    def looking(self) -> "Looking":
        """Gradient and Grad-CAM over every probe image: attribution per region, small maps for SpRAy."""
        from .probes import attribution_regions

        return attribution_regions.compute(self.graph, self.probe, self.spec, self.outputs.predictions,
                                           self.attribution_settings, self.options.batch_size,
                                           self.section_progress)

    @cached_property
    def representation_layers(self) -> "RepresentationLayers":
        """The layers that describe the model's representation (similarity, neurons)."""
        from .methods.representation_layers import representation_layers

        return representation_layers(self.graph)

    @cached_property
    def reference_representation_layers(self) -> "RepresentationLayers | None":
        """The same choice in the reference model, if there is one."""
        from .methods.representation_layers import representation_layers

        return None if self.reference_graph is None else representation_layers(self.reference_graph)

    @cached_property
    def feature_channels(self) -> dict[str, list[int]]:
        """Layer -> the channels activation maximization and top patches show: in an early, a middle and the
        deepest feature layer, those with the largest mean activation over the probe set."""
        from .methods.feature_visualization import SHOWN_CHANNELS, SHOWN_DEPTHS, feature_layers, strongest_channels

        pooled = self.pooled_activations(feature_layers(self.graph, SHOWN_DEPTHS))
        return {layer: strongest_channels(values, SHOWN_CHANNELS) for layer, values in pooled.items()}

    def pooled_activations(self, names: list[str], graph: ModelGraph | None = None) -> dict[str, np.ndarray]:
        """(N, channels) per layer over the whole probe set: spatial maps averaged, one pass per batch.

        Each layer of each graph is computed once, by whichever section asks first."""
        graph = graph or self.graph
        store = self._pooled["model" if graph is self.graph else "reference"]
        missing = [n for n in names if n not in store]
        if missing:
            spec = self.spec if graph is self.graph else self.reference.meta.input
            parts: dict[str, list[np.ndarray]] = {n: [] for n in missing}
            done = 0
            with torch.inference_mode():
                for indices, batch in self.probe.batches(spec, self.options.batch_size):
                    _, outputs = graph.activations(batch.to(self.device), missing)
                    for name, value in outputs.items():
                        value = value.float()
                        pooled = value.mean(dim=(2, 3)) if value.dim() == 4 else value.flatten(1)
                        parts[name].append(pooled.cpu().numpy())
                    done += len(indices)
                    self.section_progress(done / len(self.probe))
            store.update({n: np.concatenate(parts[n]) for n in missing})
        return {n: store[n] for n in names}

    @contextmanager
    def reporting_to(self, progress: SectionProgress):
        """Within the block, what reports through `section_progress` (a computation the block starts, such
        as a cached property) reports to `progress`: a part of the running section's."""
        outer, self.section_progress = self.section_progress, progress
        try:
            yield
        finally:
            self.section_progress = outer

    def sample_batch(self) -> torch.Tensor:
        return self.probe.tensors(self.sample_indices, self.spec).to(self.device)

    def sample_pixels(self) -> np.ndarray:
        return self.probe.pixels(self.sample_indices, self.spec)

    def sample_label(self, index: int, attributes: bool = False) -> str:
        """'tank -> no_tank (0.93)': true class, predicted class and its probability; with `attributes`, a
        second line with up to two of the image's manifest attributes ('weather: sunny')."""
        truth, predicted = self.classes[self.labels[index]], self.classes[self.outputs.predictions[index]]
        probability = self.outputs.probabilities[index, self.outputs.predictions[index]]
        label = f"{truth} -> {predicted} ({probability:.2f})" if truth != predicted else f"{truth} ({probability:.2f})"
        values = [f"{name}: {value}" for name, value in self.image_attributes(index)]
        return label + ("\n" + ", ".join(values) if attributes and values else "")

    def image_attributes(self, index: int, count: int = 2) -> list[tuple[str, str]]:
        """Up to `count` of one probe image's manifest attributes that it has a value for, as (name, value)."""
        values = self.probe.images[index].attributes
        return [(name, values[name]) for name in self.probe.attribute_names[:count] if values.get(name)]

    def generator(self, salt: str) -> torch.Generator:
        """A torch RNG seeded from the audit seed and the caller's name: reproducible, independent."""
        import zlib

        return torch.Generator(device="cpu").manual_seed(self.options.seed * 1_000_003 + zlib.crc32(salt.encode()))
