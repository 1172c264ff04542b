"""Reads behind the portal's pages.

The audit page's data (selectors.audit_page), read from the audit's row, its stored findings and its
findings.json: the verdict's reason as the report words it, the sections that failed or were skipped
(failed first), each finding with its anchor in the report, who asked and how long it took.

The identical-audit lookup, the audit list's filters, the pair of audits a comparison takes (and why one is
refused), the comparison across model versions, a model's history, a probe set's images per class, tokens
listed with the revoked ones.

The live view of an audit: its place in the queue, the time left estimated from past audits of a similar
size (none without history), its steps with their durations."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from auditsvc.audits import selectors, services
from auditsvc.audits.jinja import duration
from auditsvc.audits.models import Audit, AuditFinding, ModelVersion, ProbeSet
from auditsvc.battery.results import Finding, SectionResult, incomplete_finding
from tests.audits.audit_rows import another_version, finding, finished_audit

pytestmark = pytest.mark.django_db


# --- the audit page ----------------------------------------------------------------------------

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


def identity(version, probe, reference=None, seed=0):
    return {"organization": version.organization, "model_version": version, "probe_set": probe,
            "reference": reference, "seed": seed}


# --- the identical audit -----------------------------------------------------------------------

def test_an_identical_audit_is_one_queued_or_running_with_the_same_inputs(users, stored):
    version, probe = stored
    other = another_version(version, "2.0")
    queued = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                   probe_set=probe, seed=3)
    assert selectors.audit_find_identical(**identity(version, probe, seed=3)) == queued
    for different in (identity(version, probe, seed=4), identity(other, probe, seed=3),
                      identity(version, probe, reference=other, seed=3),
                      identity(version, probe, seed=3) | {"profile": "quick"}):   # a quick audit is another report
        assert selectors.audit_find_identical(**different) is None
    services.audit_transition(queued, Audit.Status.RUNNING)
    assert selectors.audit_find_identical(**identity(version, probe, seed=3)) == queued
    services.audit_transition(queued, Audit.Status.DONE, verdict="pass")
    assert selectors.audit_find_identical(**identity(version, probe, seed=3)) is None   # a finished one is not


def test_another_organizations_audit_is_never_identical(users, stored):
    version, probe = stored
    services.audit_create(organization=users["acme"], user=users["alice"], model_version=version, probe_set=probe)
    assert selectors.audit_find_identical(**identity(version, probe) | {"organization": users["globex"]}) is None


# --- the audit list's filters ------------------------------------------------------------------

def test_the_audit_list_filters_by_model_release_tag_verdict_and_status(users, stored):
    version, probe = stored
    version.release_tag = "v1.0"
    version.save()
    candidate = another_version(version, "2.0", release_tag="v2.0-rc1")
    passed = finished_audit(version, probe, verdict="pass")
    failed = finished_audit(candidate, probe, verdict="fail")
    queued = services.audit_create(organization=users["acme"], user=users["alice"], model_version=candidate,
                                   probe_set=probe, seed=9)

    def shown(**filters):
        return set(selectors.audits_filtered(users["alice"], **filters).values_list("pk", flat=True))

    assert shown() == {passed.pk, failed.pk, queued.pk}
    assert shown(release_tag="v2.0-rc1") == {failed.pk, queued.pk}
    assert shown(release_tag="v2.0-rc1", status="done") == {failed.pk}
    assert shown(verdict="pass") == {passed.pk}
    assert shown(model="pets", verdict="fail") == {failed.pk}
    assert shown(model="no such model") == set()
    assert selectors.release_tags_for(users["alice"]) == ["v1.0", "v2.0-rc1"]
    assert selectors.model_names_for(users["alice"]) == ["pets"]
    assert shown() and not selectors.audits_filtered(users["bob"]).exists()   # Bob sees none of them


# --- comparing ---------------------------------------------------------------------------------

def test_two_finished_audits_of_different_versions_are_compared_by_finding_code(users, stored):
    version, probe = stored
    version.release_tag = "v1.0"
    version.save()
    candidate = another_version(version, "2.0", release_tag="v2.0", input={"size": [3, 64, 64], "mean": [0.5] * 3,
                                                                          "std": [0.25] * 3})
    groups = {"site": {"north": {"accuracy": 0.5, "n": 6}, "south": {"accuracy": 0.75, "n": 6}}}
    baseline = finished_audit(version, probe, verdict="fail",
                              findings=[finding("shortcut.site", "fail"), finding("calibration.over", "warn")],
                              metrics={"accuracy": 0.625, "groups": groups})
    better = finished_audit(candidate, probe, verdict="warn",
                            findings=[finding("calibration.over", "info"), finding("saliency.edges", "warn")],
                            metrics={"accuracy": 0.75, "groups": {"site": {"north": {"accuracy": 0.75, "n": 6}}}})
    comparison = selectors.audit_comparison(better, baseline)   # either order: the older one comes first
    assert (comparison["older"], comparison["newer"]) == (baseline, better)
    assert [f["code"] for f in comparison["new"]] == ["saliency.edges"]
    assert [f["code"] for f in comparison["resolved"]] == ["shortcut.site"]
    assert [(f["code"], f["severity_before"], f["severity"]) for f in comparison["kept"]] == [
        ("calibration.over", "warn", "info")]
    assert comparison["metrics"][0] == {"name": "Accuracy", "before": "62.5%", "after": "75.0%", "delta": "+12.5%"}
    assert [(g["name"], g["delta"]) for g in comparison["groups"]] == [("site = north", "+25.0%"),
                                                                       ("site = south", "-")]
    differing = {row["label"]: (row["before"], row["after"]) for row in comparison["setup"] if row["differs"]}
    assert differing == {"Version": ("1.0", "2.0"), "Release tag": ("v1.0", "v2.0"),
                         "sha256": (version.sha256, "9" * 64), "Format": ("torch.export", "torchscript"),
                         "Input size": ("3 × 32 × 32", "3 × 64 × 64")}


def test_a_pair_is_refused_with_the_reason(users, stored):
    version, probe = stored
    first, second = finished_audit(version, probe), finished_audit(version, probe, seed=1)
    queued = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                   probe_set=probe, seed=2)
    alice = users["alice"]
    assert selectors.audit_pair(alice, [first.pk, second.pk]) == ([first, second], "", False)
    assert selectors.audit_pair(alice, []) == ([], "", False)
    assert "exactly two" in selectors.audit_pair(alice, [first.pk])[1]
    assert "exactly two" in selectors.audit_pair(alice, [first.pk, second.pk, queued.pk])[1]
    assert "twice" in selectors.audit_pair(alice, [first.pk, first.pk])[1]
    assert "still queued" in selectors.audit_pair(alice, [first.pk, queued.pk])[1]
    services.audit_fail(queued, "broken")
    assert "failed" in selectors.audit_pair(alice, [first.pk, queued.pk])[1]
    assert selectors.audit_pair(alice, [first.pk, None])[2] is True
    assert selectors.audit_pair(alice, [first.pk, 10**9])[2] is True


def test_another_organizations_audit_is_unknown_to_a_comparison(users, stored):
    version, probe = stored
    acme = finished_audit(version, probe)
    globex_version = ModelVersion.objects.create(organization=users["globex"], name="g", version="1",
                                                 meta={"classes": ["cat", "dog"]}, format="torch.export",
                                                 sha256="0" * 64, file="g.pt2", uploaded_by=users["bob"])
    globex_probe = ProbeSet.objects.create(organization=users["globex"], name="gp", sha256="1" * 64, images=4,
                                           classes=["cat", "dog"], file="g.zip", uploaded_by=users["bob"])
    globex = finished_audit(globex_version, globex_probe)
    audits, problem, unknown = selectors.audit_pair(users["bob"], [globex.pk, acme.pk])
    assert audits == [] and unknown and f"#{acme.pk}" in problem
    assert selectors.comparable_audits(users["bob"], users["globex"]) == [globex]
    assert acme not in selectors.audits_to_compare_with(users["bob"], globex)


def test_audits_to_compare_with_list_the_same_models_versions_first(users, stored):
    version, probe = stored
    other_model = ModelVersion.objects.create(organization=users["acme"], name="zebra", version="1",
                                              meta={"classes": ["cat", "dog"]}, format="torch.export",
                                              sha256="2" * 64, file="z.pt2", uploaded_by=users["alice"])
    audit = finished_audit(version, probe)
    same_model = finished_audit(another_version(version, "2.0"), probe)
    other = finished_audit(other_model, probe)   # the newest, but of another model
    services.audit_create(organization=users["acme"], user=users["alice"], model_version=version, probe_set=probe,
                          seed=5)   # not finished: not offered
    assert selectors.audits_to_compare_with(users["alice"], audit) == [same_model, other]


# --- detail pages ------------------------------------------------------------------------------

def test_a_models_history_lists_each_version_with_its_audits_and_latest_verdict(users, stored):
    version, probe = stored
    newer = another_version(version, "2.0", release_tag="v2")
    first = finished_audit(version, probe, verdict="fail")
    second = finished_audit(version, probe, verdict="pass", seed=1)
    queued = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                   probe_set=probe, seed=2)
    history = selectors.model_history(users["alice"], version)
    assert [item["version"] for item in history] == [newer, version]
    assert history[0]["audits"] == [] and history[0]["latest_verdict"] == ""
    assert history[1]["audits"] == [queued, second, first] and history[1]["latest_verdict"] == "pass"


def test_a_probe_sets_images_are_counted_per_class_from_the_stored_zip(users, stored):
    _, probe = stored
    assert selectors.probe_set_images_per_class(probe) == {"cat": 6, "dog": 6}
    Path(probe.file.path).unlink()
    probe.sha256 = "f" * 64   # not cached under this hash: the missing file is read, and reported as unknown
    assert selectors.probe_set_images_per_class(probe) is None


def test_revoked_tokens_stay_listed_after_the_ones_in_use(users):
    old, _ = services.api_token_create(user=users["alice"], organization=users["acme"], name="old")
    new, _ = services.api_token_create(user=users["alice"], organization=users["acme"], name="new")
    services.api_token_revoke(old)
    assert list(selectors.tokens_for(users["alice"])) == [new, old]
    assert list(selectors.tokens_for(users["bob"])) == []


# --- the live view of an audit --------------------------------------------------------------------

def step(name, status="queued", seconds=None, fraction=0.0, started=None):
    return {"name": name, "title": name.title(), "status": status, "started": started, "seconds": seconds,
            "fraction": fraction}


@pytest.fixture
def make_audit(users, stored):
    version, _ = stored

    def make(images=100, status=Audit.Status.QUEUED, steps=(), organization="acme", **fields):
        probe = ProbeSet.objects.create(organization=users[organization], name=f"{images} images", file="x.zip",
                                        sha256="0" * 64, images=images, classes=["cat", "dog"])
        model_version = version if organization == "acme" else _version_of(users["globex"], version)
        return Audit.objects.create(organization=users[organization], model_version=model_version, probe_set=probe,
                                    status=status, steps=list(steps), **fields)
    return make


def _version_of(organization, like):
    return type(like).objects.create(organization=organization, name=like.name, version=like.version, meta=like.meta,
                                     format=like.format, file=like.file.name, sha256=like.sha256)


# --- the queue ---------------------------------------------------------------------------------

def test_the_queue_position_counts_the_queued_audits_that_start_before_it_of_every_organization(make_audit):
    first = make_audit()
    make_audit(status=Audit.Status.RUNNING)            # running: no longer waiting ahead of anyone
    globex = make_audit(organization="globex")         # another organization's: the same workers, and its turn
    make_audit(status=Audit.Status.DONE)               # comes first, as Acme has an audit running already
    last = make_audit()
    assert [selectors.audit_queue_position(a) for a in (globex, first, last)] == [0, 1, 2]
    first.status = Audit.Status.RUNNING
    first.save()
    assert selectors.audit_queue_position(last) == 1 and selectors.audit_queue_position(first) is None


def test_audits_created_at_the_same_moment_queue_by_id(make_audit):
    now = timezone.now()
    earlier, later = make_audit(), make_audit()
    Audit.objects.filter(pk__in=[earlier.pk, later.pk]).update(created=now)
    earlier.refresh_from_db()
    later.refresh_from_db()
    assert (selectors.audit_queue_position(earlier), selectors.audit_queue_position(later)) == (0, 1)


# --- the estimate ------------------------------------------------------------------------------

def test_there_is_no_estimate_without_history(make_audit):
    audit = make_audit(steps=[step("summary"), step("report")])
    make_audit(status=Audit.Status.FAILED, steps=[step("summary", "ok", 3.0), step("report", "ok", 1.0)])
    assert selectors.audit_remaining_seconds(audit) is None   # only finished (done) audits teach
    assert selectors.audit_progress(audit)["remaining"] is None


def test_the_estimate_scales_past_durations_by_the_probe_set_size(make_audit):
    make_audit(images=100, status=Audit.Status.DONE, steps=[step("summary", "ok", 1.0),
                                                             step("performance", "ok", 10.0),
                                                             step("report", "ok", 2.0)])
    running = make_audit(images=300, status=Audit.Status.RUNNING, steps=[
        step("summary", "ok", 3.0), step("performance", "running", fraction=0.25), step("report")])
    # performance: 10 s x 3 with a quarter done; the report 2 s x 3; the finished summary counts no more
    assert selectors.audit_remaining_seconds(running) == pytest.approx(30 * 0.75 + 6)
    unknown = make_audit(images=300, status=Audit.Status.RUNNING, steps=[step("performance"), step("saliency")])
    assert selectors.audit_remaining_seconds(unknown) is None   # a step nobody has timed yet


def test_the_estimate_learns_from_the_audits_nearest_in_size(make_audit):
    for _ in range(3):   # 1 s per image on 1000 images
        make_audit(images=1000, status=Audit.Status.DONE, steps=[step("shortcuts", "ok", 1000.0)])
    for _ in range(5):   # 0.1 s per image on 100 images
        make_audit(images=100, status=Audit.Status.DONE, steps=[step("shortcuts", "ok", 10.0)])
    make_audit(images=1000, status=Audit.Status.DONE, steps=[step("shortcuts", "error", 1.0)])   # not a duration
    big = make_audit(images=900, steps=[step("shortcuts")])
    small = make_audit(images=110, steps=[step("shortcuts")])
    # the five nearest: three of 1000 images and two of 100 for the big one, the five of 100 for the small one
    assert selectors.audit_remaining_seconds(big) == pytest.approx(900.0)
    assert selectors.audit_remaining_seconds(small) == pytest.approx(11.0)


# --- the live view -----------------------------------------------------------------------------

def test_the_progress_of_a_running_audit_names_its_step_and_times(make_audit):
    now = timezone.now()
    audit = make_audit(status=Audit.Status.RUNNING, started=now - timedelta(seconds=134), steps=[
        step("summary", "ok", 0.4), step("shortcuts", "running", fraction=0.5,
                                         started=(now - timedelta(seconds=20)).isoformat()),
        step("report")])
    progress = selectors.audit_progress(audit, now)
    assert progress["step"] == {"number": 2, "count": 3, "title": "Shortcuts"}
    assert [(s["status"], s["seconds"]) for s in progress["steps"]] == [("ok", 0.4), ("running", 20.0),
                                                                         ("queued", None)]
    assert progress["elapsed"] == 134.0 and progress["queue_position"] is None and progress["cancellable"]


def test_a_finished_audit_has_no_estimate_and_cannot_be_cancelled(make_audit):
    now = timezone.now()
    audit = make_audit(status=Audit.Status.CANCELLED, started=now - timedelta(seconds=10), finished=now,
                       steps=[step("summary", "ok", 0.4), step("report", "cancelled")])
    progress = selectors.audit_progress(audit, now + timedelta(hours=1))
    assert progress["elapsed"] == 10.0 and progress["remaining"] is None and progress["step"] is None
    assert not progress["cancellable"]
