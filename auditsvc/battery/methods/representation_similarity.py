"""Representation similarity of two sets of neurons: SVCCA, PWCCA, linear CKA and debiased CKA.

Inputs are activation matrices shaped (datapoints, neurons): a neuron is its vector of
activations over the datapoints (probe images, or image positions). Every measure works on
the centred activations, so a constant offset per neuron changes nothing.

- SVCCA (Raghu et al. 2017): keep the fewest singular directions that explain 99% of the
  variance of each side, then CCA between the kept subspaces; the mean canonical correlation.
- PWCCA (Morcos et al. 2018): CCA on all directions, the canonical correlations weighted by how
  much of x's (centred) activity each canonical direction accounts for.
- Linear CKA (Kornblith et al. 2019) and debiased CKA (the unbiased HSIC estimator of Song et
  al. 2012 in place of the biased one, as in Nguyen, Raghu and Kornblith 2021).

CCA is computed from orthonormal bases (thin SVD of the centred matrices, rank-truncated): the
canonical correlations are the singular values of Qx^T Qy. Any measure on a side with no
variance at all is NaN. Decompose once (`decompose`) to compare one layer with many.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

VARIANCE_KEPT = 0.99         # SVCCA: share of the variance (sum of s^2) the kept directions explain
DATAPOINTS_PER_NEURON = 5    # below this many datapoints per neuron, CCA-type measures are biased upwards
MAX_DATAPOINTS = 8192        # larger matrices are subsampled (deterministically) by to_datapoints


@dataclass(frozen=True)
class Decomposition:
    """Centred activations as a thin SVD, u * s @ vt, with directions of zero variance dropped."""
    u: np.ndarray       # (datapoints, rank), orthonormal columns
    s: np.ndarray       # (rank,), descending
    vt: np.ndarray      # (rank, neurons)
    neurons: int

    @property
    def datapoints(self) -> int:
        return self.u.shape[0]

    @property
    def rank(self) -> int:
        return len(self.s)

    def features(self) -> np.ndarray:
        """The centred activations rotated onto their singular directions: same Gram matrix, fewer columns."""
        return self.u * self.s

    def kept(self, share: float = VARIANCE_KEPT) -> int:
        """The fewest directions whose variance (s^2) adds up to `share` of the total."""
        if self.rank == 0:
            return 0
        energy = np.cumsum(self.s ** 2) / np.sum(self.s ** 2)
        return min(self.rank, int(np.searchsorted(energy, share - 1e-12)) + 1)


Activations = np.ndarray | Decomposition


def decompose(x: np.ndarray) -> Decomposition:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a (datapoints, neurons) matrix, got shape {x.shape}")
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    # Rank as numpy's matrix_rank decides it; also drop a whole matrix of rounding noise.
    tolerance = max(s[0] * max(centred.shape) * np.finfo(np.float64).eps if len(s) else 0.0, 1e-12)
    rank = int(np.sum(s > tolerance))
    return Decomposition(u[:, :rank], s[:rank], vt[:rank], x.shape[1])


def _decomposed(x: Activations) -> Decomposition:
    return x if isinstance(x, Decomposition) else decompose(x)


def _check_pair(x: Decomposition, y: Decomposition) -> None:
    if x.datapoints != y.datapoints:
        raise ValueError(f"the two matrices have {x.datapoints} and {y.datapoints} datapoints; they must match")


def _canonical(x: Decomposition, y: Decomposition, kx: int | None = None, ky: int | None = None):
    """Canonical correlations of the first kx / ky directions of each side, and x's canonical weights."""
    qx, qy = x.u[:, :kx], y.u[:, :ky]
    a, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), a


def cca(x: Activations, y: Activations) -> np.ndarray:
    """All canonical correlations between x and y, descending (min(rank x, rank y) of them)."""
    x, y = _decomposed(x), _decomposed(y)
    _check_pair(x, y)
    return _canonical(x, y)[0]


def svcca(x: Activations, y: Activations, keep: float = VARIANCE_KEPT, return_correlations: bool = False):
    """Mean canonical correlation between the directions keeping `keep` of each side's variance."""
    x, y = _decomposed(x), _decomposed(y)
    _check_pair(x, y)
    rho, _ = _canonical(x, y, x.kept(keep), y.kept(keep))
    value = float(rho.mean()) if len(rho) else float("nan")
    return (value, rho) if return_correlations else value


def pwcca(x: Activations, y: Activations, return_weights: bool = False):
    """Projection-weighted CCA: canonical correlations weighted by x's activity along each direction.

    Weight of canonical direction h_i: sum over x's neurons j of |<h_i, x_j>| with x_j the neuron's
    centred activation vector, normalized to sum to 1. Not symmetric: x is the side weighed."""
    x, y = _decomposed(x), _decomposed(y)
    _check_pair(x, y)
    rho, a = _canonical(x, y)
    if not len(rho):
        return (float("nan"), np.zeros(0)) if return_weights else float("nan")
    # h_i = Qx a_i, x_centred = Qx diag(s) Vt, so <h_i, x_j> = (a_i^T diag(s) Vt)_j.
    projections = a.T @ (x.s[:, None] * x.vt)
    weights = np.abs(projections).sum(axis=1)
    weights = weights / weights.sum()
    value = float(np.sum(weights * rho))
    return (value, weights) if return_weights else value


def linear_cka(x: Activations, y: Activations) -> float:
    """||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on the centred activations."""
    x, y = _decomposed(x), _decomposed(y)
    _check_pair(x, y)
    if not x.rank or not y.rank:
        return float("nan")
    cross = (x.u * x.s).T @ (y.u * y.s)
    return float(np.sum(cross ** 2) / (np.sqrt(np.sum(x.s ** 4)) * np.sqrt(np.sum(y.s ** 4))))


def debiased_cka(x: Activations, y: Activations) -> float:
    """CKA with the unbiased HSIC estimator (Song et al. 2012): near 0 for unrelated data at any size."""
    x, y = _decomposed(x), _decomposed(y)
    _check_pair(x, y)
    n = x.datapoints
    if n < 4 or not x.rank or not y.rank:
        return float("nan")
    fx, fy = x.features(), y.features()
    cross = _unbiased_hsic(np.sum((fx.T @ fy) ** 2), fx, fy, n)
    self_x = _unbiased_hsic(np.sum(x.s ** 4), fx, fx, n)
    self_y = _unbiased_hsic(np.sum(y.s ** 4), fy, fy, n)
    if self_x <= 0 or self_y <= 0:
        return float("nan")
    return float(cross / np.sqrt(self_x * self_y))


def _unbiased_hsic(trace_kl: float, fx: np.ndarray, fy: np.ndarray, n: int) -> float:
    """n(n-3) HSIC_1 of Song et al. for linear kernels on centred features, from feature-space sums.

    With K = Fx Fx^T (so K 1 = 0) and K~ = K with its diagonal d_x zeroed:
    tr(K~L~) = tr(KL) - d_x.d_y, 1^T K~ 1 = -sum d_x, 1^T K~ L~ 1 = d_x.d_y."""
    dx, dy = np.sum(fx ** 2, axis=1), np.sum(fy ** 2, axis=1)
    return float(trace_kl - n / (n - 2) * dx @ dy + dx.sum() * dy.sum() / ((n - 1) * (n - 2)))


MEASURES: dict[str, Callable[[Activations, Activations], float]] = {
    "svcca": svcca, "pwcca": pwcca, "linear_cka": linear_cka, "debiased_cka": debiased_cka,
}


def similarity_matrix(rows: list[Activations], columns: list[Activations], measure: str) -> np.ndarray:
    """The measure between every row layer and every column layer, (len(rows), len(columns))."""
    compare = MEASURES[measure]
    rows, columns = [_decomposed(r) for r in rows], [_decomposed(c) for c in columns]
    return np.array([[compare(r, c) for c in columns] for r in rows], dtype=np.float64).reshape(len(rows), len(columns))


def few_datapoints(x: Activations, y: Activations | None = None,
                   ratio: int = DATAPOINTS_PER_NEURON) -> bool:
    """True when there are fewer than `ratio` datapoints per neuron of the wider side."""
    sides = [x] if y is None else [x, y]
    neurons = max(s.neurons if isinstance(s, Decomposition) else np.shape(s)[1] for s in sides)
    datapoints = x.datapoints if isinstance(x, Decomposition) else np.shape(x)[0]
    return datapoints < ratio * neurons


def to_datapoints(activation, other=None, max_datapoints: int = MAX_DATAPOINTS) -> np.ndarray:
    """A layer's output as a (datapoints, neurons) matrix.

    Conv maps (N, C, H, W) are averaged over space to (N, C), unless `other` (the layer compared
    with) has the same spatial size: then every position is a datapoint, (N*H*W, C). Other
    shapes are flattened per image. Beyond `max_datapoints` rows, a subsample seeded by the row
    count alone, so two matrices with as many rows keep the same rows."""
    values = np.asarray(activation, dtype=np.float64)
    if values.ndim == 4:
        if other is not None and np.ndim(other) == 4 and tuple(np.shape(other)[2:]) == values.shape[2:]:
            values = values.transpose(0, 2, 3, 1).reshape(-1, values.shape[1])
        else:
            values = values.mean(axis=(2, 3))
    elif values.ndim != 2:
        values = values.reshape(len(values), -1)
    if len(values) > max_datapoints:
        rows = np.sort(np.random.default_rng(len(values)).choice(len(values), max_datapoints, replace=False))
        values = values[rows]
    return values
