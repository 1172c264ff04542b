"""The audit page's data (selectors.audit_page), read from the audit's row, its stored findings and its
findings.json: the verdict's reason as the report words it, the sections that failed or were skipped
(failed first), each finding with its anchor in the report, who asked and how long it took."""

import json
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from auditsvc.audits import selectors, services
from auditsvc.audits.jinja import duration
from auditsvc.audits.models import Audit, AuditFinding, ModelVersion, ProbeSet
from auditsvc.battery.results import Finding, SectionResult, incomplete_finding

pytestmark = pytest.mark.django_db
SECTIONS = {"summary": {"status": "ok", "seconds": 0.1},
            "embedding": {"status": "skipped", "seconds": 0.0, "reason": "the probe set has no attributes"},
            "neurons": {"status": "error", "seconds": 0.2, "reason": "ValueError: no layers"},
            "performance": {"status": "ok", "seconds": 1.0},
            "saliency": {"status": "error", "seconds": 0.3, "reason": "RuntimeError: out of memory"}}


@pytest.fixture
def audit(users):
    """A finished audit of Acme (rows and a findings.json only): two sections failed, one was skipped."""
    organization = users["acme"]
    version = ModelVersion.objects.create(organization=organization, name="pets", version="2.0", release_tag="v2.0-rc1",
                                          meta={"classes": ["cat", "dog"]}, format="torch.export", sha256="0" * 64,
                                          file="model.pt2", uploaded_by=users["alice"])
    probe = ProbeSet.objects.create(organization=organization, name="pets probe", sha256="1" * 64, images=4,
                                    classes=["cat", "dog"], file="probe.zip", uploaded_by=users["alice"])
    audit = Audit.objects.create(organization=organization, model_version=version, probe_set=probe,
                                 requested_by=users["alice"], status=Audit.Status.DONE, verdict="warn")
    incomplete = incomplete_finding([SectionResult(name, name, status=s["status"], reason=s.get("reason", ""))
                                     for name, s in SECTIONS.items()])
    shortcut = Finding("shortcut.cue", "shortcut", "warn", "Shortcut: predictions follow the grain", "Changing it.")
    findings = [incomplete, shortcut]
    AuditFinding.objects.bulk_create([AuditFinding(audit=audit, code=f.code, category=f.category, severity=f.severity,
                                                   title=f.title, summary=f.summary) for f in findings])
    stored = {"schema": 1, "verdict": "warn", "findings": [f.to_json() for f in findings], "sections": SECTIONS}
    audit.findings_json.save("findings.json", ContentFile(json.dumps(stored).encode()))
    return audit


def test_failed_sections_come_first_then_skipped_ones_each_with_why_and_its_anchor(audit):
    page = selectors.audit_page(audit)
    assert [(s["name"], s["label"]) for s in page["sections_not_run"]] == [
        ("neurons", "failed"), ("saliency", "failed"), ("embedding", "skipped")]
    assert page["sections_not_run"][0]["reason"] == "ValueError: no layers"
    assert [s["anchor"] for s in page["sections_not_run"]] == ["section-neurons", "section-saliency", "section-embedding"]


def test_the_reason_is_the_report_fronts_for_the_stored_findings(audit):
    assert selectors.audit_page(audit)["verdict_reason"] == (
        "WARN: the audit is incomplete (neurons, saliency failed), so it cannot pass.")
    AuditFinding.objects.filter(code="health.incomplete").delete()
    assert selectors.audit_page(audit)["verdict_reason"].startswith(
        "WARN: predictions follow the grain. No check failed; a reviewer decides")


def test_each_finding_has_its_anchor_in_the_report_in_findings_json_order(audit):
    findings = selectors.audit_page(audit)["findings"]
    assert [(f["code"], f["anchor"]) for f in findings] == [("health.incomplete", "finding-1"),
                                                           ("shortcut.cue", "finding-2")]


def test_who_asked_and_how_long_the_audit_waited_and_ran(audit, users):
    created = timezone.now() - timedelta(minutes=5)
    Audit.objects.filter(pk=audit.pk).update(created=created, started=created + timedelta(seconds=4),
                                             finished=created + timedelta(seconds=99))
    audit.refresh_from_db()
    page = selectors.audit_page(audit)
    assert (page["queued_seconds"], page["run_seconds"]) == (4.0, 95.0)
    assert (duration(page["queued_seconds"]), duration(page["run_seconds"])) == ("4 s", "1 min 35 s")
    assert page["requester"] == "alice" and page["release_tag"] == "v2.0-rc1"
    users["alice"].first_name, users["alice"].last_name = "Alice", "Reviewer"
    users["alice"].save()
    audit.refresh_from_db()
    assert selectors.audit_page(audit)["requester"] == "Alice Reviewer"
    audit.requested_by = None
    audit.schedule = services.schedule_create(organization=users["acme"], user=users["alice"],
                                              model_version=audit.model_version, probe_set=audit.probe_set,
                                              every_hours=12)
    assert selectors.audit_page(audit)["requester"] == "scheduled re-audit, every 12 h"


def test_a_queued_audit_has_no_verdict_sections_or_findings_yet(audit):
    Audit.objects.filter(pk=audit.pk).update(status=Audit.Status.QUEUED, started=None, finished=None)
    audit.refresh_from_db()
    page = selectors.audit_page(audit)
    assert (page["verdict_reason"], page["sections_not_run"], page["findings"]) == ("", [], [])
    assert page["queued_seconds"] is None and page["run_seconds"] is None


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"sections": [1]}', b'{"sections": {"x": 3}}'])
def test_a_findings_json_that_cannot_be_read_leaves_the_rest_of_the_page(audit, content):
    audit.findings_json.save("findings.json", ContentFile(content))
    page = selectors.audit_page(audit)
    assert page["sections_not_run"] == [] and len(page["findings"]) == 2
    assert page["verdict_reason"].startswith("WARN: ")


@pytest.mark.parametrize("seconds, words", [(None, "-"), (0.2, "under 1 s"), (59.6, "1 min"), (61, "1 min 1 s"),
                                            (3600 + 125, "1 h 2 min")])
def test_durations_in_words(seconds, words):
    assert duration(seconds) == words
