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
