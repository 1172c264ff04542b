"""The neurons section: dead and redundant channels found, rows clustered, figures capped."""

import numpy as np
import pytest
import torch

from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.graph import Layer
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.results import Figure, Table
from auditsvc.battery import audit as run_battery
from auditsvc.battery.sections import neurons
from auditsvc.demo.nets import PlainNet
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b", "c"]


def broken_net() -> PlainNet:
    """Six of eight first-block channels can never fire; six second-block channels copy one another."""
    torch.manual_seed(0)
    model = PlainNet(3, widths=(8, 8)).eval()
    conv1, bn1, conv2, bn2 = model.features[0], model.features[1], model.features[4], model.features[5]
    with torch.no_grad():
        conv1.weight[:6] = 0
        bn1.bias[:6] = -1.0
        conv2.weight[1:6] = conv2.weight[0]
        bn2.weight[:6], bn2.bias[:6] = 1.0, 0.5
    return model


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return write_probe(tmp_path_factory.mktemp("neurons_probe"), CLASSES, per_class=4, size=(36, 32))


def audit(package, probe):
    with ProbeDataset(probe, CLASSES) as probe_set:
        result = run_battery(load_model(package), probe_set, AuditOptions(sections=["neurons"], batch_size=8))
    [section] = result.sections
    assert section.status == "ok", section.reason
    return section


def test_dead_and_duplicated_channels_are_found(tmp_path, probe):
    section = audit(write_package(tmp_path / "broken", broken_net(), CLASSES), probe)
    layers = {layer["layer"]: layer for layer in section.data["layers"]}
    assert layers["features.2"]["dead"] == 6 and layers["features.2"]["dead_channels"] == [0, 1, 2, 3, 4, 5]
    assert layers["features.6"]["redundant"] >= 6 and layers["features.6"]["dead"] == 0
    findings = {f.code: f for f in section.findings}
    dead = findings["representation.dead_neurons"]
    assert dead.severity == "warn" and dead.evidence["layer"] == "features.2" and dead.evidence["dead"] == 6
    redundant = findings["representation.redundant_neurons"]
    assert redundant.severity == "warn" and "features.6" in redundant.summary
    table = next(b for b in section.blocks if isinstance(b, Table))
    assert [row[0] for row in table.rows] == list(layers)
    assert any(isinstance(b, Figure) for b in section.blocks)


def test_a_healthy_net_has_no_dead_neuron_finding(tmp_path, probe):
    torch.manual_seed(1)
    section = audit(write_package(tmp_path / "healthy", PlainNet(3, widths=(8, 8)), CLASSES), probe)
    assert "representation.dead_neurons" not in {f.code for f in section.findings}
    assert all(layer["dead"] == 0 for layer in section.data["layers"])
    assert section.data["classes"] == CLASSES


def maps(maxima, correlation):
    return neurons.MapStatistics(np.asarray(maxima, dtype=float), np.asarray(correlation, dtype=float))


def test_analysis_orders_similar_neurons_together_and_dead_ones_last():
    rng = np.random.default_rng(0)
    images, labels = 40, np.repeat([0, 1], 20)
    base, other = rng.normal(size=images) + 3, rng.normal(size=images) + 3
    means = np.stack([base, other, base * 2 + 0.01 * rng.normal(size=images), np.zeros(images),
                      other + 0.01 * rng.normal(size=images)], axis=1)
    correlation = np.corrcoef(np.where(means.std(0) > 0, means, rng.normal(size=means.shape)).T)
    layer = Layer("conv", "fn:relu", "relu", (5, 4, 4), 0, True)
    result = neurons._analyse(layer, means, maps(np.abs(means), correlation), labels, [0, 1])
    assert result.dead.tolist() == [False, False, False, True, False]
    assert result.redundant.tolist() == [True, True, True, False, True]
    assert result.distinct == 2   # 0 and 2 are one signal, 1 and 4 another; 3 is dead
    order = result.order.tolist()
    assert order[-1] == 3
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(4)) == 1
    assert result.clusters[0] == result.clusters[2] != result.clusters[1] == result.clusters[4]
    assert result.class_shift.shape == (5, 2) and np.allclose(result.class_shift[3], 0)


def test_a_global_average_that_goes_negative_is_not_judged_dead():
    means = np.array([[-0.2, 1.0], [-0.1, 2.0], [-0.3, 0.5], [-0.2, 1.5]] * 3)
    pooled = Layer("mean", "fn:mean", "mean", (2,), 0, True)
    result = neurons._analyse(pooled, means, maps(means, np.corrcoef(means.T)), np.zeros(12, int), [0])
    assert not result.dead_measured and not result.dead.any()
    spatial = Layer("act", "SiLU", "act", (2, 3, 3), 0, True)
    assert neurons._analyse(spatial, means, maps(means, np.corrcoef(means.T)), np.zeros(12, int), [0]).dead[0]


def test_a_mostly_redundant_global_pool_only_informs():
    def result(layer, redundant):
        count = len(redundant)
        return neurons.LayerNeurons(layer, np.zeros((count, 2)), np.zeros((count, 2)), np.arange(count),
                                    np.ones(count, int), np.zeros(count, bool), True, np.array(redundant), True)
    pool = Layer("adaptive_avg_pool2d", "fn:adaptive_avg_pool2d", "pool", (4, 1, 1), 0, True)
    conv = Layer("features.6", "ReLU", "relu", (4, 8, 8), 0, True)
    assert neurons._redundant_finding([result(pool, [True, True, True, False])]).severity == "info"
    assert neurons._redundant_finding([result(conv, [True, True, True, False])]).severity == "warn"
    assert neurons._redundant_finding([result(conv, [False, False, False, False])]) is None


def test_wide_layers_are_shown_as_at_most_64_rows():
    rng = np.random.default_rng(1)
    count = 200
    means = rng.normal(size=(30, count)) + 2
    layer = Layer("wide", "ReLU", "relu", (count, 2, 2), 0, True)
    result = neurons._analyse(layer, means, maps(np.abs(means) + 1, np.eye(count)), np.repeat([0, 1, 2], 10),
                              [0, 1, 2])
    values, strip, labels = neurons._rows(result)
    assert values.shape == (neurons.MAX_ROWS, 3) and strip.shape == (neurons.MAX_ROWS, 1, 3)
    assert len(labels) == neurons.MAX_ROWS and labels[0].endswith("+3")  # 200 channels in 64 bins


def test_a_wide_layer_of_a_few_distinct_signals_is_called_collapsed():
    conv = Layer("features.6", "ReLU", "relu", (128, 8, 8), 0, True)

    def result(distinct):
        return neurons.LayerNeurons(conv, np.zeros((128, 2)), np.zeros((128, 2)), np.arange(128), np.ones(128, int),
                                    np.zeros(128, bool), True, np.ones(128, bool), True, distinct)
    collapsed = neurons._redundant_finding([result(2)])
    assert collapsed.title.startswith("Collapsed representation") and "about 2 distinct" in collapsed.summary
    assert collapsed.evidence["distinct"] == 2 and collapsed.evidence["collapsed"] == ["features.6"]
    wide = neurons._redundant_finding([result(40)])
    assert wide.title.startswith("Redundant neurons") and "could be narrower" in wide.summary


def test_a_pooled_layer_of_a_few_distinct_signals_is_collapsed_but_only_informs():
    pool = Layer("adaptive_avg_pool2d", "fn:adaptive_avg_pool2d", "pool", (128, 1, 1), 0, True)
    result = neurons.LayerNeurons(pool, np.zeros((128, 2)), np.zeros((128, 2)), np.arange(128), np.ones(128, int),
                                  np.zeros(128, bool), True, np.ones(128, bool), True, 2)
    finding = neurons._redundant_finding([result])
    assert finding.title.startswith("Collapsed representation") and finding.severity == "info"
