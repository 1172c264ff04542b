"""The README's "Add a method", followed: a toy section that checks the model.json normalization
against the probe images, registered and run like any other."""

import numpy as np
import pytest

from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set, registry
from auditsvc.battery.registry import Section, register
from auditsvc.battery.results import Table


class InputStatistics(Section):
    name = "input_statistics"
    title = "Input statistics"
    order = 15
    intro = "Per channel, the probe images' mean and spread after the model's normalization (ideally 0 and 1)."

    def run(self, context):
        batch = context.probe.tensors(list(range(len(context.probe))), context.spec).numpy()
        means, stds = batch.mean(axis=(0, 2, 3)), batch.std(axis=(0, 2, 3))
        rows = [[f"channel {c}", f"{m:+.2f}", f"{s:.2f}"] for c, (m, s) in enumerate(zip(means, stds))]
        return self.result(blocks=[Table(["channel", "mean", "std"], rows, "After normalization.")],
                           data={"mean": means.round(4).tolist(), "std": stds.round(4).tolist()})


@pytest.fixture
def toy_section():
    register(InputStatistics)
    yield InputStatistics
    del registry._SECTIONS[InputStatistics.name]


def test_a_new_section_runs_by_name_and_lands_in_findings_json(toy_section, tiny_package, tiny_probe):
    model = load_model(tiny_package)
    with open_probe_set(tiny_probe, model.meta.classes) as probe:
        result = audit(model, probe, AuditOptions(sections=["summary", "input_statistics"]))
        pixels = probe.pixels(list(range(len(probe))), model.meta.input).astype(np.float64) / 255
    section = next(s for s in result.sections if s.name == "input_statistics")
    assert section.status == "ok", section.reason
    assert [s.name for s in result.sections] == ["summary", "input_statistics"]   # placed by `order`
    # model.json of the tiny package says mean 0.5 and std 0.25 for every channel.
    expected_mean, expected_std = (pixels.mean(axis=(0, 1, 2)) - 0.5) / 0.25, pixels.std(axis=(0, 1, 2)) / 0.25
    assert np.allclose(result.findings_json()["sections"]["input_statistics"]["mean"], expected_mean, atol=1e-3)
    assert np.allclose(section.data["std"], expected_std, atol=1e-3)
