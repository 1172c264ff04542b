import numpy as np
import pytest

from auditsvc.battery.probes.interventions import BY_NAME
from auditsvc.battery.probes.evidence import InterventionStats, PropertyStats
from auditsvc.battery.probes.cue_verdict import Observations, decide, part_verdicts, reliance, sensitivities


def prop(name, cue, label_power=0.0, label_p=1.0, prediction_power=0.0, beyond_p=1.0, gap=0.0, gap_p=1.0):
    return PropertyStats(name, cue, name, False, label_power, label_p, prediction_power, beyond_p, gap, gap_p, 1.0)


def change(name, cue, prop_name, flip_rate=0.0, p=1.0, top_share=1.0, agrees=False, treated=100, top_class=None):
    """A change's measured effect; its answers go to class 1 when it adds its property, else to class 0."""
    if top_class is None:
        top_class = 1 if BY_NAME[name].direction in ("up", "swap") else 0
    return InterventionStats(name, cue, name, prop_name, "ok", treated=treated, flips=int(flip_rate * treated),
                             flip_rate=flip_rate, floor=0.01, p_adjusted=p, top_class=top_class, top_share=top_share,
                             agrees=agrees)


def observations(**codes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    return Observations({k: v for k, v in codes.items()}, labels, labels.copy(), {}, 0)


def test_causal_and_data_side_agreeing_fail():
    props = [prop("brightness", "brightness", prediction_power=0.9, beyond_p=0.001)]
    tests = [change("darker", "brightness", "brightness", 0.8, 1e-9, agrees=True)]
    [verdict] = decide(props, tests, {}, observations())
    assert (verdict.category, verdict.severity, verdict.cue) == ("shortcut", "fail", "brightness")


def test_predictions_following_a_cue_alone_warn():
    props = [prop("noise", "noise", prediction_power=0.7, beyond_p=0.001)]
    [verdict] = decide(props, [], {}, observations())
    assert (verdict.category, verdict.severity) == ("shortcut", "warn")


def test_a_cue_only_in_the_labels_is_a_data_bias():
    props = [prop("border", "border", label_power=0.9, label_p=0.001)]
    tests = [change("swap_border", "border", "border", 0.02, 0.5)]
    [verdict] = decide(props, tests, {}, observations())
    assert (verdict.category, verdict.severity) == ("bias", "warn")


def test_biased_probe_and_a_model_that_follows_the_cue_fail():
    # The legend: labels and cue agree, predictions are perfect, only the intervention tells.
    props = [prop("brightness", "brightness", label_power=1.0, label_p=0.001, prediction_power=1.0, beyond_p=1.0)]
    tests = [change("darker", "brightness", "brightness", 0.9, 1e-9, agrees=True)]
    [verdict] = decide(props, tests, {}, observations())
    assert (verdict.category, verdict.severity) == ("shortcut", "fail")


def test_a_change_the_probe_images_do_not_bear_out_is_only_a_sensitivity():
    props = [prop("sharpness", "sharpness")]
    tests = [change("blur", "sharpness", "sharpness", 0.5, 1e-9, agrees=False)]
    assert decide(props, tests, {}, observations()) == []
    assert [t.name for t in sensitivities(tests, [])] == ["blur"]


def test_small_or_undirected_effects_are_not_causal():
    props = [prop("brightness", "brightness", label_power=0.9, label_p=0.001)]
    small = change("darker", "brightness", "brightness", 0.1, 1e-5, agrees=True)
    undirected = change("brighter", "brightness", "brightness", 0.6, 1e-9, top_share=0.5, agrees=True)
    [verdict] = decide(props, [small, undirected], {}, observations())
    assert verdict.category == "bias"


def test_proxies_of_one_cue_fold_into_one_finding():
    rng = np.random.default_rng(0)
    cue = rng.random(200)
    codes = {"saturation": (cue * 4).astype(int), "brightness": (cue * 4).astype(int)}
    props = [prop("saturation", "saturation", prediction_power=1.0, beyond_p=0.001),
             prop("brightness", "brightness", prediction_power=0.9, beyond_p=0.001)]
    tests = [change("greyer", "saturation", "saturation", 1.0, 1e-9, agrees=True)]
    obs = observations(**codes)
    obs.predictions = (cue > 0.5).astype(int)
    verdicts = decide(props, tests, {}, obs)
    assert len(verdicts) == 1 and verdicts[0].cue == "saturation"
    assert [a.cue for a in verdicts[0].also] == ["brightness"]


def test_blur_and_noise_showing_together_are_named_fine_detail():
    rng = np.random.default_rng(0)
    cue = rng.random(200)
    codes = {"noise": (cue * 4).astype(int), "sharpness": (cue * 4).astype(int)}
    props = [prop("noise", "noise", label_power=1.0, label_p=0.001), prop("sharpness", "sharpness", label_power=0.98,
                                                                         label_p=0.001)]
    tests = [change("blur", "sharpness", "sharpness", 1.0, 1e-9, agrees=True),
             change("add_noise", "noise", "noise", 0.97, 1e-9, agrees=True)]
    [verdict] = decide(props, tests, {}, observations(**codes))
    assert (verdict.cue, verdict.category, verdict.severity) == ("detail", "shortcut", "fail")
    alone = decide(props[:1], tests[1:], {}, observations(**codes))
    assert [v.cue for v in alone] == ["noise"]


def test_a_lighting_cue_that_also_blurs_keeps_its_name():
    rng = np.random.default_rng(0)
    cue = rng.random(200)
    codes = {name: (cue * 4).astype(int) for name in ("brightness", "noise", "sharpness")}
    props = [prop("brightness", "brightness", label_power=1.0, label_p=0.001),
             prop("noise", "noise", label_power=0.9, label_p=0.001),
             prop("sharpness", "sharpness", label_power=0.9, label_p=0.001)]
    tests = [change("darker", "brightness", "brightness", 1.0, 1e-9, agrees=True),
             change("blur", "sharpness", "sharpness", 0.5, 1e-9, agrees=True),
             change("add_noise", "noise", "noise", 0.5, 1e-9, agrees=True)]
    [verdict] = decide(props, tests, {}, observations(**codes))
    assert verdict.cue == "brightness" and {a.cue for a in verdict.also} == {"noise", "sharpness"}


def test_reliance_averages_adding_and_taking_away_the_cue():
    blur = change("blur", "sharpness", "sharpness", 0.61, 1e-9, agrees=True)
    sharpen = change("sharpen", "sharpness", "sharpness", 0.21, 1e-9, agrees=True)
    estimate, supporting = reliance([blur, sharpen])
    assert abs(estimate - (0.61 + 0.21) / 2) < 1e-9
    assert [t.name for t in supporting] == ["blur", "sharpen"]


def test_adding_and_taking_away_that_favour_the_same_class_count_once():
    """Tinting an object blue and taking red from it both send the answers to one class: a model that
    fails when the colour moves at all, not one that reads the colour."""
    bluer = change("blue_tint_of_others", "colour", "blue_share", 0.22, 1e-9, agrees=True, top_class=0)
    less_red = change("red_poor_tint_of_others", "colour", "red_share", 0.23, 1e-9, agrees=True, top_class=0)
    estimate, supporting = reliance([bluer, less_red])
    assert abs(estimate - 0.23 / 2) < 1e-9 and [t.name for t in supporting] == ["red_poor_tint_of_others"]
    redder = change("red_tint_of_others", "colour", "red_share", 0.15, 1e-9, agrees=True, top_class=1)
    estimate, supporting = reliance([bluer, less_red, redder])
    assert abs(estimate - (0.23 + 0.15) / 2) < 1e-9
    assert {t.name for t in supporting} == {"red_poor_tint_of_others", "red_tint_of_others"}


def test_only_changes_beyond_the_noise_floor_count_towards_reliance():
    blur = change("blur", "sharpness", "sharpness", 0.61, 1e-9, agrees=True)
    sharpen_by_chance = change("sharpen", "sharpness", "sharpness", 0.21, 0.3, agrees=True)
    assert abs(reliance([blur, sharpen_by_chance])[0] - 0.61 / 2) < 1e-9


def test_a_model_that_only_fails_on_degraded_images_scores_half():
    blur = change("blur", "sharpness", "sharpness", 0.31, 1e-9, agrees=True)
    sharpen = change("sharpen", "sharpness", "sharpness", 0.0, 1.0, agrees=False)
    assert abs(reliance([blur, sharpen])[0] - 0.31 / 2) < 1e-9
    props = [prop("sharpness", "sharpness", label_power=0.9, label_p=0.001)]
    [verdict] = decide(props, [blur, sharpen], {}, observations())
    assert verdict.category == "bias"
    # Where the probes can only move the cue one way, that way counts alone.
    [verdict] = decide(props, [blur], {}, observations())
    assert (verdict.category, verdict.severity) == ("shortcut", "fail")


def test_answers_that_go_with_a_cue_no_change_of_it_moves_are_not_a_shortcut():
    # A weak model that errs on sharp images: sharpness predicts its answers beyond the labels,
    # but blurring and sharpening leave them alone.
    props = [prop("sharpness", "sharpness", label_power=0.4, label_p=0.001, prediction_power=0.7, beyond_p=0.001)]
    still = [change("blur", "sharpness", "sharpness", 0.01, 1.0), change("sharpen", "sharpness", "sharpness", 0.0, 1.0)]
    [verdict] = decide(props, still, {}, observations())
    assert verdict.category == "bias"
    [verdict] = decide(props, [], {}, observations())   # nothing could change it: the data alone warn
    assert (verdict.category, verdict.severity) == ("shortcut", "warn")


def test_findings_rank_by_how_much_the_answers_turn_on_the_cue():
    rng = np.random.default_rng(0)
    codes = {"noise": rng.integers(0, 4, 200), "blockiness": rng.integers(0, 4, 200)}
    props = [prop("noise", "noise", label_power=0.95, label_p=0.001),
             prop("blockiness", "compression", label_power=0.85, label_p=0.001)]
    tests = [change("add_noise", "noise", "noise", 0.5, 1e-9, agrees=True),
             change("denoise", "noise", "noise", 0.0, 1.0),
             change("jpeg", "compression", "blockiness", 0.98, 1e-9, agrees=True)]
    verdicts = decide(props, tests, {}, observations(**codes))
    assert [v.cue for v in verdicts][0] == "compression"


def test_accuracy_that_follows_whether_the_cue_sides_with_the_label_confirms_a_causal_signal():
    sided = prop("corner_top_left", "corner")
    sided.agreement_gap, sided.agreement_p = 0.23, 0.001
    tests = [change("swap_corner_top_left", "corner", "corner_top_left", 0.3, 1e-6, agrees=True),
             change("plain_corner_top_left", "corner", "corner_top_left", 0.25, 1e-6, agrees=True)]
    [verdict] = decide([sided], tests, {}, observations())
    assert (verdict.category, verdict.severity, verdict.group_signal) == ("shortcut", "fail", True)
    assert decide([sided], [], {}, observations()) == []   # without a causal signal it says nothing
    sided.agreement_p = 0.05
    assert decide([sided], tests, {}, observations()) == []


def test_reliance_comes_with_its_error_and_near_the_line_is_undecided():
    from auditsvc.battery.probes.cue_verdict import CueVerdict, reliance_error, reliance_undecided, testable_ways

    family = [change("darker", "brightness", "brightness", 0.18, 1e-6, agrees=True, treated=60),
              change("brighter", "brightness", "brightness", 0.16, 1e-6, agrees=True, treated=60)]
    family[1] = InterventionStats(**{**vars(family[1]), "name": "brighter"})
    error = reliance_error(reliance(family)[1], len(testable_ways(family)))
    assert 0.02 < error < 0.1   # sqrt(.18*.82/60 + .16*.84/60) / 2 = 0.034
    near = CueVerdict("brightness", "shortcut", "warn", None, reliance=0.17, reliance_error=error)
    far = CueVerdict("brightness", "shortcut", "warn", None, reliance=0.02, reliance_error=0.01)
    assert reliance_undecided(near) and not reliance_undecided(far)


def test_an_undecided_reliance_says_how_many_probe_images_would_decide():
    from auditsvc.battery.probes.cue_verdict import CueVerdict, images_to_decide

    near = CueVerdict("brightness", "shortcut", "warn", None, reliance=0.17, reliance_error=0.034)
    needed = images_to_decide(near, 120)
    # The interval is 1.96 * 0.034 = 0.067 wide, 0.03 is needed: (0.067 / 0.03) ** 2 = 4.9 times the images.
    assert 550 < needed < 650
    halfway = CueVerdict("brightness", "shortcut", "warn", None, reliance=0.17, reliance_error=0.034 / np.sqrt(needed / 120))
    assert 1.96 * halfway.reliance_error <= 0.0301
    assert images_to_decide(CueVerdict("brightness", "shortcut", "warn", None, reliance=0.02, reliance_error=0.01),
                            120) == 0


def test_a_property_is_the_objects_when_its_association_is_lost_away_from_it_not_just_weaker():
    from auditsvc.battery.probes.cue_verdict import part_of_object

    cast = prop("red_share", "colour", label_power=0.33, label_p=0.0006)
    cast.away_label_power, cast.away_label_p = 0.26, 0.0006      # a bit weaker on fewer pixels: still a bias
    assert not part_of_object(cast)
    outline = prop("high_frequency", "sharpness", label_power=0.6, label_p=0.0006)
    outline.away_label_power, outline.away_label_p = 0.05, 0.4   # gone away from the object
    assert part_of_object(outline)
    faint = prop("hue", "colour", label_power=0.6, label_p=0.0006)
    faint.away_label_power, faint.away_label_p = 0.2, 0.001      # significant, but a third of the power
    assert part_of_object(faint)


def test_grain_that_hides_compression_counts_only_beside_compression_that_moves_the_answers():
    """A clean model fragile to grain flips one way when grain is added; compressing moves nothing."""
    grain = change("restore_grain", "compression", "blockiness", 0.61, 1e-6, agrees=True)
    still = change("jpeg", "compression", "blockiness", 0.02, 1.0, agrees=False)
    assert reliance([grain, still]) == (0.0, [])
    compressed = change("jpeg", "compression", "blockiness", 0.5, 1e-6, agrees=True)
    estimate, supporting = reliance([grain, compressed])
    assert estimate == pytest.approx((0.5 + 0.5) / 2) and {i.name for i in supporting} == {"jpeg", "restore_grain"}


def test_grain_counts_at_most_as_much_as_compression_the_other_way():
    """A clean model on compressed images: grain flips 60% to one class (it is fragile to grain), compressing
    flips 12% the other way. The proxy confirms the direction but cannot lift the estimate over the line."""
    grain = change("restore_grain", "compression", "blockiness", 0.60, 1e-6, agrees=True)
    compressed = change("jpeg", "compression", "blockiness", 0.12, 1e-6, agrees=True)
    estimate, _ = reliance([grain, compressed])
    assert estimate == pytest.approx(0.12)
    weaker_grain = change("restore_grain", "compression", "blockiness", 0.05, 1e-6, agrees=True)
    assert reliance([weaker_grain, compressed])[0] == pytest.approx((0.05 + 0.12) / 2)


def test_a_colour_bias_of_the_probe_set_is_still_tested_on_each_part():
    """A background tint that predicts the labels first reads as a probe-set bias (whole-image changes of
    the balance barely move the answers). That finding explains nothing about the model: the parts are
    still changed alone, and only a shortcut finding takes the family off the list."""
    from auditsvc.battery.probes.cue_verdict import CueVerdict, part_cues

    tint = prop("red_share", "colour", label_power=0.48, label_p=0.0006)
    bias = CueVerdict("colour", "bias", "warn", tint)
    assert part_cues([tint], [bias]) == {"colour"}
    shortcut = CueVerdict("colour", "shortcut", "fail", tint)
    assert part_cues([tint], [shortcut]) == set()


def test_a_colour_folded_into_another_cues_finding_is_not_tested_on_the_parts():
    """A coloured frame makes the hue predict the labels; the hue is folded into the border's finding, whose
    own changes answer for it: repainting the object would test something the probe set does not tie."""
    from auditsvc.battery.probes.cue_verdict import CueVerdict, part_cues

    hue = prop("hue", "colour", label_power=0.79, label_p=0.0006)
    border = CueVerdict("border", "bias", "warn", prop("border", "border", label_power=1.0, label_p=0.0006))
    border.also.append(CueVerdict("colour", "bias", "warn", hue))
    assert part_cues([hue], [border]) == set()


def test_an_objects_colour_the_answers_follow_is_tested_on_the_object_and_fails():
    """On a decorrelated probe set a small object's colour barely moves the whole image's balance; the
    answers still follow it, so the object alone is changed, and that moving the answers is a shortcut."""
    from auditsvc.battery.probes.cue_verdict import part_cues, part_verdicts

    followed = prop("hue", "colour", prediction_power=0.28, beyond_p=0.002)
    followed.away_label_power, followed.away_label_p = 0.0, 1.0
    quiet = prop("saturation", "saturation")
    assert part_cues([followed, quiet], []) == {"colour"}
    on_object = [change("red_balance_of_others", "colour", "red_share", 0.45, 1e-6, agrees=True),
                 change("red_poor_balance_of_others", "colour", "red_share", 0.35, 1e-6, agrees=True)]
    around = [change("red_balance_of_others", "colour", "red_share", 0.05, 1.0)]
    [cue] = part_verdicts([followed, quiet], {"object": on_object, "surroundings": around})
    assert (cue.cue, cue.category, cue.severity, cue.tested_on) == ("colour", "shortcut", "fail", "object")
    assert cue.reliance == pytest.approx(0.40) and {i.place for i in cue.causal} == {"object"}
    assert part_verdicts([followed], {"object": around, "surroundings": around}) == []


def test_a_background_tint_that_predicts_the_labels_is_found_by_changing_the_surroundings_alone():
    """On a biased probe set a tint of the background only predicts the labels; whole-image balance
    changes barely move the answers, the same change on the surroundings does: a shortcut, not a bias."""
    from auditsvc.battery.probes.cue_verdict import part_cues, part_verdicts

    tint = prop("red_share", "colour", label_power=0.9, label_p=0.0006)
    tint.away_label_power, tint.away_label_p = 0.95, 0.0006     # as strong away from the object: a bias
    assert part_cues([tint], []) == {"colour"}
    around = [change("red_balance_of_others", "colour", "red_share", 0.5, 1e-6, agrees=True),
              change("red_poor_balance_of_others", "colour", "red_share", 0.4, 1e-6, agrees=True)]
    [cue] = part_verdicts([tint], {"object": [], "surroundings": around})
    assert (cue.category, cue.severity, cue.tested_on, cue.label_signal) == ("shortcut", "fail", "surroundings", True)


def test_an_object_colour_nothing_ties_to_the_answers_is_not_tested():
    from auditsvc.battery.probes.cue_verdict import part_cues

    assert part_cues([prop("hue", "colour", prediction_power=0.05)], []) == set()


def test_a_repainted_part_counts_only_when_it_moves_the_answers_both_ways():
    """An object repainted any colour away from red loses the model's sight of it: one way only, no cue."""
    props = [prop("red_share", "colour", prediction_power=0.5, beyond_p=0.001)]
    redder = change("red_tint_of_others", "colour", "red_share", 0.6, 1e-9, agrees=True)
    not_redder = change("red_poor_tint_of_others", "colour", "red_share", 0.0, 1.0)
    assert part_verdicts(props, {"object": [redder, not_redder], "surroundings": []}) == []
    less_red = change("red_poor_tint_of_others", "colour", "red_share", 0.4, 1e-9, agrees=True)
    [verdict] = part_verdicts(props, {"object": [redder, less_red], "surroundings": []})
    assert (verdict.cue, verdict.severity, verdict.tested_on) == ("colour", "fail", "object")
    assert abs(verdict.reliance - 0.5) < 1e-9
