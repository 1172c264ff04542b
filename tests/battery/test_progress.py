"""Progress while the battery runs: each section a step (running, then its status), the audit's fraction
the share of sections done plus the running one's, and the long sections reporting from inside their
loops, so that a live audit never goes quiet."""

from types import SimpleNamespace

import pytest

from auditsvc.battery import AuditOptions, audit, load_model
from auditsvc.battery import progress as progress_module
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.progress import SectionSteps, shares

FAST = dict(samples=2, ig_steps=4, smoothgrad_samples=2, batch_size=4)
LOOPING = ["shortcuts", "saliency", "occlusion", "activation_max", "explanation_checks"]


@pytest.fixture
def every_report(monkeypatch):
    monkeypatch.setattr(progress_module, "REPORT_EVERY", 0.0)


def test_sections_are_steps_and_the_audit_fraction_follows_them(every_report):
    audit_reports, step_reports = [], []
    tracker = SectionSteps(2, lambda fraction, stage: audit_reports.append((fraction, stage)),
                           lambda *step: step_reports.append(step))
    first, second = SimpleNamespace(name="a", title="A"), SimpleNamespace(name="b", title="B")
    within = tracker.started(first)
    within(0.5)
    within(0.3)   # a computation another section started, counting from 0: the step does not go back
    tracker.finished(first, "ok")
    tracker.started(second)(2.0)
    tracker.finished(second, "skipped")
    assert step_reports == [("a", "running", 0.0), ("a", "running", 0.5), ("a", "running", 0.5), ("a", "ok", 1.0),
                            ("b", "running", 0.0), ("b", "running", 1.0), ("b", "skipped", 1.0)]
    assert audit_reports == [(0.0, "A"), (0.25, "A"), (0.25, "A"), (0.5, "B"), (1.0, "B")]


def test_shares_split_a_piece_of_work_by_weight():
    seen = []
    parts = shares(seen.append, [1, 0, 3])
    for part in parts:
        part(0.5)
        part(1.0)
    assert seen == [0.125, 0.25, 0.25, 0.25, 0.625, 1.0]


def fractions_within(package, probe_root, sections: list[str]) -> tuple[dict[str, list[float]], list[float]]:
    """Each section's fractions reported while it ran, and the audit's fractions."""
    within: dict[str, list[float]] = {}
    fractions = []
    with ProbeDataset(probe_root, ["a", "b", "c"]) as probe:
        result = audit(load_model(package), probe, AuditOptions(**FAST, sections=sections),
                       progress=lambda fraction, stage: fractions.append(fraction),
                       steps=lambda name, status, fraction: within.setdefault(name, []).append(fraction)
                       if status == "running" else None)
    assert all(s.status == "ok" for s in result.sections), [(s.name, s.reason) for s in result.sections]
    return within, fractions


def test_the_long_sections_report_from_inside_their_loops(tiny_package, tiny_probe, every_report):
    within, fractions = fractions_within(tiny_package, tiny_probe, LOOPING)
    for name in LOOPING:
        assert any(0 < fraction < 1 for fraction in within[name]), (name, within[name])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # where the model looks: its maps are computed by whichever section asks first (shortcuts, above)
    within, _ = fractions_within(tiny_package, tiny_probe, ["looking"])
    assert any(0 < fraction < 1 for fraction in within["looking"]), within["looking"]
