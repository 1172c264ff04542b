"""The performance section: its numbers are the ones computed by hand from the model's own predictions
on the probe images."""

import numpy as np
import pytest
import torch

from auditsvc.demo.nets import PlainNet
from tests.battery.sections.support import probe_inputs, run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b", "c"]
PER_CLASS = 10


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("performance")
    torch.manual_seed(3)
    model = PlainNet(3, widths=(4, 8)).eval()
    package = write_package(root / "model", model, CLASSES)
    probe = write_probe(root / "probe", CLASSES, per_class=PER_CLASS, size=(32, 32))
    result = run(package, probe, ["performance"], batch_size=7)   # batches that split the classes
    inputs, labels = probe_inputs(probe, CLASSES)
    with torch.no_grad():
        probabilities = torch.softmax(model(inputs), dim=1).numpy()
    return result, probabilities, labels


def test_accuracy_is_that_of_the_model_s_own_predictions(audited):
    result, probabilities, labels = audited
    performance = section(result, "performance")
    predictions = probabilities.argmax(axis=1)
    accuracy = round(float((predictions == labels).mean()), 4)
    assert 0 < accuracy < 1   # a model that is neither always right nor always wrong tells more
    assert performance.data["accuracy"] == accuracy == result.metrics["accuracy"]
    assert result.findings_json()["metrics"]["accuracy"] == accuracy


def test_per_class_counts_are_the_confusion_matrix(audited):
    result, probabilities, labels = audited
    predictions = probabilities.argmax(axis=1)
    matrix = np.zeros((3, 3), int)
    np.add.at(matrix, (labels, predictions), 1)
    per_class = result.metrics["per_class"]
    assert sum(c["support"] for c in per_class.values()) == matrix.sum() == 3 * PER_CLASS
    for k, name in enumerate(CLASSES):
        assert per_class[name]["support"] == matrix[k].sum()
        assert per_class[name]["recall"] == round(matrix[k, k] / matrix[k].sum(), 4)
        predicted = matrix[:, k].sum()
        assert per_class[name]["precision"] == (round(matrix[k, k] / predicted, 4) if predicted else 0.0)


def test_groups_and_calibration(audited):
    result, probabilities, labels = audited
    predictions, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    correct = predictions == labels
    # write_probe marks odd-numbered images of each class 'north', even ones 'south'.
    north = np.tile(np.arange(PER_CLASS) % 2 == 1, 3)
    groups = result.metrics["groups"]["site"]
    assert groups["north"]["n"] == groups["south"]["n"] == 3 * PER_CLASS // 2
    assert groups["north"]["accuracy"] == round(float(correct[north].mean()), 4)
    assert groups["south"]["accuracy"] == round(float(correct[~north].mean()), 4)
    # Expected calibration error over 15 equal-width confidence bins, by hand.
    bins = np.minimum((confidence * 15).astype(int), 14)
    ece = sum((bins == b).mean() * abs(correct[bins == b].mean() - confidence[bins == b].mean())
              for b in np.unique(bins))
    calibration = result.metrics["calibration"]
    assert calibration["ece"] == pytest.approx(ece, abs=1e-4)
    assert sum(row[2] for row in calibration["bins"]) == len(labels)
    assert calibration["mean_confidence"] == pytest.approx(confidence.mean(), abs=1e-4)


def test_the_worst_group_is_a_class_by_attribute_cell_and_the_report_names_it(audited):
    result, probabilities, labels = audited
    correct = probabilities.argmax(axis=1) == labels
    north = np.tile(np.arange(PER_CLASS) % 2 == 1, 3)
    cells = [(name, site, correct[(labels == k) & (north if site == "north" else ~north)])
             for k, name in enumerate(CLASSES) for site in ("north", "south")]
    name, site, members = min(cells, key=lambda cell: (cell[2].mean(), -len(cell[2])))
    worst = result.metrics["worst_group"]
    assert worst["accuracy"] == round(float(members.mean()), 4) == result.metrics["worst_group_accuracy"]
    assert result.metrics["group_cells"]["site"][worst["class"]][worst["value"]]["accuracy"] == worst["accuracy"]
    performance = section(result, "performance")
    key = next(b for b in performance.blocks if getattr(b, "title", "") == "Key metrics")
    assert f"{worst['class']} with site = {worst['value']}" in dict(key.rows)["worst group (class x attribute)"]
    table = next(b for b in performance.blocks if getattr(b, "title", "") == "Accuracy by class and site")
    assert [row[0] for row in table.rows] == CLASSES
