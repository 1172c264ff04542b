"""The report's front pages as a reviewer signs them: the verdict with its reason, findings grouped by
root cause with actions, every check with its line, the class x cue grid, the sign-off block; and
every number on them equal to findings.json."""

import json
import re
import subprocess

import pytest

from auditsvc.battery.context import AuditOptions
from auditsvc.battery.results import AuditResult, Check, Finding, SectionResult, Verdict
from auditsvc.pipeline import load_and_audit
from auditsvc.reports.front import EXPLAINED_ACTION, front_pages, root_causes
from auditsvc.reports.render import report_data, write_report

RECORD = {"audit": "417", "organization": "Acme Vision", "requester": "Dana Reviewer", "release_tag": "v2.3.0-rc1"}


def finding(code, severity, title, **evidence):
    return Finding(code, code.split(".")[0], severity, title, f"{title}: because.", evidence, headline=title)


def result_of(findings, checks=()):
    section = SectionResult("shortcuts", "Shortcut probes", checks=list(checks))
    return AuditResult({"name": "m", "version": "1", "sha256": "0" * 64, "format": "torch.export"},
                       {"sha256": "1" * 64, "images": 40, "classes": ["a", "b"]}, None,
                       max((Verdict(f.severity) for f in findings if f.severity != "info"), default=Verdict.PASS),
                       {"accuracy": 0.5}, findings, [section], {}, {}, "2026-12-02T00:00:00+00:00")


def shown(findings):
    return [{"code": f.code, "title": f.title, "severity": f.severity, "anchor": f"finding-{i + 1}"}
            for i, f in enumerate(findings)]


def test_one_shortcut_leads_the_findings_it_explains():
    grid = {"cue": "weather", "levels": ["cloudy", "sunny"],
            "cells": {"a": {"cloudy": {"accuracy": 0.0, "n": 10}, "sunny": {"accuracy": 1.0, "n": 10}}}}
    shortcut = finding("shortcut.colour", "fail", "Shortcut: predictions follow 'weather'", attribute="weather",
                       cue="colour", class_by_cue=grid)
    chance = finding("health.chance_accuracy", "fail", "Accuracy no better than guessing")
    calibration = finding("health.miscalibrated", "warn", "Confidence does not match accuracy")
    clusters = finding("representation.weather_clusters", "warn", "Representation groups images by 'weather'",
                       attribute="weather")
    fragile = finding("robustness.noise", "warn", "Not robust to pixel noise", change="add_noise")
    findings = [chance, shortcut, calibration, clusters, fragile]
    rows = shown(findings)
    groups = root_causes(findings, rows)
    assert [g.lead["code"] for g in groups] == ["shortcut.colour", "robustness.noise"]
    assert {e["code"] for e in groups[0].explained} == {"health.chance_accuracy", "health.miscalibrated",
                                                        "representation.weather_clusters"}
    assert "0% to 100%" in groups[0].why
    assert all(row["action"] for row in rows)
    assert "'weather'" in groups[0].lead["action"] and groups[0].explained[0]["action"] == EXPLAINED_ACTION
    assert "add noise" in groups[1].lead["action"] or "Augment" in groups[1].lead["action"]


def test_without_a_failing_shortcut_every_finding_is_its_own_cause():
    findings = [finding("health.miscalibrated", "warn", "Confidence does not match accuracy"),
                finding("shortcut.noise", "warn", "Shortcut: predictions follow the grain", cue="noise")]
    groups = root_causes(findings, shown(findings))
    assert [g.explained for g in groups] == [[], []]


def test_the_verdict_says_why_and_the_checks_list_passed_ones_last():
    checks = [Check("Robustness", 0.0, "0%", "warns at 15%", "pass"),
              Check("Shortcut", 0.66, "0.66 (colour)", "fails at 0.20", "fail", "shortcut.colour")]
    findings = [finding("shortcut.colour", "fail", "Shortcut: predictions follow the colour", cue="colour")]
    front = front_pages(result_of(findings, checks), shown(findings))
    assert front["reason"].startswith("FAIL: predictions follow the colour: the model decides by a cue")
    assert [c["status"] for c in front["checks"]] == ["fail", "pass"]
    passing = front_pages(result_of([], checks[:1]), [])
    assert passing["reason"].startswith("PASS: every check passed") and passing["groups"] == []


@pytest.fixture(scope="module")
def demo_report(tank_demo, tmp_path_factory):
    """The tank demo's shortcut model against the clean one, with the sections the front pages draw on.
    The text: the front pages, and the findings in detail up to the first method's section."""
    options = AuditOptions(sections=["summary", "performance", "shortcuts", "reference", "embedding"])
    result = load_and_audit(tank_demo["shortcut"], tank_demo["probe"], reference=tank_demo["clean"], options=options)
    paths = write_report(result, tmp_path_factory.mktemp("front"), cover=RECORD)
    pages = subprocess.run(["pdftotext", "-layout", str(paths["pdf"]), "-"],
                           capture_output=True, text=True, check=True).stdout.split("\f")
    body = next(i for i, page in enumerate(pages) if i >= 2 and re.search(r"^\s*Performance\s*$", page, re.M))
    return result, json.loads(paths["json"].read_text()), "\f".join(pages[:2]), "\f".join(pages[2:body])


def test_the_demo_front_pages_hold_what_a_reviewer_signs(demo_report):
    result, data, front, _ = demo_report
    flat = " ".join(front.split())
    assert "FAIL: predictions follow" in flat and "'weather'" in flat
    for label, value in RECORD.items():
        assert value in flat, label
    assert "Accuracy by true class and weather" in flat and "0% (50)" in flat
    assert _key_metrics(front)[:2] == [f"{data['metrics']['accuracy']:.1%}", "0.0%"]
    assert data["metrics"]["worst_group_accuracy"] == 0.0 and "Worst-group accuracy:" in flat and "no_tank, weather = cloudy" in flat
    assert "Recommended action" in flat and "Retrain with 'weather' decorrelated" in flat
    assert "Resolves with the root cause above" in flat   # chance accuracy explained by the shortcut
    checks = [c for s in data["sections"].values() for c in s.get("checks", [])]
    assert len(checks) >= 8
    for check in checks:
        assert " ".join(check["name"].split()[:3]) in flat
    assert {"Reviewer", "Decision", "Signature", "Contents"} <= set(flat.split())
    assert "Against the reference model" in flat and "resolved" in flat   # the clean model's robustness warnings


def test_every_number_on_the_front_pages_and_the_findings_is_in_findings_json(demo_report):
    result, data, front, details = demo_report
    assert "Findings in detail" in details
    known = _renderings(data) | _check_counts(data) | {RECORD["audit"], "0", "1", "2"}
    lines = [line for line in (front + details).splitlines() if not _identity_line(line)]
    quoted = re.findall(r"(?<![\w.-])[+-]?\d+(?:\.\d+)?%?(?![\w.])", " ".join(lines))
    unknown = sorted({q for q in quoted if q.lstrip("+") not in known})
    assert quoted and not unknown, f"numbers on the front pages not in findings.json: {unknown}"
    # The headline numbers, each where it is labelled.
    flat = " ".join(front.split())
    calibration = data["metrics"]["calibration"]
    assert _key_metrics(front) == [f"{data['metrics']['accuracy']:.1%}", f"{data['metrics']['worst_group_accuracy']:.1%}",
                                   f"{calibration['ece']:.3f}", str(data["dataset"]["images"])]
    for check in (c for s in data["sections"].values() for c in s.get("checks", [])):
        assert check["measured"].split(" (")[0] in flat


def _key_metrics(front: str) -> list[str]:
    """The values of the key-metrics row (the line above the one naming them)."""
    lines = front.splitlines()
    labels = next(i for i, line in enumerate(lines) if "Accuracy" in line and "Expected calibration error" in line)
    return lines[labels - 1].split()


def _identity_line(line: str) -> bool:
    """Cover and identity rows (dates, hashes, versions, page numbers, the release tag), not measurements."""
    return bool(re.search(r"sha256|Date|Versions|page \d+ of|\.{5}|Release tag|Model run in|torch|x64", line))


def _renderings(data) -> set[str]:
    """Every way the report prints a number findings.json holds (data, or text the audit wrote)."""
    out: set[str] = set()

    def walk(value):
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            for fmt in ("{:.0%}", "{:.1%}", "{:.1f}", "{:.2f}", "{:.3f}", "{:.2g}", "{:.3g}", "{:+.0%}"):
                out.add(fmt.format(value).lstrip("+"))
            if float(value).is_integer():
                out.add(str(int(value)))
        elif isinstance(value, str):
            out.update(m.lstrip("+") for m in re.findall(r"[+-]?\d+(?:\.\d+)?%?", value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(data)
    return out


def _check_counts(data) -> set[str]:
    checks = [c for s in data["sections"].values() for c in s.get("checks", [])]
    return {str(len(checks))} | {str(sum(c["status"] == s for c in checks)) for s in ("pass", "fail", "warn", "info")}
