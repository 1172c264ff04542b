"""Robustness warnings: a large one-way effect of a harmless change that is not a shortcut."""

from auditsvc.battery.probes.evidence import InterventionStats
from auditsvc.battery.sections.shortcuts import robustness_findings

CLASSES = ("no_tank", "tank")


def change(name: str, cue: str, flip_rate: float, top_class: int = 0, treated: int = 80) -> InterventionStats:
    flips = round(flip_rate * treated)
    return InterventionStats(name, cue, f"words of {name}", cue, "ok", treated=treated, flips=flips,
                             flip_rate=flip_rate, floor=0.02, p_adjusted=1e-6, accuracy_before=0.9,
                             accuracy_after=0.2, towards={top_class: flips}, top_class=top_class, top_share=1.0)


def test_one_warning_per_kind_of_change_with_its_strongest_change():
    findings = robustness_findings(CLASSES, [change("add_noise", "noise", 0.4), change("denoise", "noise", 0.6),
                                             change("restore_grain", "compression", 0.85, top_class=1)])
    by_code = {f.code: (f, t) for f, t in findings}
    assert set(by_code) == {"robustness.noise", "robustness.compression"}
    noise, strongest = by_code["robustness.noise"]
    assert strongest.name == "denoise" and noise.evidence["flip_rate"] == 0.6
    grain = by_code["robustness.compression"][0]
    assert (grain.category, grain.severity) == ("robustness", "warn")
    assert "85%" in grain.title and grain.evidence["towards"] == "tank" and grain.evidence["flips"] == 68
    assert "from 90% to 20%" in grain.summary and "not a shortcut" in grain.summary


def test_cue_tests_of_a_place_are_not_robustness():
    assert robustness_findings(CLASSES, [change("swap_border", "border", 0.7),
                                         change("swap_background", "background", 0.7)]) == []
