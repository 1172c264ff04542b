"""Performance metrics of a model on the probe set: accuracy per class and per manifest attribute
group (with Wilson intervals), and calibration. Plain functions of the outputs and the labels; the
audit context computes them once (`AuditContext.metrics`) for findings.json and the performance section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import precision_recall_fscore_support

if TYPE_CHECKING:
    from .dataset import ProbeDataset

CALIBRATION_BINS = 15
MIN_GROUP_IMAGES = 5   # smaller attribute groups do not count for the worst group accuracy


def probe_metrics(probabilities: np.ndarray, predictions: np.ndarray, labels: np.ndarray,
                  probe: "ProbeDataset", classes: tuple[str, ...]) -> dict:
    """The "metrics" of findings.json: accuracy, per class, per attribute group, worst group, calibration."""
    correct = predictions == labels
    groups = group_accuracy(probe, correct)
    worst = min((g["accuracy"] for values in groups.values() for g in values.values() if g["n"] >= MIN_GROUP_IMAGES),
                default=None)
    return {"accuracy": round(float(correct.mean()), 4),
            "per_class": per_class_scores(predictions, labels, probe.present_classes, classes),
            "groups": groups, "worst_group_accuracy": worst,
            "calibration": calibration_stats(probabilities.max(axis=1), correct, probabilities, labels)}


def per_class_scores(predictions: np.ndarray, labels: np.ndarray, present: list[int],
                     classes: tuple[str, ...]) -> dict[str, dict]:
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=present,
                                                                     zero_division=0)
    return {classes[c]: {"precision": round(float(p), 4), "recall": round(float(r), 4),
                         "f1": round(float(f), 4), "support": int(s)}
            for c, p, r, f, s in zip(present, precision, recall, f1, support)}


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def group_accuracy(probe: "ProbeDataset", correct: np.ndarray) -> dict[str, dict[str, dict]]:
    """attribute -> value -> accuracy, image count and Wilson interval; attributes with one value left out."""
    groups: dict[str, dict[str, dict]] = {}
    for attribute in probe.attribute_names:
        values = np.array(probe.attribute(attribute))
        table = {}
        for value in sorted(set(values) - {""}):
            members = values == value
            n, hits = int(members.sum()), int(correct[members].sum())
            low, high = wilson(hits, n)
            table[value] = {"accuracy": round(hits / n, 4), "n": n, "ci": [round(low, 4), round(high, 4)]}
        if len(table) > 1:
            groups[attribute] = table
    return groups


def calibration_stats(confidence: np.ndarray, correct: np.ndarray, probabilities: np.ndarray,
                      labels: np.ndarray) -> dict:
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    ece, table = 0.0, []
    for b in range(CALIBRATION_BINS):
        members = bins == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            ece += members.mean() * gap
            table.append([float(edges[b]), float(edges[b + 1]), int(members.sum()),
                          float(confidence[members].mean()), float(correct[members].mean())])
    onehot = np.eye(probabilities.shape[1])[labels]
    brier = float(((probabilities - onehot) ** 2).sum(axis=1).mean())
    return {"ece": round(float(ece), 4), "brier": round(brier, 4),
            "mean_confidence": round(float(confidence.mean()), 4), "bins": table}
