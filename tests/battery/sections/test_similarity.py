"""The similarity section: within-model heatmaps, the model against a reference."""

import numpy as np
import pytest
import torch

from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.results import Figure, Table, Text
from auditsvc.battery import audit as run_battery
from auditsvc.battery.sections import similarity as section
from auditsvc.demo.nets import PlainNet, tiny_resnet
from tests.battery.sections.support import DrawnFigures, colour_bars
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b", "c"]
OPTIONS = dict(sections=["similarity"], batch_size=16)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("similarity")
    torch.manual_seed(0)
    model = write_package(root / "model", PlainNet(3, widths=(4, 8)), CLASSES)
    other = write_package(root / "other", tiny_resnet(3, 1), CLASSES, size=(1, 28, 28))
    probe = write_probe(root / "probe", CLASSES, per_class=8, size=(36, 32))
    return {"model": model, "other": other, "probe": probe}


def audit(model, probe, reference=None):
    with ProbeDataset(probe, CLASSES) as probe_set:
        result = run_battery(load_model(model), probe_set, AuditOptions(**OPTIONS),
                           reference=load_model(reference) if reference else None)
    [similarity] = result.sections
    assert similarity.status == "ok", similarity.reason
    return similarity


def test_the_model_against_itself_is_one_on_the_matched_diagonal(packages):
    result = audit(packages["model"], packages["probe"], reference=packages["model"])
    reference = result.data["reference"]
    assert reference["layers"] == result.data["layers"]
    for measure in ("svcca", "pwcca", "linear_cka", "debiased_cka"):
        diagonal = np.diag(np.array(reference[measure], dtype=float))
        np.testing.assert_allclose(diagonal, 1.0, atol=1e-3, err_msg=measure)
    assert reference["divergence"]["first"] is None
    assert reference["per_class"]["classes"] == CLASSES
    np.testing.assert_allclose(reference["per_class"]["logit_correlation"], 1.0, atol=1e-4)
    assert result.findings == []
    titles = [b.title for b in result.blocks if isinstance(b, Figure)]
    assert titles == ["Similarity between the model's layers", "The audited model against the reference",
                      "Per-class similarity to the reference"]


def test_without_a_reference_only_the_within_model_heatmap_appears(packages):
    result = audit(packages["model"], packages["probe"])
    within = np.array(result.data["within"]["linear_cka"], dtype=float)
    assert within.shape == (len(result.data["layers"]),) * 2
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-9)
    np.testing.assert_allclose(within, within.T, atol=1e-9)
    assert "reference" not in result.data
    assert any(isinstance(b, Text) and "No reference model" in b.text for b in result.blocks)
    assert sum(isinstance(b, Figure) for b in result.blocks) == 1


def test_a_reference_with_another_architecture_and_input_is_compared_by_depth_and_few_images_flagged(packages):
    result = audit(packages["model"], packages["probe"], reference=packages["other"])
    reference = result.data["reference"]
    shape = (len(result.data["layers"]), len(reference["layers"]))
    for measure in ("svcca", "pwcca", "linear_cka", "debiased_cka"):
        assert np.array(reference[measure], dtype=float).shape == shape
    matched = reference["matched"]
    assert matched[0] == [0, 0] and matched[-1] == [shape[0] - 1, shape[1] - 1]  # first to first, output to output
    assert [j for _, j in matched] == sorted(j for _, j in matched)
    assert all(f.severity == "info" for f in result.findings)  # similarity never warns on its own
    assert result.data["few_datapoints"]  # 24 images against layers of 8 and 16 channels
    warning = next(b for b in result.blocks if isinstance(b, Text) and b.kind == "warning")
    assert "fewer than 5 images per neuron" in warning.text


def test_divergence_from_the_first_layer_is_an_informational_finding():
    names = ["l1", "l2", "l3", "out"]
    cka = np.array([[0.5, 0.4, 0.3, 0.1], [0.6, 0.5, 0.4, 0.1], [0.3, 0.7, 0.4, 0.2], [0.1, 0.2, 0.3, 0.45]])
    matrices = {m: cka for m in section.REFERENCE_MEASURES}
    divergence = section._divergence(names, names, matrices, [(i, i) for i in range(4)])
    assert divergence["first"]["layer"] == "l1"
    finding = section._divergence_finding(divergence)
    assert finding.code == "representation.reference_divergence" and finding.severity == "info"
    late = cka.copy()
    late[0, 0] = late[1, 1] = 0.95
    divergence = section._divergence(names, names, {m: late for m in section.REFERENCE_MEASURES},
                                     [(i, i) for i in range(4)])
    assert divergence["first"]["layer"] == "l3"
    text = section._divergence_text(divergence).text
    assert "up to l2" in text and "first diverge at l3" in text


def test_heatmaps_draw_debiased_cka_alone_on_a_fixed_scale_and_the_other_measures_are_tabled(packages, monkeypatch):
    drawn = DrawnFigures(monkeypatch)
    result = audit(packages["model"], packages["probe"], reference=packages["other"])
    figures = [b for b in result.blocks if isinstance(b, Figure)]
    heatmaps = [b for b in figures if b.title != "Per-class similarity to the reference"]
    assert [b.title for b in heatmaps] == ["Similarity between the model's layers",
                                           "The audited model against the reference"]
    for block in heatmaps:
        fig = drawn.of(block)
        [bar] = colour_bars(fig)
        maps = [ax for ax in fig.axes if ax is not bar]
        assert [ax.get_title() for ax in maps] == ["debiased CKA"]
        assert maps[0].images[0].get_clim() == (0.0, 1.0) and bar.get_ylim() == (0.0, 1.0)
        assert "Debiased CKA" in block.caption
    layers = result.data["layers"]
    within = np.array(result.data["within"]["debiased_cka"], dtype=float)
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-6)
    tables = {b.title: b for b in result.blocks if isinstance(b, Table)}
    neighbours = tables["Neighbouring layers by every measure"]
    assert neighbours.columns == ["layer", "previous layer", "debiased CKA", "linear CKA", "SVCCA"]
    assert [row[:2] for row in neighbours.rows] == [[layers[k], layers[k - 1]] for k in range(1, len(layers))]
    assert neighbours.rows[0][3] == f"{result.data['within']['linear_cka'][1][0]:.2f}"
    assert tables["Similarity at matched depths"].columns[2:6] == ["SVCCA", "PWCCA", "linear CKA", "debiased CKA"]


def test_above_its_cap_similarity_is_measured_on_a_stratified_sample_it_names(packages, monkeypatch):
    monkeypatch.setattr(section, "MAX_IMAGES", 12)
    result = audit(packages["model"], packages["probe"], reference=packages["model"])
    assert result.data["sample_cap"] == {"similarity": 12}
    assert result.data["sample"] == {"cap": 12, "images": 12, "of": 24, "sampled": True}
    assert result.data["images"] == 12
    assert result.data["reference"]["per_class"]["images"] == [4, 4, 4]   # each class keeps its share
    assert any(isinstance(b, Text) and "on a stratified sample of 12 of 24 images" in b.text for b in result.blocks)
    within = np.array(result.data["within"]["linear_cka"], dtype=float)
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.diag(np.array(result.data["reference"]["linear_cka"], dtype=float)), 1.0, atol=1e-3)


def test_below_its_cap_every_image_is_used_and_no_sample_named(packages):
    result = audit(packages["model"], packages["probe"])
    assert result.data["sample_cap"] == {"similarity": section.MAX_IMAGES}
    assert "sample" not in result.data and result.data["images"] == 24
    assert not any(isinstance(b, Text) and "stratified sample" in b.text for b in result.blocks)
