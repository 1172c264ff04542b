"""Observational evidence: does a property predict the labels, or the model's predictions?

A property is discretized into quantile bins (or its categories). Two numbers per target:
- predictive power: cross-validated balanced accuracy of predicting the target from the
  property alone, rescaled so 0 is the naive baseline (always the majority class) and 1 is
  perfect;
- a permutation test on the mutual information between bin and target, optionally with the
  target permuted only within strata (the true label), which asks whether the property
  predicts the model's predictions beyond what the labels explain.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

MAX_BINS = 8
MIN_PER_BIN = 8
NULL_BLOCK_ELEMENTS = 2**21   # shuffled labels held at once by a permutation test (16 MiB of int64)


def bin_codes(values: np.ndarray | list[str], classes: int) -> np.ndarray:
    """Integer bins: categories as they are, numbers by quantiles (fewer bins for small sets)."""
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        _, codes = np.unique(values, return_inverse=True)
        return codes
    count = int(np.clip(len(values) // (MIN_PER_BIN * max(classes, 2)), 2, MAX_BINS))
    edges = np.unique(np.quantile(values, np.linspace(0, 1, count + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def tertiles(values: np.ndarray) -> np.ndarray:
    edges = np.unique(np.quantile(values, [1 / 3, 2 / 3]))
    return np.searchsorted(edges, values, side="right")


def predictive_power(values: np.ndarray, target: np.ndarray, seed: int = 0, folds: int = 5,
                     categorical: bool = False) -> float:
    """Cross-validated balanced accuracy of predicting target from this one feature, rescaled so
    0 is the naive baseline (always the majority class) and 1 is perfect.

    Numbers: a shallow decision tree on the value (it finds the thresholds); categories: each
    category votes the majority class it had in the training folds."""
    present, target = np.unique(target, return_inverse=True)
    if len(present) < 2:
        return 0.0
    splits = min(folds, int(np.bincount(target).min()))
    if splits < 2:
        return 0.0
    values = np.asarray(values)
    predictions = np.empty_like(target)
    splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    for train, test in splitter.split(values.reshape(-1, 1), target):
        if categorical:
            predictions[test] = _category_votes(values, target, train, len(present))[values[test]]
        else:
            tree = DecisionTreeClassifier(max_leaf_nodes=MAX_BINS, min_samples_leaf=MIN_PER_BIN,
                                          class_weight="balanced", random_state=seed)
            predictions[test] = tree.fit(values[train].reshape(-1, 1), target[train]).predict(values[test].reshape(-1, 1))
    chance = 1 / len(present)
    return float(max(0.0, (balanced_accuracy_score(target, predictions) - chance) / (1 - chance)))


def _category_votes(codes: np.ndarray, target: np.ndarray, train: np.ndarray, classes: int) -> np.ndarray:
    table = np.zeros((codes.max() + 1, classes))
    np.add.at(table, (codes[train], target[train]), 1)
    fallback = np.bincount(target[train], minlength=classes).argmax()
    return np.where(table.sum(axis=1) > 0, table.argmax(axis=1), fallback)


def mutual_information(codes: np.ndarray, targets: np.ndarray, classes: int) -> np.ndarray:
    """MI (nats) between codes (n,) and each row of targets (p, n): vectorized over rows."""
    bins = codes.max() + 1
    rows, n = targets.shape
    flat = (np.arange(rows)[:, None] * bins * classes + codes[None, :] * classes + targets).ravel()
    joint = np.bincount(flat, minlength=rows * bins * classes).reshape(rows, bins, classes) / n
    marginal_code = joint.sum(axis=2, keepdims=True)
    marginal_target = joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = joint * np.log(joint / (marginal_code * marginal_target))
    return np.nansum(terms, axis=(1, 2))


def permutation_test(codes: np.ndarray, target: np.ndarray, *, strata: np.ndarray | None = None,
                     permutations: int = 2000, most: int = 40000, seed: int = 0) -> tuple[float, float]:
    """(statistic, p-value): MI of codes and target, against targets shuffled (within strata).

    Runs `permutations` shuffles, and more (up to `most`) while fewer than 10 shuffles reach
    the observed value, so strong associations get p-values small enough to survive the
    correction for the number of properties."""
    rng = np.random.default_rng(seed)
    strata = np.zeros(len(target), int) if strata is None else strata
    classes = int(target.max()) + 1
    parts = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        if len(np.unique(target[members])) < 2 or len(np.unique(codes[members])) < 2:
            continue
        sub_codes = np.unique(codes[members], return_inverse=True)[1]
        parts.append((len(members) / len(target), sub_codes, target[members]))
    if not parts:
        return 0.0, 1.0
    observed = sum(w * float(mutual_information(c, t[None, :], classes)[0]) for w, c, t in parts)
    return observed, _p_value(observed, lambda: sum(
        w * _shuffled_information(c, t, classes, permutations, rng) for w, c, t in parts), permutations, most)


def _shuffled_information(codes: np.ndarray, target: np.ndarray, classes: int, shuffles: int,
                          rng: np.random.Generator) -> np.ndarray:
    """MI of codes with `shuffles` shuffles of target, a block of shuffles at a time so that memory stays
    bounded however many images there are; the same draws as shuffling all rows at once."""
    rows = max(1, NULL_BLOCK_ELEMENTS // max(1, len(target)))
    return np.concatenate([
        mutual_information(codes, rng.permuted(np.tile(target, (min(rows, shuffles - start), 1)), axis=1), classes)
        for start in range(0, shuffles, rows)])


def _p_value(observed: float, null_batch: Callable[[], np.ndarray], batch: int, most: int) -> float:
    """Share of null draws at or above `observed` (with the observed one counted): batches of `batch`
    draws, more while fewer than 10 reach it, up to `most`."""
    reached, done = 0, 0
    while done < most and (done == 0 or reached < 10):
        reached += int(np.sum(null_batch() >= observed - 1e-12))
        done += batch
    return float((1 + reached) / (1 + done))


def agreement_test(values: np.ndarray, labels: np.ndarray, correct: np.ndarray, *, permutations: int = 2000,
                   most: int = 40000, seed: int = 0, minimum: int = 5) -> tuple[float, float]:
    """(gap, p-value): is the model right more often where the property sides with the label?

    Per label, accuracy above the property's median minus below it; the gap is half the spread
    of those differences across labels. With two classes it is accuracy where the property's half
    agrees with the label (the pairing the accuracies favour) minus where it disagrees: the ground
    truth's cue-aligned minus cue-flipped accuracy, read off the probe images. Every image counts,
    where a gap between two tertiles within one label uses a sixth of them.

    Null: the property shuffled within each label (labels and correctness kept). A shuffle only
    changes how many of a label's correct answers land above the median, which is hypergeometric,
    so the shuffles are drawn as those counts; more are added as in permutation_test."""
    median = np.median(values)
    high = values > median
    if high.all() or not high.any():
        high = values >= median
    cells = []   # per label: images, images above the median, correct answers, correct answers above
    for label in np.unique(labels):
        members = labels == label
        size, above = int(members.sum()), int(high[members].sum())
        if minimum <= above <= size - minimum:
            cells.append((size, above, int(correct[members].sum()), int(correct[members & high].sum())))
    if len(cells) < 2:
        return 0.0, 1.0
    observed = float(_agreement_gap(cells, [np.array([right_above]) for *_, right_above in cells])[0])
    rng = np.random.default_rng(seed)
    return observed, _p_value(observed, lambda: _agreement_gap(cells, [
        rng.hypergeometric(right, size - right, above, permutations) for size, above, right, _ in cells]),
        permutations, most)


def _agreement_gap(cells: list[tuple[int, int, int, int]], right_above: list[np.ndarray]) -> np.ndarray:
    """Half the spread across labels of accuracy above the median minus below, per draw."""
    differences = np.stack([hits / above - (right - hits) / (size - above)
                            for (size, above, right, _), hits in zip(cells, right_above)])
    return (differences.max(axis=0) - differences.min(axis=0)) / 2


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control over all properties tested)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()
