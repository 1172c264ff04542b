"""The whole battery on many kinds of CNN: architectures, channels, sizes, class counts, formats."""

import json

import pytest
import torch
from torch import nn

from auditsvc.battery import registry, runner
from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.registry import section_names
from auditsvc.battery import audit
from auditsvc.demo.nets import PlainNet, SeparableNet, tiny_resnet
from tests.conftest import write_package, write_probe

FAST = dict(samples=2, ig_steps=4, smoothgrad_samples=2, batch_size=16)

CASES = [
    # (id, model factory, channels, side, classes, format)
    ("plain-rgb-32-2cls-pt2", lambda k, c: PlainNet(k, c, widths=(4, 8)), 3, 32, 2, "pt2"),
    ("resnet-grey-28-120cls-script", lambda k, c: tiny_resnet(k, c), 1, 28, 120, "script"),
    ("separable-hardswish-rgb-224-2cls-pt2", lambda k, c: SeparableNet(k, c, widths=(4, 8)), 3, 224, 2, "pt2"),
    ("separable-silu-grey-64-10cls-trace",
     lambda k, c: SeparableNet(k, c, widths=(4, 8), activation=nn.SiLU), 1, 64, 10, "trace"),
    ("resnet-rgb-96-101cls-pt2", lambda k, c: tiny_resnet(k, c), 3, 96, 101, "pt2"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_battery_runs_on(tmp_path, case):
    _, factory, channels, side, count, fmt = case
    classes = [f"class_{i}" for i in range(count)]
    torch.manual_seed(0)
    size = (channels, side, side)
    path = write_package(tmp_path / "model", factory(count, channels), classes, size=size, fmt=fmt)
    probe_classes = classes[:3]  # a probe set may cover some of the classes
    root = write_probe(tmp_path / "probe", probe_classes, per_class=3, size=(side + 5, side),
                       mode="RGB" if channels == 3 else "L")
    stages = []
    model = load_model(path)
    with ProbeDataset(root, classes) as probe:
        result = audit(model, probe, AuditOptions(**FAST), progress=lambda f, s: stages.append((f, s)))
    statuses = {s.name: (s.status, s.reason) for s in result.sections}
    assert statuses.pop("reference") == ("skipped", "no reference model was given")
    assert all(status == "ok" for status, _ in statuses.values()), statuses
    assert stages[0][0] == 0.0 and stages[-1] == (1.0, "done")
    saliency = next(s for s in result.sections if s.name == "saliency")
    has_relu = "separable" not in case[0]
    assert ("guided_backprop" in saliency.data["methods"]) == has_relu
    document = json.loads(json.dumps(result.findings_json()))
    assert document["schema"] == 1 and document["dataset"]["images"] == 3 * len(probe_classes)
    assert list(document["sections"]) == section_names()
    assert document["verdict"] in ("pass", "warn", "fail")


def _crash(self, context):
    raise ValueError("a figure could not be drawn:\nsecond line")


def test_an_audit_with_a_failed_section_is_not_a_pass(tiny_package, tiny_probe, monkeypatch):
    performance = type(registry.sections(["performance"])[0])
    monkeypatch.setattr(performance, "run", _crash)
    with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
        result = audit(load_model(tiny_package), probe, AuditOptions(**FAST, sections=["summary", "performance"]))
    document = json.loads(json.dumps(result.findings_json()))
    assert document["verdict"] == result.verdict == "warn"
    failed = document["sections"]["performance"]
    assert failed["status"] == "error" and failed["reason"] == "ValueError: a figure could not be drawn: second line"
    first = document["findings"][0]
    assert first["code"] == "health.incomplete" and first["severity"] == "warn"
    assert first["title"] == "Incomplete audit: section performance failed"
    assert set(first) == {"code", "category", "severity", "title", "summary", "evidence"}   # schema 1 unchanged


TIMINGS = {"seconds", "created", "method_seconds"}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _report_text(result) -> list:
    """What the report says besides findings.json: every text, table and figure caption, in order."""
    return [(s.name, type(b).__name__, getattr(b, "text", None), getattr(b, "caption", None), getattr(b, "rows", None))
            for s in result.sections for b in s.blocks]


def test_sections_give_the_same_findings_in_any_order(tiny_package, tiny_probe, monkeypatch):
    """Sections share data only through the context, each shared value computed by whichever section asks
    first from its own seeded generator: running them backwards changes nothing."""
    def audited():
        with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
            return audit(load_model(tiny_package), probe, AuditOptions(**FAST))

    forwards = audited()
    ran = []

    def backwards_order(sections):
        ran[:] = sections[::-1]
        return ran

    monkeypatch.setattr(runner, "_run_order", backwards_order)
    backwards = audited()
    assert [s.name for s in ran] == section_names()[::-1]
    assert [s.name for s in backwards.sections] == section_names()   # the report keeps the registry's order
    first, second = (json.loads(json.dumps(r.findings_json())) for r in (forwards, backwards))
    assert _without_timings(first) == _without_timings(second)
    assert _report_text(forwards) == _report_text(backwards)


def test_metrics_do_not_need_the_performance_section(tiny_package, tiny_probe):
    with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
        result = audit(load_model(tiny_package), probe, AuditOptions(**FAST, sections=["summary"]))
    assert [s.name for s in result.sections] == ["summary"]
    metrics = result.findings_json()["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and set(metrics["per_class"]) == {"a", "b", "c"}
    assert set(metrics["groups"]) == {"site"} and "ece" in metrics["calibration"]


def test_settings_say_what_was_used_not_none(tiny_package, tiny_probe):
    model = load_model(tiny_package)
    with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
        result = audit(model, probe, AuditOptions(sections=["occlusion"], samples=2))
    occlusion = next(s for s in result.sections if s.name == "occlusion")
    assert result.settings["occlusion_window"] == f"{occlusion.data['window']} (automatic)"
    assert result.settings["occlusion_stride"] == f"{occlusion.data['stride']} (automatic)"
    assert result.settings["occlusion_mode"] == occlusion.data["occlusion_mode"]
    assert result.settings["occlusion_mode"].startswith("incremental for ")
    assert None not in result.settings.values() and result.settings["sections"] == ["occlusion"]
    with ProbeDataset(tiny_probe, ["a", "b", "c"]) as probe:
        fixed = audit(model, probe, AuditOptions(sections=["summary"], occlusion_window=6))
    assert fixed.settings["occlusion_window"] == 6 and fixed.settings["occlusion_stride"] == "automatic"
