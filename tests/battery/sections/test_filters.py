"""The filters section: the first convolution and the weight statistics of every weighted layer, as
torch computes them from the module; dead filters are counted and reported."""

import numpy as np
import pytest
import torch

from auditsvc.battery.results import Figure, Table
from auditsvc.demo.nets import PlainNet
from tests.battery.sections.support import DrawnFigures, colour_bars, panel_titles, run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return write_probe(tmp_path_factory.mktemp("filters_probe"), CLASSES, per_class=2, size=(32, 32))


def filters_of(model, directory, probe):
    return section(run(write_package(directory, model, CLASSES), probe, ["filters"]), "filters")


def test_first_layer_and_statistics_are_those_of_the_module(tmp_path, probe):
    torch.manual_seed(0)
    model = PlainNet(2, widths=(4, 8)).eval()
    filters = filters_of(model, tmp_path, probe)
    assert filters.data["first_layer"] == "features.0"
    stats = {s["layer"]: s for s in filters.data["layers"]}
    assert list(stats) == ["features.0", "features.4", "classifier"]   # convolutions and linear layers, in order
    for name, module in (("features.0", model.features[0]), ("features.4", model.features[4]),
                         ("classifier", model.classifier)):
        weight = module.weight.detach()
        assert stats[name]["shape"] == "x".join(map(str, weight.shape))
        assert stats[name]["filters"] == weight.shape[0]
        assert stats[name]["mean"] == pytest.approx(float(weight.mean()), abs=1e-7)
        assert stats[name]["std"] == pytest.approx(float(weight.std()), rel=1e-6)
        assert stats[name]["mean_abs"] == pytest.approx(float(weight.abs().mean()), rel=1e-6)
        assert stats[name]["dead"] == 0
    assert stats["features.0"]["shape"] == "4x3x3x3"
    figures = [b for b in filters.blocks if isinstance(b, Figure)]
    assert [f.title for f in figures] == ["First-layer filters: features.0", "Weight scale by layer"]
    assert any(isinstance(b, Table) and len(b.rows) == 3 for b in filters.blocks)
    assert filters.findings == []


def test_dead_filters_are_counted_and_many_are_a_finding(tmp_path, probe):
    torch.manual_seed(0)
    model = PlainNet(2, widths=(4, 8)).eval()
    with torch.no_grad():
        model.features[4].weight[:3] = 0      # 3 of 8 second-layer filters pass nothing on
    filters = filters_of(model, tmp_path, probe)
    stats = {s["layer"]: s for s in filters.data["layers"]}
    assert stats["features.4"]["dead"] == 3 and stats["features.0"]["dead"] == 0
    [finding] = filters.findings
    assert finding.code == "health.dead_filters" and finding.evidence == {"layer": "features.4", "dead": 3, "filters": 8}


def test_the_first_layer_is_drawn_weight_by_weight_on_the_module_s_symmetric_scale(tmp_path, probe, monkeypatch):
    torch.manual_seed(0)
    model = PlainNet(2, widths=(4, 8)).eval()
    drawn = DrawnFigures(monkeypatch)
    first = next(b for b in filters_of(model, tmp_path, probe).blocks if isinstance(b, Figure))
    fig = drawn.of(first)
    [bar] = colour_bars(fig)
    limit = float(model.features[0].weight.abs().max())
    images = [image for ax in fig.axes if ax is not bar for image in ax.images]
    assert len(images) == 4 and all(image.get_clim() == pytest.approx((-limit, limit)) for image in images)
    red = model.features[0].weight[1, 0].detach().numpy()
    np.testing.assert_allclose(images[1].get_array()[1:4, 1:4], red, rtol=1e-6)   # filter 1's red plane
    assert panel_titles(fig) == [f"filter {k}" for k in range(4)]
    assert "the red, green and blue input" in first.caption and "one colour scale for all" in first.caption
