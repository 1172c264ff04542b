"""Where the model looks: attribution mass in regions, and SpRAy clusters of saliency maps.

For every probe image: gradient saliency and Grad-CAM for the predicted class. Mass shares
are compared with the region's share of the image (a ratio above 1 means the model looks
there more than at a random pixel). SpRAy (Lapuschkin et al. 2019) clusters one class's
Grad-CAM maps spectrally; the eigengap says how many distinct strategies the class shows.
Its dense eigendecomposition is cubic in the class's images: a class of more than SPRAY_MAX_IMAGES
is clustered on a stratified sample (by true label) of that many.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.neighbors import kneighbors_graph

from ..dataset import ProbeDataset
from ..methods import attribution
from ..model.graph import ModelGraph
from ..model.meta import InputSpec
from ..progress import SectionProgress, no_progress
from ..sampling import stratified_subsample
from .interventions import region_mask

REGIONS = ("border", "corner_top_left", "corner_top_right", "corner_bottom_left", "corner_bottom_right")
SMALL = 16          # side of the maps SpRAy clusters
MIN_CLASS_IMAGES = 12
MAX_CLUSTERS = 6
SPRAY_MAX_IMAGES = 1000   # images clustered per class: a 1,000 x 1,000 eigenproblem takes about a second


@dataclass
class Looking:
    methods: tuple[str, ...]
    maps: dict[str, np.ndarray]                 # method -> (N, SMALL, SMALL) normalized maps
    region_ratio: dict[str, dict[str, float]]   # method -> region -> mean mass share / area share
    box_share: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (N,) mass inside the box, NaN if none
    box_area: np.ndarray | None = None           # (N,) share of the image the box covers
    grad_cam_layer: str = ""


def compute(graph: ModelGraph, probe: ProbeDataset, spec: InputSpec, predictions: np.ndarray,
            settings: attribution.AttributionSettings, batch_size: int,
            progress: SectionProgress = no_progress) -> Looking:
    """Attribution for every probe image, in batches; keeps only small maps and region masses."""
    boxes = probe.boxes(spec)
    height, width = spec.height, spec.width
    masks = {r: torch.from_numpy(region_mask(r, height, width)).float() for r in REGIONS}
    methods = ("gradient", "grad_cam")
    small = {m: np.zeros((len(probe), SMALL, SMALL), np.float32) for m in methods}
    region_mass = {m: {r: [] for r in REGIONS} for m in methods}
    box_share = {m: np.full(len(probe), np.nan) for m in methods}
    for indices, batch in probe.batches(spec, batch_size):
        batch = batch.to(graph.device)
        targets = torch.as_tensor(predictions[indices], device=graph.device)
        for method in methods:
            values = attribution.METHODS[method].heatmaps(graph, batch, targets, settings).float()
            total = values.sum(dim=(1, 2)).clamp(min=1e-12)
            for region, mask in masks.items():
                region_mass[method][region] += ((values * mask).sum(dim=(1, 2)) / total).tolist()
            for row, index in enumerate(indices):
                if not np.isnan(boxes[index]).any():
                    inside = torch.from_numpy(region_mask("object", height, width, boxes[index])).float()
                    box_share[method][index] = float((values[row] * inside).sum() / total[row])
            pooled = F.adaptive_avg_pool2d(values[:, None], SMALL)[:, 0]
            small[method][indices] = (pooled / pooled.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)).numpy()
        progress((indices[-1] + 1) / len(probe))
    areas = {r: float(m.mean()) for r, m in masks.items()}
    ratio = {m: {r: float(np.mean(region_mass[m][r]) / areas[r]) for r in REGIONS} for m in methods}
    box_area = np.array([np.nan if np.isnan(b).any() else (b[2] - b[0]) * (b[3] - b[1]) / (height * width)
                         for b in boxes])
    return Looking(methods, small, ratio, box_share, box_area, settings.grad_cam_layer)


@dataclass
class SprayResult:
    label: int
    members: np.ndarray             # image indices clustered: those predicted as this class, or a sample of them
    clusters: np.ndarray            # cluster id per member
    eigenvalues: np.ndarray
    count: int                      # clusters suggested by the eigengap
    gap: float
    predicted: int = 0              # images predicted as this class (more than members when sampled)


def spray(maps: np.ndarray, predictions: np.ndarray, seed: int, labels: np.ndarray | None = None,
          ) -> list[SprayResult]:
    """Per predicted class: spectral clustering of its attribution maps, count from the eigengap; a class
    of more than SPRAY_MAX_IMAGES images on a sample of them stratified by `labels` (the true labels)."""
    results = []
    labels = predictions if labels is None else labels
    for label in np.unique(predictions):
        predicted = np.flatnonzero(predictions == label)
        if len(predicted) < MIN_CLASS_IMAGES:
            continue
        members = predicted[stratified_subsample(labels[predicted], SPRAY_MAX_IMAGES, seed + int(label))]
        features = maps[members].reshape(len(members), -1)
        features = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
        neighbours = min(10, len(members) - 1)
        affinity = kneighbors_graph(features, neighbours, include_self=False)
        affinity = 0.5 * (affinity + affinity.T)
        eigenvalues = np.sort(np.linalg.eigvalsh(laplacian(affinity.toarray(), normed=True)))[: MAX_CLUSTERS + 1]
        gaps = np.diff(eigenvalues)
        count = int(np.argmax(gaps[:MAX_CLUSTERS]) + 1)
        if count == 1:
            clusters = np.zeros(len(members), int)
        else:
            clusters = SpectralClustering(count, affinity="precomputed", random_state=seed).fit_predict(affinity.toarray())
        results.append(SprayResult(int(label), members, clusters, eigenvalues, count, float(gaps[count - 1]),
                                   len(predicted)))
    return results
