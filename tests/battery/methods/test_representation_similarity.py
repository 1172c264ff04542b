"""Similarity measures against direct textbook computations, their invariances and baselines."""

import numpy as np
import pytest

from auditsvc.battery.methods import representation_similarity as similarity
from auditsvc.battery.methods.representation_similarity import (cca, debiased_cka, decompose, few_datapoints, linear_cka, pwcca,
                                         similarity_matrix, svcca, to_datapoints)


def related(n=600, p=6, q=5, seed=0, noise=0.5):
    """x and y share a few latent factors: well-conditioned, clearly but not perfectly related."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    x = latent @ rng.normal(size=(4, p)) + noise * rng.normal(size=(n, p)) + 3.0
    y = latent @ rng.normal(size=(4, q)) + noise * rng.normal(size=(n, q)) - 1.0
    return x, y


def textbook_cca(x, y):
    """Canonical correlations and x's coefficient vectors from eig(Sxx^-1 Sxy Syy^-1 Syx)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    values, vectors = np.linalg.eig(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T))
    order = np.argsort(-values.real)[: min(x.shape[1], y.shape[1])]
    return np.sqrt(np.clip(values.real[order], 0, 1)), vectors.real[:, order]


def principal_components(x, count):
    xc = x - x.mean(0)
    values, vectors = np.linalg.eigh(xc.T @ xc)
    return xc @ vectors[:, np.argsort(-values)[:count]]


def hsic(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def unbiased_hsic(k, l):
    """Song et al. (2012), equation (5), on Gram matrices with their diagonals zeroed."""
    n = len(k)
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    ones = np.ones(n)
    return (np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))


def random_rotation(size, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(size, size)))
    return q * np.sign(np.diag(r))


def test_cca_matches_the_textbook_eigen_decomposition():
    x, y = related()
    expected, _ = textbook_cca(x, y)
    np.testing.assert_allclose(cca(x, y), expected, atol=1e-8)
    assert expected[0] > 0.8 and expected[-1] < 0.5  # a case with strong and weak directions


def test_svcca_is_cca_on_the_principal_directions_that_keep_99_percent():
    rng = np.random.default_rng(1)
    x, y = related(p=6, q=5)
    x = np.hstack([x, 1e-4 * rng.normal(size=(len(x), 3))])  # three directions of negligible variance
    kept_x = decompose(x).kept(0.99)
    kept_y = decompose(y).kept(0.99)
    assert kept_x < 9
    value, correlations = svcca(x, y, return_correlations=True)
    expected, _ = textbook_cca(principal_components(x, kept_x), principal_components(y, kept_y))
    np.testing.assert_allclose(correlations, expected, atol=1e-8)
    assert value == pytest.approx(expected.mean(), abs=1e-10)
    assert svcca(x, y, keep=1.0) == pytest.approx(textbook_cca(x, y)[0].mean(), abs=1e-8)


def test_kept_directions_are_the_fewest_explaining_the_share():
    rng = np.random.default_rng(2)
    scales = np.array([10.0, 3.0, 1.0, 0.1, 0.01])
    x = rng.normal(size=(2000, 5)) * scales
    s2 = decompose(x).s ** 2
    share = np.cumsum(s2) / s2.sum()
    kept = decompose(x).kept(0.99)
    assert share[kept - 1] >= 0.99 and (kept == 1 or share[kept - 2] < 0.99)


def test_pwcca_matches_weights_from_textbook_canonical_directions():
    x, y = related(p=5, q=6, seed=3)
    correlations, coefficients = textbook_cca(x, y)
    xc = x - x.mean(0)
    directions = xc @ coefficients
    directions /= np.linalg.norm(directions, axis=0)
    weights = np.abs(directions.T @ xc).sum(axis=1)
    weights /= weights.sum()
    value, ours = pwcca(x, y, return_weights=True)
    np.testing.assert_allclose(ours, weights, atol=1e-6)
    assert value == pytest.approx(np.sum(weights * correlations), abs=1e-8)


def test_linear_cka_matches_the_hsic_formula_with_centering_matrices():
    x, y = related(n=120, p=7, q=4, seed=4)
    k, l = x @ x.T, y @ y.T
    expected = hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)


def test_debiased_cka_matches_the_unbiased_hsic_estimator():
    x, y = related(n=60, p=7, q=4, seed=5)
    k, l = x @ x.T, y @ y.T  # uncentred on purpose: the estimator does not care
    expected = unbiased_hsic(k, l) / np.sqrt(unbiased_hsic(k, k) * unbiased_hsic(l, l))
    assert debiased_cka(x, y) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("measure", ["linear_cka", "debiased_cka"])
def test_cka_is_invariant_to_rotation_and_isotropic_scaling_only(measure):
    compare = similarity.MEASURES[measure]
    x, y = related(n=300, p=6, q=6, seed=6)
    base = compare(x, y)
    assert compare(x @ random_rotation(6, 7), y) == pytest.approx(base, abs=1e-10)
    assert compare(x, 7.5 * y @ random_rotation(6, 8)) == pytest.approx(base, abs=1e-10)
    stretch = np.diag([1.0, 5.0, 0.2, 1.0, 3.0, 0.5]) @ random_rotation(6, 9)
    assert abs(compare(x @ stretch, y) - base) > 0.01  # not invariant to any invertible map


def test_cca_and_pwcca_are_invariant_to_invertible_linear_maps():
    x, y = related(n=400, p=5, q=5, seed=10)
    mixing = np.random.default_rng(11).normal(size=(5, 5)) + 3 * np.eye(5)
    np.testing.assert_allclose(cca(x @ mixing, y), cca(x, y), atol=1e-9)
    np.testing.assert_allclose(cca(x, y @ mixing), cca(x, y), atol=1e-9)


def test_svcca_is_invariant_to_invertible_maps_within_the_kept_subspace():
    rng = np.random.default_rng(12)
    n = 500
    latent = rng.normal(size=(n, 4))
    x = latent @ random_rotation(10, 13)[:4]                  # rank 4 in 10 neurons, equal variances
    y = np.tanh(latent[:, :3]) @ rng.normal(size=(3, 8)) + 0.3 * rng.normal(size=(n, 8))
    mixing = random_rotation(10, 14) @ np.diag(np.linspace(1.0, 2.5, 10)) @ random_rotation(10, 15)
    assert decompose(x).kept() == decompose(x @ mixing).kept() == 4
    assert svcca(x @ mixing, y) == pytest.approx(svcca(x, y), abs=1e-9)


def test_pwcca_ignores_constant_offsets():
    x, y = related(n=300, p=6, q=5, seed=16)
    offset_x = np.random.default_rng(17).normal(size=6) * 100
    offset_y = np.random.default_rng(18).normal(size=5) * 100
    assert pwcca(x + offset_x, y + offset_y) == pytest.approx(pwcca(x, y), abs=1e-9)
    value, weights = pwcca(x, y, return_weights=True)
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert value <= svcca(x, y, keep=1.0) + 0.2  # a weighted mean of the same correlations


@pytest.mark.parametrize("measure", sorted(similarity.MEASURES))
def test_identical_inputs_give_one(measure):
    x, _ = related(n=200, p=8, q=3, seed=19)
    assert similarity.MEASURES[measure](x, x) == pytest.approx(1.0, abs=1e-9)


def test_independent_data_is_near_the_baseline():
    rng = np.random.default_rng(20)
    x, y = rng.normal(size=(3000, 12)), rng.normal(size=(3000, 12))
    assert linear_cka(x, y) < 0.02
    assert abs(debiased_cka(x, y)) < 0.01
    assert svcca(x, y) < 0.1 and pwcca(x, y) < 0.1


def test_debiased_cka_stays_near_zero_where_linear_cka_is_inflated_by_few_datapoints():
    rng = np.random.default_rng(21)
    x, y = rng.normal(size=(40, 64)), rng.normal(size=(40, 64))
    assert linear_cka(x, y) > 0.5
    assert abs(debiased_cka(x, y)) < 0.1
    assert few_datapoints(x, y) and not few_datapoints(x[:, :8], y[:, :8])


def test_a_side_without_variance_gives_nan_and_mismatched_rows_raise():
    x, y = related(n=50, seed=22)
    constant = np.ones((50, 3))
    for measure in similarity.MEASURES.values():
        assert np.isnan(measure(constant, y))
    with pytest.raises(ValueError):
        linear_cka(x, y[:40])


def test_similarity_matrix_compares_every_pair():
    x, y = related(n=100, seed=23)
    layers = [decompose(x), decompose(y)]
    matrix = similarity_matrix(layers, layers, "linear_cka")
    assert matrix.shape == (2, 2)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert matrix[0, 1] == pytest.approx(matrix[1, 0]) == pytest.approx(linear_cka(x, y))


def test_to_datapoints_pools_conv_maps_or_uses_positions_when_sizes_match():
    rng = np.random.default_rng(24)
    maps, same, smaller = rng.normal(size=(6, 4, 5, 5)), rng.normal(size=(6, 8, 5, 5)), rng.normal(size=(6, 8, 2, 2))
    np.testing.assert_allclose(to_datapoints(maps), maps.mean(axis=(2, 3)))
    np.testing.assert_allclose(to_datapoints(maps, smaller), maps.mean(axis=(2, 3)))
    positions = to_datapoints(maps, same)
    assert positions.shape == (6 * 25, 4)
    np.testing.assert_allclose(positions[7], maps[0, :, 1, 2])  # image 0, row 1, column 2
    assert to_datapoints(rng.normal(size=(6, 3, 2))).shape == (6, 6)


def test_to_datapoints_subsamples_big_matrices_the_same_way_for_both_sides():
    rng = np.random.default_rng(25)
    a, b = rng.normal(size=(40, 3, 10, 10)), rng.normal(size=(40, 5, 10, 10))
    rows_a, rows_b = to_datapoints(a, b, max_datapoints=500), to_datapoints(b, a, max_datapoints=500)
    assert rows_a.shape == (500, 3) and rows_b.shape == (500, 5)
    full_a = to_datapoints(a, b, max_datapoints=10**6)
    kept = [np.flatnonzero((full_a == row).all(axis=1))[0] for row in rows_a[:20]]
    np.testing.assert_allclose(to_datapoints(b, a, max_datapoints=10**6)[kept], rows_b[:20])
    np.testing.assert_array_equal(to_datapoints(a, b, max_datapoints=500), rows_a)  # deterministic
