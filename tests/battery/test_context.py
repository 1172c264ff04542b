"""The audit context: shared values are named, computed once by whoever asks first, and the same
whoever that is."""

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

import auditsvc.battery
from auditsvc.battery.context import AuditContext, AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.loading import load_model

OPTIONS = dict(samples=3, ig_steps=4, smoothgrad_samples=2, batch_size=16)


@pytest.fixture
def contexts(tiny_package, tiny_probe):
    """Two fresh contexts on the same model and probe set."""
    model = load_model(tiny_package)
    with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
        yield [AuditContext(model, ModelGraph(model.program, model.meta.input.size, "cpu", model.module_types),
                            probe, AuditOptions(**OPTIONS)) for _ in range(2)]


def test_there_is_no_cache_to_share_through():
    assert "cache" not in {f.name for f in fields(AuditContext)}
    package = Path(auditsvc.battery.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "context.cache" not in text and ".cache[" not in text, path


def test_shared_values_do_not_depend_on_who_asks_first_or_on_the_global_rng(contexts):
    first, second = contexts
    torch.manual_seed(0)
    looking = first.looking
    attributions = first.sample_attributions
    torch.manual_seed(123)     # other global RNG state, other order
    np.random.seed(123)
    again = second.sample_attributions
    assert second.looking.region_ratio == looking.region_ratio
    for method in ("gradient", "grad_cam"):
        np.testing.assert_array_equal(second.looking.maps[method], looking.maps[method])
    assert list(again.maps) == list(attributions.maps) == ["gradient", "guided_backprop", "deconvnet", "smoothgrad",
                                                           "integrated_gradients", "grad_cam"]
    for method, maps in attributions.maps.items():
        np.testing.assert_array_equal(again.maps[method], maps)


def test_computing_shared_values_leaves_the_global_rng_as_it_was(contexts):
    context = contexts[0]
    torch.manual_seed(5)
    state = torch.get_rng_state()
    context.sample_attributions  # SmoothGrad seeds Captum's noise from its own generator
    assert torch.equal(torch.get_rng_state(), state)


def test_shared_values_are_computed_once(contexts):
    context = contexts[0]
    assert context.sample_attributions is context.sample_attributions
    assert context.metrics is context.metrics
    layer = context.representation_layers.all[0].name
    assert context.pooled_activations([layer])[layer] is context.pooled_activations([layer])[layer]


def test_sample_attributions_of_some_images(contexts):
    context = contexts[0]
    attributions = context.sample_attributions
    chosen = attributions.indices[1:][::-1]
    rows = attributions.of(chosen)
    for method, maps in attributions.maps.items():
        np.testing.assert_array_equal(rows[method], maps[[2, 1]])


def test_the_grad_cam_layer_is_the_deepest_spatial_layer(contexts):
    context = contexts[0]
    assert context.grad_cam_layer == context.graph.last_spatial_layer().name
    assert context.attribution_settings.grad_cam_layer == context.grad_cam_layer
    assert context.looking.grad_cam_layer == context.grad_cam_layer


def test_metrics(contexts):
    context = contexts[0]
    correct = context.outputs.predictions == context.labels
    metrics = context.metrics
    assert metrics["accuracy"] == round(float(correct.mean()), 4)
    assert sum(c["support"] for c in metrics["per_class"].values()) == len(context.probe)
    assert {value: group["n"] for value, group in metrics["groups"]["site"].items()} == {"north": 9, "south": 9}


def test_sample_images_spread_over_classes_and_attribute_values(contexts):
    context = contexts[0]
    chosen = AuditContext(context.model, context.graph, context.probe,
                          AuditOptions(**{**OPTIONS, "samples": 6})).sample_indices
    site = np.array(context.probe.attribute("site"))
    assert len(set(chosen)) == 6
    for label in range(3):
        mine = [i for i in chosen if context.labels[i] == label]
        assert len(mine) == 2 and set(site[mine]) == {"north", "south"}, (label, site[mine])
    assert chosen == AuditContext(context.model, context.graph, context.probe,
                                  AuditOptions(**{**OPTIONS, "samples": 6})).sample_indices


def test_sample_labels_name_the_true_and_predicted_class_and_on_request_the_attributes(contexts):
    context = contexts[0]
    index = context.sample_indices[0]
    truth = context.classes[context.labels[index]]
    label = context.sample_label(index)
    assert label.startswith(truth) and "\n" not in label
    with_attributes = context.sample_label(index, attributes=True)
    assert with_attributes.startswith(label + "\n") and f"site: {context.probe.attribute('site')[index]}" in with_attributes
