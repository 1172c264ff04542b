"""The embedding section: neighbourhood statistics on synthetic representations, and the tank demo."""

import numpy as np
import pytest

from auditsvc.battery.context import AuditOptions
from auditsvc.battery.sections import embedding
from auditsvc.battery.results import Figure
from auditsvc.pipeline import load_and_audit
from tests.battery.sections.support import run, section


def synthetic(grouped_by: str, images: int = 120, seed: int = 0):
    """A 16-d representation of images with a balanced label and a balanced attribute, independent of
    each other; clusters follow `grouped_by`, the other one adds a weak shift only."""
    rng = np.random.default_rng(seed)
    labels = np.arange(images) % 2
    attribute = (np.arange(images) // 2) % 2
    strong, weak = (attribute, labels) if grouped_by == "attribute" else (labels, attribute)
    centres = rng.normal(size=(2, 16)) * 3
    features = centres[strong] + 0.1 * centres[weak][:, ::-1] + rng.normal(size=(images, 16))
    return features, labels, ["sunny" if a else "cloudy" for a in attribute]


def test_a_representation_grouped_by_the_attribute_triggers():
    features, labels, weather = synthetic("attribute")
    clusters = embedding.attribute_clusters(features, labels, weather, "weather", seed=0)
    assert clusters.triggered and clusters.beats_label and clusters.splits_classes
    assert clusters.within_label.accuracy > 0.9 and clusters.within_label.p_value < 0.01
    assert clusters.label.skill < 0.5


def test_a_representation_grouped_by_the_label_does_not_trigger_even_if_it_carries_the_attribute():
    features, labels, weather = synthetic("label")
    clusters = embedding.attribute_clusters(features, labels, weather, "weather", seed=0)
    assert not clusters.triggered
    assert clusters.label.skill > 0.8
    # The weak attribute shift is still visible inside each class, but less than the label inside each value.
    assert clusters.label_within_value.skill > clusters.within_label.skill


def test_an_attribute_confounded_with_the_label_cannot_be_told_apart():
    features, labels, _ = synthetic("label")
    same_as_label = ["a" if label else "b" for label in labels]
    clusters = embedding.attribute_clusters(features, labels, same_as_label, "site", seed=0)
    assert clusters.within_label is None and not clusters.triggered


def test_missing_or_single_valued_attributes_are_not_tested():
    features, labels, _ = synthetic("label", images=20)
    assert embedding.attribute_clusters(features, labels, ["x"] * 20, "site", seed=0) is None
    assert embedding.attribute_clusters(features, labels, [""] * 18 + ["a", "b"], "site", seed=0) is None


def test_knn_votes_break_ties_towards_the_nearest_neighbour():
    votes = embedding.knn_votes(np.array([[1, 2, 2, 1], [3, 3, 1, 1], [0, 1, 2, 3]]))
    assert votes.tolist() == [1, 3, 0]


def test_a_stratified_subsample_keeps_class_shares():
    labels = np.array([0] * 900 + [1] * 100)
    chosen = embedding.stratified_subsample(labels, 200, seed=0)
    assert len(chosen) == 200 and len(set(chosen)) == 200
    assert (labels[chosen] == 1).sum() == pytest.approx(20, abs=1)


@pytest.mark.parametrize("model, expected", [("shortcut", True), ("clean", False)])
def test_on_the_tank_demo_only_the_weather_model_groups_by_weather(tank_demo, model, expected):
    result = load_and_audit(tank_demo[model], tank_demo["probe"], options=AuditOptions(sections=["embedding"]))
    [section] = result.sections
    assert section.status == "ok"
    codes = [f.code for f in result.findings]
    assert codes == (["representation.weather_clusters"] if expected else [])
    if expected:
        [finding] = result.findings
        assert finding.severity == "warn" and "groups images by 'weather' rather than by class" in finding.summary
    weather = section.data["attributes"]["weather"]
    assert weather["splits_classes"] is expected


def test_above_its_cap_t_sne_is_drawn_on_a_stratified_sample_it_names(tiny_package, tiny_probe, monkeypatch):
    monkeypatch.setattr(embedding, "TSNE_MAX_IMAGES", 9)
    result = section(run(tiny_package, tiny_probe, ["embedding"]), "embedding")
    assert result.data["sample_cap"] == {"tsne": 9}
    assert result.data["tsne_sample"] == {"cap": 9, "images": 9, "of": 18, "sampled": True}
    assert result.data["tsne_images"] == 9 and result.data["images"] == 18
    [tsne] = [b for b in result.blocks if isinstance(b, Figure)]
    assert "on a stratified sample of 9 of 18 images" in tsne.caption
    assert result.data["agreement"]["true label"]["images"] == 18   # the statistics use every image


def test_below_its_cap_t_sne_draws_every_image(tiny_package, tiny_probe):
    result = section(run(tiny_package, tiny_probe, ["embedding"]), "embedding")
    assert result.data["tsne_images"] == result.data["images"] == 18 and "tsne_sample" not in result.data
    [tsne] = [b for b in result.blocks if isinstance(b, Figure)]
    assert "stratified sample" not in tsne.caption
