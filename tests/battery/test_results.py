"""The verdict: the worst finding, and never PASS when a section failed."""

import pytest

from auditsvc.battery.results import Finding, SectionResult, incomplete_finding, verdict_of


def _section(name: str, status: str = "ok", reason: str = "") -> SectionResult:
    return SectionResult(name=name, title=name.title(), status=status, reason=reason)


def _finding(severity: str) -> Finding:
    return Finding("bias.example", "bias", severity, "An example", "An example finding.")


@pytest.mark.parametrize("findings, statuses, verdict", [
    ([], ["ok", "ok"], "pass"),
    ([], ["ok", "skipped"], "pass"),                 # not applicable is not a failure
    ([], ["ok", "error"], "warn"),
    ([_finding("info")], ["error"], "warn"),
    ([_finding("warn")], ["error"], "warn"),
    ([_finding("fail")], ["error"], "fail"),         # an error never lowers the verdict
    ([_finding("fail")], ["ok"], "fail"),
])
def test_the_verdict_is_at_least_warn_when_a_section_failed(findings, statuses, verdict):
    sections = [_section(f"s{i}", status) for i, status in enumerate(statuses)]
    assert verdict_of(findings, sections) == verdict


def test_every_section_ran_or_was_skipped_means_complete():
    assert incomplete_finding([_section("summary"), _section("embedding", "skipped", "too few images")]) is None


def test_the_incomplete_finding_names_the_failed_sections_and_their_reasons():
    sections = [_section("summary"), _section("performance", "error", "ValueError: bad tick label"),
                _section("embedding", "skipped", "too few images"), _section("neurons", "error", "KeyError: 3")]
    finding = incomplete_finding(sections)
    assert (finding.code, finding.category, finding.severity) == ("health.incomplete", "health", "warn")
    assert finding.title == "Incomplete audit: sections performance, neurons failed"
    assert "performance (ValueError: bad tick label)" in finding.summary and "neurons (KeyError: 3)" in finding.summary
    assert "embedding" not in finding.title + finding.summary
    assert finding.evidence == {"failed_sections": {"performance": "ValueError: bad tick label",
                                                    "neurons": "KeyError: 3"}}
    assert verdict_of([finding]) == "warn"
    one = incomplete_finding([_section("neurons", "error", "KeyError: 3")])
    assert one.title == "Incomplete audit: section neurons failed"
