"""The shortcut probes on the tank demo: the weather model fails with the cue named, the clean
model gets no shortcut finding, and the shortcut is caught without any manifest."""

import shutil

import pytest

from auditsvc.battery.context import AuditOptions
from auditsvc.pipeline import load_and_audit

PROBES = AuditOptions(sections=["performance", "shortcuts"])


def shortcut_findings(result):
    return [f for f in result.findings if f.category == "shortcut"]


def audited(model, probe):
    """The audit, with both sections run: the runner turns a crash into status "error" and no finding,
    which would pass every test below that expects no shortcut finding."""
    result = load_and_audit(model, probe, options=PROBES)
    assert {s.name: (s.status, s.reason) for s in result.sections} == {"performance": ("ok", ""),
                                                                       "shortcuts": ("ok", "")}
    return result


@pytest.fixture(scope="module")
def probe_without_manifest(tank_demo, tmp_path_factory):
    copy = tmp_path_factory.mktemp("nomanifest") / "probe"
    shutil.copytree(tank_demo["probe"], copy)
    (copy / "manifest.csv").unlink()
    return copy


def test_the_weather_model_fails_and_the_cue_is_named(tank_demo):
    result = audited(tank_demo["shortcut"], tank_demo["probe"])
    [finding] = shortcut_findings(result)
    assert finding.severity == "fail" and result.verdict == "fail"
    assert "'weather'" in finding.title and "not the object" in finding.title
    assert finding.evidence["attribute"] == "weather" and finding.code != "shortcut.detail"
    families = {finding.evidence["cue"], *finding.evidence["also"]}
    # The weather sets light, saturation and tint together; at the dose the model's own answers set,
    # it is the colour that turns them (a gain alone that keeps a grey sky grey flips almost none).
    assert families & {"colour", "saturation"} and not families & {"sharpness", "noise", "corner", "border"}
    assert finding.evidence["flip_rate"] >= 0.5 and finding.evidence["noise_floor"] <= 0.05
    assert any(block.__class__.__name__ == "Figure" for block in finding.blocks)


def test_the_clean_model_has_no_shortcut(tank_demo):
    result = audited(tank_demo["clean"], tank_demo["probe"])
    assert shortcut_findings(result) == []
    assert not [f for f in result.findings if f.category == "bias"]  # the probe set is balanced


def test_without_a_manifest_the_shortcut_is_still_caught(tank_demo, probe_without_manifest):
    result = audited(tank_demo["shortcut"], probe_without_manifest)
    [finding] = shortcut_findings(result)
    assert finding.severity == "fail" and ("lighting" in finding.title or "colour" in finding.title)
    assert shortcut_findings(audited(tank_demo["clean"], probe_without_manifest)) == []


@pytest.fixture(scope="module")
def biased_probe(tmp_path_factory):
    """As biased as the shortcut model's training data: every tank cloudy, every empty forest sunny."""
    import numpy as np

    from auditsvc.demo.build import ALIGNED, render_cells, write_probe

    root = tmp_path_factory.mktemp("biased") / "probe"
    write_probe(root, render_cells(np.random.default_rng(7), dict.fromkeys(ALIGNED, 60)))
    return root


def test_the_legend_a_perfect_score_on_a_biased_probe_set_still_fails(tank_demo, biased_probe):
    result = audited(tank_demo["shortcut"], biased_probe)
    assert result.metrics["accuracy"] == 1.0
    [finding] = shortcut_findings(result)
    assert finding.severity == "fail"


def test_a_good_model_on_a_biased_probe_set_gets_a_bias_finding(tank_demo, biased_probe):
    result = audited(tank_demo["clean"], biased_probe)
    assert shortcut_findings(result) == []
    assert [f.category for f in result.findings if f.category == "bias"] == ["bias"]
