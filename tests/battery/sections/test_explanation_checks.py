"""The explanation checks section: its verdict rules, and a run on a tiny model."""

import pytest
import torch

from auditsvc.battery.context import AuditContext, AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.methods import attribution
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.results import Figure, Table
from auditsvc.battery.sections import explanation_checks
from auditsvc.battery.sections.explanation_checks import MethodVerdict, cascade_depths
from auditsvc.pipeline import load_and_audit


def verdict(decisive: float, deletion: float | None, insertion: float | None) -> MethodVerdict:
    return MethodVerdict("gradient", {}, {}, decisive, deletion, insertion, random_deletion=0.6,
                         random_insertion=0.5, room={"deletion": 0.8, "insertion": 0.8})


@pytest.mark.parametrize("decisive, deletion, insertion, trusted, unfaithful", [
    (0.1, 0.3, 0.8, True, False),     # changes with the model, beats random at both
    (0.9, 0.3, 0.8, False, False),    # beats random, but shows the image: not trusted
    (0.1, 0.59, 0.8, False, False),   # deletion no better than random (within the margin)
    (0.9, 0.7, 0.4, False, True),     # fails everything
    (0.1, None, 0.8, True, False),    # deletion cannot tell: judged on insertion alone
    (0.1, None, None, False, False),  # neither curve can tell: not trusted, not condemned
])
def test_verdict_rules(decisive, deletion, insertion, trusted, unfaithful):
    v = verdict(decisive, deletion, insertion)
    assert v.trusted is trusted and v.unfaithful is unfaithful


def test_the_cascade_reaches_the_whole_model_and_decides_at_the_top_half():
    assert cascade_depths(3) == ([1, 2, 3], 2)
    assert cascade_depths(21) == ([1, 11, 21], 11)
    assert cascade_depths(1) == ([1], 1)


@pytest.fixture(scope="module")
def checked(tiny_package, tiny_probe):
    options = AuditOptions(samples=4, ig_steps=4, smoothgrad_samples=2, sections=["saliency", "explanation_checks"])
    return load_and_audit(tiny_package, tiny_probe, options=options)


def test_every_method_is_checked_on_the_tiny_model(checked):
    section = next(s for s in checked.sections if s.name == "explanation_checks")
    assert section.status == "ok", section.reason
    data = section.data
    assert set(data["methods"]) == {"gradient", "guided_backprop", "deconvnet", "smoothgrad",
                                    "integrated_gradients", "grad_cam"}
    assert data["images"] == {"deletion_insertion": 4, "randomization": 4}
    assert data["randomized_stages"] == ["top 1 of 3", "top 2 of 3", "all 3"]
    for name, method in data["methods"].items():
        assert set(method["rank_correlation"]) == {"original", *data["randomized_stages"]}
        randomized = [method["rank_correlation"][stage] for stage in data["randomized_stages"]]
        assert all(-1.0 <= r <= 1.0 for r in randomized), (name, randomized)
        # With every weighted layer random, every map must change: a randomization that left the
        # weights alone would keep the correlation at 1.
        assert method["rank_correlation"]["all 3"] < 0.9, (name, randomized)
        decisive = method["rank_correlation"][data["decisive_stage"]]
        assert method["passes_randomization"] == (decisive <= explanation_checks.SIMILARITY_LIMIT), name
        assert method["trusted"] == (method["passes_randomization"] and method["faithful"]), name
    assert data["trusted"] == [name for name, method in data["methods"].items() if method["trusted"]]
    assert [type(b) for b in section.blocks].count(Figure) == 3 and Table in map(type, section.blocks)
    # Never more than an info finding: explanations never decide a verdict.
    assert all(f.severity == "info" and f.code == "representation.untrustworthy_explanations"
               for f in checked.findings)


def test_the_checks_run_without_the_saliency_section(tiny_package, tiny_probe, monkeypatch):
    monkeypatch.setattr(explanation_checks, "DELETION_IMAGES", 2)
    monkeypatch.setattr(explanation_checks, "MIN_IMAGES", 2)
    options = AuditOptions(samples=2, ig_steps=4, smoothgrad_samples=2, sections=["explanation_checks"])
    [section] = load_and_audit(tiny_package, tiny_probe, options=options).sections
    assert section.status == "ok", section.reason
    assert section.data["images"]["deletion_insertion"] == 2


def test_the_randomization_check_gives_integrated_gradients_one_fixed_step_count(tiny_package, tiny_probe):
    model = load_model(tiny_package)
    with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
        context = AuditContext(model, ModelGraph(model.program, model.meta.input.size, "cpu", model.module_types),
                               probe, AuditOptions(samples=3, ig_steps=256, smoothgrad_samples=2))
        settings = explanation_checks._randomization_settings(context)
        assert context.attribution_settings.ig_step_counts == [8, 16, 32, 64, 128, 256]   # the saliency maps adapt
        assert settings.ig_step_counts == [explanation_checks.RANDOMIZATION_IG_STEPS]
        targets = torch.as_tensor(context.outputs.predictions[context.sample_indices])
        computed = attribution.heatmaps(context.graph, context.sample_batch(), targets, settings,
                                        ["integrated_gradients"])
    assert computed.per_image["integrated_gradients"]["steps"] == [explanation_checks.RANDOMIZATION_IG_STEPS] * 3
