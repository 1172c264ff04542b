"""Performance metrics of a model on the probe set: accuracy per class, per manifest attribute
group and per class x attribute cell (with Wilson intervals), and calibration. Plain functions of the outputs and the labels; the
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
MIN_GROUP_IMAGES = 5   # smaller cells do not count for the worst group accuracy


def probe_metrics(probabilities: np.ndarray, predictions: np.ndarray, labels: np.ndarray,
                  probe: "ProbeDataset", classes: tuple[str, ...]) -> dict:
    """The "metrics" of findings.json: accuracy, per class, per attribute group, per class x attribute
    cell, the worst cell, calibration."""
    correct = predictions == labels
    cells = group_cells(probe, labels, correct, classes)
    worst = worst_group(cells)
    return {"accuracy": round(float(correct.mean()), 4),
            "per_class": per_class_scores(predictions, labels, probe.present_classes, classes),
            "groups": group_accuracy(probe, correct), "group_cells": cells,
            "worst_group": worst, "worst_group_accuracy": worst["accuracy"] if worst else None,
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


def group_cells(probe: "ProbeDataset", labels: np.ndarray, correct: np.ndarray,
                classes: tuple[str, ...]) -> dict[str, dict[str, dict[str, dict]]]:
    """attribute -> class -> value -> accuracy, image count and Wilson interval.

    The groups that show a shortcut are cells of class x attribute: on a probe set balanced over
    class x weather, a model that answers by the weather is right in every cell where the weather
    agrees with the class and wrong in every other, while each weather value alone averages the two."""
    cells: dict[str, dict[str, dict[str, dict]]] = {}
    for attribute in probe.attribute_names:
        values = np.array(probe.attribute(attribute))
        if len(set(values) - {""}) < 2:
            continue
        cells[attribute] = {}
        for label in np.unique(labels):
            in_class = labels == label
            row = {}
            for value in sorted(set(values[in_class]) - {""}):
                members = in_class & (values == value)
                n, hits = int(members.sum()), int(correct[members].sum())
                low, high = wilson(hits, n)
                row[value] = {"accuracy": round(hits / n, 4), "n": n, "ci": [round(low, 4), round(high, 4)]}
            cells[attribute][classes[label]] = row
    return cells


def worst_group(cells: dict[str, dict[str, dict[str, dict]]]) -> dict | None:
    """The class x attribute cell of least accuracy among those of MIN_GROUP_IMAGES images or more."""
    candidates = [{"attribute": attribute, "class": name, "value": value, "accuracy": cell["accuracy"], "n": cell["n"]}
                  for attribute, by_class in cells.items() for name, row in by_class.items()
                  for value, cell in row.items() if cell["n"] >= MIN_GROUP_IMAGES]
    return min(candidates, key=lambda cell: (cell["accuracy"], -cell["n"]), default=None)


def with_cue_cells(metrics: dict, findings: list) -> dict:
    """The metrics with the shortcut findings' class x cue cells (the discovered cue's levels) counted in
    the worst group: without a manifest, or with one that misses the cue, they are where the model fails."""
    grids = {f.evidence["class_by_cue"]["cue"]: f.evidence["class_by_cue"]["cells"]
             for f in findings if f.category == "shortcut" and "class_by_cue" in f.evidence}
    cells = {cue: grid for cue, grid in grids.items() if cue not in (metrics.get("group_cells") or {})}
    discovered = worst_group(cells)
    current = metrics.get("worst_group")
    if discovered is None or (current is not None and current["accuracy"] <= discovered["accuracy"]):
        return metrics
    return metrics | {"worst_group": discovered | {"discovered": True},
                      "worst_group_accuracy": discovered["accuracy"]}


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


def worst_group_words(worst: dict | None) -> str:
    if worst is None:
        return "no manifest attributes"
    return (f"{worst['accuracy']:.1%} ({worst['class']} with {worst['attribute']} = {worst['value']}, "
            f"{worst['n']} images)")


def pct(value, decimals: int = 1) -> str:
    """A fraction as a percentage (one decimal unless told); n/a when there is none."""
    return "n/a" if value is None else f"{value:.{decimals}%}"
