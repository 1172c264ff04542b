import numpy as np

from auditsvc.battery.probes.attribution_regions import spray


def test_spray_finds_two_strategies_by_the_eigengap():
    rng = np.random.default_rng(0)
    left, right = np.zeros((16, 16)), np.zeros((16, 16))
    left[:, :4], right[:, -4:] = 1, 1
    maps = np.stack([(left if i < 20 else right) + 0.05 * rng.random((16, 16)) for i in range(40)])
    predictions = np.zeros(40, int)
    [result] = spray(maps, predictions, seed=0)
    assert result.count == 2
    assert len(set(result.clusters[:20])) == 1 and len(set(result.clusters[20:])) == 1
    assert result.clusters[0] != result.clusters[-1]


def test_spray_skips_small_classes():
    assert spray(np.random.default_rng(0).random((5, 16, 16)), np.zeros(5, int), seed=0) == []


def test_spray_clusters_a_large_class_on_a_stratified_sample(monkeypatch):
    monkeypatch.setattr("auditsvc.battery.probes.attribution_regions.SPRAY_MAX_IMAGES", 20)
    rng = np.random.default_rng(0)
    maps = rng.random((60, 16, 16))
    predictions = np.r_[np.zeros(50, int), np.ones(10, int)]     # class 1 is below MIN_CLASS_IMAGES
    labels = np.r_[np.zeros(40, int), np.ones(20, int)]          # of the 50 predicted 0: 40 true 0, 10 true 1
    [result] = spray(maps, predictions, seed=0, labels=labels)
    assert result.predicted == 50 and len(result.members) == 20 == len(result.clusters)
    assert set(result.members) <= set(range(50))
    assert np.bincount(labels[result.members]).tolist() == [16, 4]   # each true class keeps its share
    assert result.count >= 1 and len(result.eigenvalues) > result.count
