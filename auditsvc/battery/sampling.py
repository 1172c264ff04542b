"""Stratified samples for the computations whose cost grows faster than the probe set.

Clustering, eigendecompositions, t-SNE and pairwise comparisons of images cost more than linear
time (or memory) in the images; above a section's cap they run on a stratified sample, each class
keeping its share, and the report says so: "on a stratified sample of 1,000 of 10,000 images".
Below the cap every image is used, and the sample is the images in their order.
"""

from __future__ import annotations

import numpy as np


def stratified_subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` indices, each class keeping its share of the images; sorted."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    position = np.empty(len(labels))
    for label in np.unique(labels):  # spread each class's images evenly over [0, 1), in random order
        members = rng.permutation(np.flatnonzero(labels == label))
        position[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.sort(np.argsort(position, kind="stable")[:limit])


def sample_words(used: int, total: int, noun: str = "images") -> str:
    """'on a stratified sample of 1,000 of 10,000 images' when sampled, else ''."""
    return f"on a stratified sample of {used:,} of {total:,} {noun}" if used < total else ""


def sample_record(cap: int, used: int, total: int) -> dict:
    """What a section's data records of a capped computation."""
    return {"cap": cap, "images": int(used), "of": int(total), "sampled": bool(used < total)}
