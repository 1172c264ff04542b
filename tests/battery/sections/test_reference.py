"""Against the reference model: accuracy and the performance and shortcut findings of both models on
the same probe set, and on the front page each finding new, resolved or unchanged."""

import pytest
import torch

from auditsvc.battery import audit as run_battery
from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.demo.nets import PlainNet
from auditsvc.reports.front import against_reference
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    torch.manual_seed(0)
    model = write_package(root / "model", PlainNet(2, widths=(4, 8)), CLASSES)
    torch.manual_seed(1)
    baseline = write_package(root / "baseline", PlainNet(2, widths=(4, 8)), CLASSES)
    others = write_package(root / "others", PlainNet(3, widths=(4, 8)), ["a", "b", "c"])
    probe = write_probe(root / "probe", CLASSES, per_class=12, size=(36, 32))
    return {"model": model, "baseline": baseline, "others": others, "probe": probe}


def audited(packages, reference, sections=("performance", "shortcuts", "reference")):
    with ProbeDataset(packages["probe"], CLASSES) as probe:
        return run_battery(load_model(packages["model"]), probe, AuditOptions(sections=list(sections)),
                           reference=load_model(packages[reference]) if reference else None)


def test_the_reference_is_audited_alike_and_set_beside_this_model(packages):
    result = audited(packages, "baseline")
    section = next(s for s in result.sections if s.name == "reference")
    assert section.status == "ok", section.reason
    with ProbeDataset(packages["probe"], CLASSES) as probe:
        alone = run_battery(load_model(packages["baseline"]), probe, AuditOptions(sections=["performance", "shortcuts"]))
    assert section.data["accuracy"] == pytest.approx(alone.metrics["accuracy"], abs=1e-4)
    assert {f["code"] for f in section.data["findings"]} == {f.code for f in alone.findings}
    compared = against_reference(result)
    ours = {f.code for f in result.findings if f.code != "health.incomplete"}
    theirs = {f.code for f in alone.findings}
    changes = {row["change"] for row in compared["findings"]}
    assert len(compared["findings"]) == len(ours | theirs)
    assert ("new" in changes) == bool(ours - theirs) and ("resolved" in changes) == bool(theirs - ours)
    assert compared["metrics"][0]["theirs"] == f"{alone.metrics['accuracy']:.1%}"


def test_without_a_reference_or_with_other_classes_it_is_skipped(packages):
    [section] = audited(packages, None, ["reference"]).sections
    assert (section.status, section.reason) == ("skipped", "no reference model was given")
    with ProbeDataset(packages["probe"], CLASSES) as probe:
        result = run_battery(load_model(packages["model"]), probe, AuditOptions(sections=["reference"]),
                             reference=load_model(packages["others"]))
    assert result.sections[0].status == "skipped" and "other classes" in result.sections[0].reason
    assert against_reference(result) is None
