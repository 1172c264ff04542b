"""Performance: accuracy, confusion matrix, per-class and per-attribute-group accuracy, calibration."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix

from .. import figures
from ..context import AuditContext
from ..metrics import CALIBRATION_BINS, worst_group_words
from ..registry import Section, register
from ..results import Check, Figure, Finding, SectionResult, Table, Text, check_status, property_check

MAX_CLASS_ROWS = 30
MISCALIBRATED_ECE = 0.15


@register
class Performance(Section):
    name = "performance"
    title = "Performance"
    order = 20
    intro = ("How often the model is right on the probe set, where it errs (confusion matrix), per class "
             "and per manifest attribute group, and whether its confidence matches its accuracy.")

    def run(self, context: AuditContext) -> SectionResult:
        outputs, labels, classes = context.outputs, context.labels, context.classes
        predictions, confidence = outputs.predictions, outputs.probabilities.max(axis=1)
        correct = predictions == labels
        metrics = context.metrics
        per_class, groups, calibration = metrics["per_class"], metrics["groups"], metrics["calibration"]
        blocks = [
            Table(["metric", "value"], [
                ["accuracy", f"{correct.mean():.1%} ({correct.sum()} of {len(correct)})"],
                ["worst group (class x attribute)", worst_group_words(metrics["worst_group"])],
                ["expected calibration error", f"{calibration['ece']:.3f}"],
                ["mean confidence", f"{calibration['mean_confidence']:.1%}"],
            ], title="Key metrics"),
            _confusion_figure(labels, predictions, classes, context.probe.present_classes),
            _class_table(per_class),
            *_group_tables(groups),
            *_cell_tables(metrics["group_cells"]),
            _reliability_figure(confidence, correct, calibration),
        ]
        findings = health_findings(context, correct, per_class, calibration)
        return self.result(blocks=blocks, data={"accuracy": metrics["accuracy"], "ece": calibration["ece"]},
                           findings=findings, checks=health_checks(context, correct, calibration, findings))


def health_checks(context: AuditContext, correct: np.ndarray, calibration: dict, findings: list[Finding]
                  ) -> list[Check]:
    majority = np.bincount(context.labels).max() / len(context.labels)
    return [
        Check("Accuracy above always answering the most frequent class", round(float(correct.mean()), 4),
              f"{correct.mean():.1%}", f"fails unless significantly above {majority:.1%} (binomial p < 0.01)",
              *check_status(findings, "health.chance_accuracy")),
        Check("Expected calibration error", round(float(calibration["ece"]), 4), f"{calibration['ece']:.3f}",
              f"warns above {MISCALIBRATED_ECE}", *check_status(findings, "health.miscalibrated")),
        property_check("Outputs are finite", "fails on any NaN or infinite output", findings,
                       "health.nonfinite_outputs"),
    ]


def health_findings(context: AuditContext, correct: np.ndarray, per_class: dict, calibration: dict) -> list[Finding]:
    findings = []
    outputs, labels = context.outputs, context.labels
    nonfinite = int((~outputs.finite).sum())
    if nonfinite:
        findings.append(Finding("health.nonfinite_outputs", "health", "fail", "NaN or infinite outputs",
                                f"The model returns NaN or infinite logits for {nonfinite} of {len(labels)} probe images.",
                                {"images": nonfinite}))
    majority = np.bincount(labels).max() / len(labels)
    test = binomtest(int(correct.sum()), len(correct), majority, alternative="greater")
    if test.pvalue > 0.01:
        findings.append(Finding(
            "health.chance_accuracy", "health", "fail", "Accuracy no better than guessing",
            f"Accuracy {correct.mean():.1%} is not significantly above {majority:.1%}, what always answering the "
            f"most frequent class would score (binomial test p = {test.pvalue:.2g}).",
            {"accuracy": round(float(correct.mean()), 4), "majority_rate": round(float(majority), 4),
             "p_value": float(test.pvalue)}))
    predicted = np.unique(outputs.predictions)
    if len(predicted) == 1 and len(context.probe.present_classes) > 1:
        findings.append(Finding("health.constant_prediction", "health", "fail", "Model predicts a single class",
                                f"Every probe image is classified as {context.classes[predicted[0]]!r}.",
                                {"class": context.classes[predicted[0]]}))
    silent = [name for name, stats in per_class.items() if stats["recall"] == 0 and stats["support"] >= 5]
    if silent and len(predicted) > 1:
        findings.append(Finding("health.unrecognized_classes", "health", "warn",
                                f"{len(silent)} class(es) never recognized",
                                f"No probe image of {', '.join(map(repr, silent[:5]))} is classified correctly.",
                                {"classes": silent[:50]}))
    if calibration["ece"] > MISCALIBRATED_ECE:
        direction = "over" if calibration["mean_confidence"] > correct.mean() else "under"
        findings.append(Finding("health.miscalibrated", "health", "warn", "Confidence does not match accuracy",
                                f"The model is {direction}confident: expected calibration error {calibration['ece']:.2f} "
                                f"(mean confidence {calibration['mean_confidence']:.0%}, accuracy {correct.mean():.0%}).",
                                {"ece": calibration["ece"], "mean_confidence": calibration["mean_confidence"]}))
    return findings


def _confusion_figure(labels, predictions, classes, present) -> Figure:
    matrix = confusion_matrix(labels, predictions, labels=range(len(classes)))[present][:, present]
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(present)
    size = min(figures.PAGE_WIDTH_IN * 0.7, 1.6 + 0.45 * k)
    fig, ax = figures.plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figures.add_colour_bar(fig, ax, figures.ColourScale("Blues", "share of the row"))
    if k <= 20:
        names = [classes[c] for c in present]
        ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), names)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                        color="white" if rates[i, j] > 0.5 else "black", fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    counts = "numbers are images, " if k <= 12 else ""
    caption = (f"Rows are true classes, columns predictions; {counts}shading the share of the row (colour bar). A "
               "strong diagonal is good; a dark off-diagonal cell is a pair of classes the model confuses.")
    return Figure(figures.to_png(fig), caption, "Confusion matrix", width=f"{min(70, 25 + 4 * k)}%")


def _class_table(per_class: dict) -> Table:
    rows = sorted(per_class.items(), key=lambda item: item[1]["recall"])
    shown = rows[:MAX_CLASS_ROWS]
    caption = "Worst recall first." + (f" The {MAX_CLASS_ROWS} worst of {len(rows)} classes." if len(rows) > MAX_CLASS_ROWS else "")
    return Table(["class", "images", "recall (accuracy)", "precision", "F1"],
                 [[name, s["support"], f"{s['recall']:.1%}", f"{s['precision']:.1%}", f"{s['f1']:.2f}"]
                  for name, s in shown], caption, "Per class")


def _group_tables(groups: dict) -> list:
    if not groups:
        return [Text("The probe set has no manifest attributes, so there is no per-group accuracy here; "
                     "the shortcut probes group images by measured image properties instead.", "note")]
    tables = []
    for attribute, values in groups.items():
        rows = [[value, g["n"], f"{g['accuracy']:.1%}", f"{g['ci'][0]:.0%} - {g['ci'][1]:.0%}"]
                for value, g in values.items()]
        tables.append(Table([attribute, "images", "accuracy", "95% interval (Wilson)"], rows,
                            "Accuracy within each value of a manifest attribute. Large gaps between values "
                            "mean the model works for some conditions and not others.",
                            f"Accuracy by {attribute}"))
    return tables


MAX_CELL_COLUMNS = 8


def _cell_tables(cells: dict) -> list:
    tables = []
    for attribute, by_class in cells.items():
        lowest = {}
        for row in by_class.values():
            for value, cell in row.items():
                lowest[value] = min(lowest.get(value, 1.0), cell["accuracy"])
        values = sorted(sorted(lowest, key=lowest.get)[:MAX_CELL_COLUMNS])
        rows = [[name, *(f"{row[v]['accuracy']:.0%} ({row[v]['n']})" if v in row else "-" for v in values)]
                for name, row in by_class.items()]
        tables.append(Table(["class", *(f"{attribute} = {v}" for v in values)], rows,
                            f"Accuracy (images) in each cell of true class x {attribute}. A model that answers by "
                            f"{attribute} is right where it agrees with the class and wrong where it does not, which "
                            "the per-value accuracy above averages away."
                            + (f" The {MAX_CELL_COLUMNS} values with the lowest cells of {len(lowest)}."
                               if len(lowest) > MAX_CELL_COLUMNS else ""), f"Accuracy by class and {attribute}"))
    return tables


def _reliability_figure(confidence, correct, calibration) -> Figure:
    fig, (ax, hist) = figures.plt.subplots(1, 2, figsize=(figures.PAGE_WIDTH_IN * 0.75, 2.4), layout="constrained")
    bins = calibration["bins"]
    centres = [(b[0] + b[1]) / 2 for b in bins]
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.bar(centres, [b[4] for b in bins], width=1 / CALIBRATION_BINS, edgecolor="black", linewidth=0.5, alpha=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {calibration['ece']:.3f})")
    hist.hist([confidence[correct], confidence[~correct]], bins=20, range=(0, 1), stacked=True,
              label=["right", "wrong"], color=["#4c9a2a", "#c0392b"])
    hist.set_xlabel("confidence")
    hist.set_ylabel("images")
    hist.legend(frameon=False)
    hist.set_title("Confidence of right and wrong answers")
    caption = ("Left: accuracy of the images in each confidence bin; bars below the dashed line mean "
               "overconfidence. Right: confidence of right and wrong predictions; confident wrong "
               "answers are the dangerous ones.")
    return Figure(figures.to_png(fig), caption, "Calibration")
