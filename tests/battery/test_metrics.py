"""Metrics of findings.json: the worst group is a cell of class x attribute."""

import numpy as np

from auditsvc.battery.metrics import MIN_GROUP_IMAGES, group_cells, probe_metrics, worst_group


class Probe:
    """What the metrics read of a probe set: its attributes and present classes."""

    def __init__(self, attributes: dict[str, list[str]], present: list[int]):
        self.attributes, self.present_classes = attributes, present

    @property
    def attribute_names(self):
        return list(self.attributes)

    def attribute(self, name):
        return self.attributes[name]


def weather_shortcut(per_cell: int = 10):
    """Balanced class x weather; the model answers 'tank' exactly when it is cloudy."""
    labels = np.repeat([0, 0, 1, 1], per_cell)
    weather = ["sunny"] * per_cell + ["cloudy"] * per_cell + ["sunny"] * per_cell + ["cloudy"] * per_cell
    predictions = np.array([1 if w == "cloudy" else 0 for w in weather])
    return labels, weather, predictions


def test_a_weather_shortcut_has_a_zero_cell_that_the_weather_groups_average_away():
    labels, weather, predictions = weather_shortcut()
    probe = Probe({"weather": weather}, [0, 1])
    probabilities = np.eye(2)[predictions] * 0.9 + 0.05
    metrics = probe_metrics(probabilities, predictions, labels, probe, ("no_tank", "tank"))
    assert metrics["accuracy"] == 0.5
    assert {v: g["accuracy"] for v, g in metrics["groups"]["weather"].items()} == {"cloudy": 0.5, "sunny": 0.5}
    cells = metrics["group_cells"]["weather"]
    assert cells["tank"]["cloudy"]["accuracy"] == 1.0 and cells["tank"]["sunny"]["accuracy"] == 0.0
    assert cells["no_tank"]["sunny"]["accuracy"] == 1.0 and cells["no_tank"]["cloudy"]["accuracy"] == 0.0
    assert metrics["worst_group_accuracy"] == 0.0
    assert metrics["worst_group"]["attribute"] == "weather" and metrics["worst_group"]["n"] == 10
    assert cells["tank"]["sunny"]["ci"][1] < 0.35   # ten wrong of ten: the interval stays low


def test_cells_below_the_minimum_do_not_count_and_no_attributes_give_none():
    labels = np.array([0] * 12 + [1] * 12)
    site = ["a"] * 12 + ["a"] * (12 - MIN_GROUP_IMAGES + 1) + ["b"] * (MIN_GROUP_IMAGES - 1)
    correct = np.ones(24, bool)
    correct[-1] = False          # the tiny cell b of class 1 is the least accurate, but too small
    correct[0] = False
    cells = group_cells(Probe({"site": site}, [0, 1]), labels, correct, ("x", "y"))
    worst = worst_group(cells)
    assert (worst["class"], worst["value"]) == ("x", "a") and worst["accuracy"] == round(11 / 12, 4)
    assert worst_group(group_cells(Probe({}, [0, 1]), labels, correct, ("x", "y"))) is None
    assert group_cells(Probe({"site": ["a"] * 24}, [0, 1]), labels, correct, ("x", "y")) == {}


def test_the_worst_group_counts_the_discovered_cues_cells_where_the_manifest_has_none():
    from auditsvc.battery.metrics import with_cue_cells
    from auditsvc.battery.results import Finding

    grid = {"cue": "saturation (tertile)", "levels": ["low", "high"],
            "cells": {"tank": {"low": {"accuracy": 0.9, "n": 30}, "high": {"accuracy": 0.1, "n": 30}},
                      "no_tank": {"low": {"accuracy": 0.0, "n": 4}, "high": {"accuracy": 0.8, "n": 30}}}}
    shortcut = Finding("shortcut.saturation", "shortcut", "fail", "t", "s", {"class_by_cue": grid})
    metrics = {"accuracy": 0.5, "group_cells": {}, "worst_group": None, "worst_group_accuracy": None}
    counted = with_cue_cells(metrics, [shortcut])
    assert counted["worst_group_accuracy"] == 0.1          # the 4-image cell is too small to count
    assert counted["worst_group"] == {"attribute": "saturation (tertile)", "class": "tank", "value": "high",
                                      "accuracy": 0.1, "n": 30, "discovered": True}
    manifest_worse = metrics | {"worst_group": {"accuracy": 0.0}, "worst_group_accuracy": 0.0}
    assert with_cue_cells(manifest_worse, [shortcut]) == manifest_worse
