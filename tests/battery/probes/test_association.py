import numpy as np

from auditsvc.battery.probes import association
from auditsvc.battery.probes.association import agreement_test, bin_codes, holm, permutation_test, predictive_power


def test_predictive_power_is_zero_for_noise_and_one_for_a_perfect_cue():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    assert predictive_power(labels + rng.random(400) * 0.5, labels) > 0.95
    assert predictive_power(rng.random(400), labels) < 0.15
    weather = np.where(labels == 1, "cloudy", "sunny")
    assert predictive_power(bin_codes(weather, 2), labels, categorical=True) == 1.0


def test_categories_are_codes_as_they_are():
    codes = bin_codes(np.array(["sunny", "cloudy", "sunny"]), 2)
    assert list(codes) == [1, 0, 1]


def test_permutation_test_separates_association_from_none():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    related = bin_codes(labels * 0.6 + rng.random(300), 2)
    assert permutation_test(related, labels, seed=0)[1] < 0.001
    assert permutation_test(bin_codes(rng.random(300), 2), labels, seed=0)[1] > 0.01


def test_beyond_labels_asks_about_predictions_within_each_label():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    through_label = bin_codes(labels + rng.random(400) * 0.5, 2)  # tracks the label only
    predictions = labels.copy()
    assert permutation_test(through_label, predictions, strata=labels, seed=0)[1] == 1.0
    cue = rng.random(400)
    follows_cue = (cue > 0.5).astype(int)  # predictions follow the cue, whatever the label
    assert permutation_test(bin_codes(cue, 2), follows_cue, strata=labels, seed=0)[1] < 0.001


def test_holm_matches_the_step_down_definition():
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def decorrelated_probe(rng, n=400):
    """Labels and a binary cue independent of each other; the cue sits on the high half of a property."""
    labels = rng.permutation(np.repeat([0, 1], n // 2))
    cue = rng.permutation(np.tile([0, 1], n // 2)).astype(bool)
    values = cue + rng.random(n) * 0.5
    return labels, cue, values


def test_agreement_gap_is_the_accuracy_where_the_cue_agrees_with_the_label_minus_where_not():
    rng = np.random.default_rng(3)
    labels, cue, values = decorrelated_probe(rng)
    agrees = cue == (labels == 1)               # the cue goes with class 1
    correct = rng.random(len(labels)) < np.where(agrees, 0.9, 0.6)
    gap, p = agreement_test(values, labels, correct, seed=0)
    cells = [correct[(labels == label) & (cue == side)].mean() for label in (0, 1) for side in (False, True)]
    aligned, flipped = (cells[0] + cells[3]) / 2, (cells[1] + cells[2]) / 2
    assert abs(gap - (aligned - flipped)) < 1e-9 and gap > 0.2
    assert p < 0.001


def test_images_hard_for_every_label_are_not_an_agreement():
    rng = np.random.default_rng(4)
    labels, cue, values = decorrelated_probe(rng)
    correct = rng.random(len(labels)) < np.where(cue, 0.6, 0.9)   # the cue makes every class harder
    gap, p = agreement_test(values, labels, correct, seed=0)
    assert gap < 0.06 and p > 0.05


def test_a_permutation_test_in_blocks_of_shuffles_draws_the_same_null(monkeypatch):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, 300)
    target, strata = (codes + rng.integers(0, 3, 300)) % 5, rng.integers(0, 3, 300)
    whole = [association.permutation_test(codes, target, seed=1, permutations=200),
             association.permutation_test(codes, target, strata=strata, seed=2, permutations=200)]
    monkeypatch.setattr(association, "NULL_BLOCK_ELEMENTS", 7 * 300)   # 7 shuffles at a time
    blocks = [association.permutation_test(codes, target, seed=1, permutations=200),
              association.permutation_test(codes, target, strata=strata, seed=2, permutations=200)]
    assert blocks == whole
