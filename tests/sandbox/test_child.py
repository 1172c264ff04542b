"""The confined side of an audit, run in this process: it loads each model once for the whole audit,
from the model.json value it is given (never from a model.json file beside the model)."""

from __future__ import annotations

import json
from itertools import groupby

import auditsvc.pipeline
from auditsvc.battery import ModelMeta, load_meta
from auditsvc.sandbox import child


def test_an_audit_loads_each_model_once_from_its_given_meta(tiny_package, tiny_probe, tmp_path, monkeypatch):
    loads = []
    real_load_model = auditsvc.pipeline.load_model

    def load_model(path, meta=None):
        loads.append((path.name, meta))
        return real_load_model(path, meta)

    monkeypatch.setattr(auditsvc.pipeline, "load_model", load_model)
    meta = load_meta(tiny_package.with_name("model.json"))
    renamed = ModelMeta.from_dict(meta.as_dict() | {"name": "given-not-read"})
    request = {"model": {"path": str(tiny_package), "meta": renamed.as_dict()},
               "reference": {"path": str(tiny_package), "meta": meta.as_dict()},
               "dataset": {"path": str(tiny_probe), "label": "probe"}, "previous": None, "isolation": "in-process test",
               "options": {"seed": 0, "device": "cpu", "sections": ["summary"]}, "out": str(tmp_path / "out")}
    assert child.audit(request, lambda fraction, stage: None)["verdict"] in ("pass", "warn", "fail")
    assert loads == [("model.pt2", renamed), ("model.pt2", meta)]   # the model, then the reference: once each
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert findings["model"]["name"] == "given-not-read"


def test_an_audit_reports_its_steps_and_never_a_done_stage(tiny_package, tiny_probe, tmp_path):
    """The battery's "done" comes before the report files are written: the audit's stage then says so."""
    meta = load_meta(tiny_package.with_name("model.json"))
    request = {"model": {"path": str(tiny_package), "meta": meta.as_dict()}, "reference": None,
               "dataset": {"path": str(tiny_probe), "label": "probe"}, "previous": None, "isolation": "in-process test",
               "options": {"seed": 0, "device": "cpu", "sections": ["summary", "performance"]},
               "out": str(tmp_path / "out")}
    stages, steps = [], []
    child.audit(request, lambda fraction, stage: stages.append(stage), lambda *step: steps.append(step[:2]))
    assert "done" not in stages and stages[-1] == "writing the report"
    assert [step for step, _ in groupby(steps)] == [
        ("summary", "running"), ("summary", "ok"), ("performance", "running"), ("performance", "ok"),
        ("report", "running"), ("report", "ok")]
