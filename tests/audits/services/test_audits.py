"""Audits: created from stored objects or from one request's uploads (all or nothing), enqueued by task
name once committed, executed in the sandbox on the stored model.json, failed with the reason (a
timeout recognised by its class), swept when their worker went silent, cancelled for good."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from auditsvc.audits import services
from auditsvc.audits.models import Audit, ModelVersion, ProbeSet
from auditsvc.audits.services import audits as audit_services
from auditsvc.audits.services import running as running_services
from auditsvc.audits.services import uploads as upload_services
from auditsvc.battery import BadInput, ModelMeta
from auditsvc.celery import app as celery_app
from auditsvc.sandbox.confined_audit import ConfinedAudit
from tests.conftest import write_probe
from tests.service_fixtures import uploads, zip_directory

pytestmark = pytest.mark.django_db


def media_files(media):
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


@pytest.fixture
def queued(users, stored):
    version, probe = stored
    return Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe,
                                steps=services.planned_steps("full"))


@pytest.fixture(scope="module")
def horse_probe(tmp_path_factory) -> bytes:
    return zip_directory(write_probe(tmp_path_factory.mktemp("horse") / "probe", ["cat", "horse"], per_class=2))


# --- creating ----------------------------------------------------------------------------------

def test_audits_use_one_organization_and_matching_classes(users, stored):
    version, probe = stored
    other_probe = ProbeSet.objects.create(organization=users["globex"], name="x", file="x.zip", sha256="0" * 64,
                                          images=1, classes=["cat", "dog"])
    with pytest.raises(ValidationError, match="same organization"):
        services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                              probe_set=other_probe)
    probe.classes = ["cat", "horse"]
    with pytest.raises(ValidationError, match="horse"):
        services.audit_create(organization=users["acme"], user=users["alice"], model_version=version, probe_set=probe)
    assert Audit.objects.count() == 0


def test_an_audit_is_enqueued_by_task_name_once_committed(users, stored, sent_tasks,
                                                          django_capture_on_commit_callbacks):
    version, probe = stored
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe, seed=3)
    assert sent_tasks == [] and audit.stage == ""   # nothing is sent before the row is committed
    with django_capture_on_commit_callbacks(execute=True):   # the commit: the dispatcher runs, then sends
        for callback in callbacks:
            callback()
    assert sent_tasks == [("tasks.audits.execute_audit", [audit.pk])]
    assert (audit.status, audit.seed, audit.requested_by, audit.organization) == (
        "queued", 3, users["alice"], users["acme"])


def test_an_audit_from_uploads_stores_the_model_and_probe_set_once(users, package_files, probe_bytes,
                                                                   django_capture_on_commit_callbacks):
    for release in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            audit = services.audit_create_from_upload(organization=users["acme"], user=users["alice"],
                                                      release_tag="v1", **uploads(package_files, probe_bytes))
        assert audit.status == "queued" and audit.model_version.release_tag == "v1"
    assert ModelVersion.objects.count() == 1   # the same name, version and bytes: the registered version
    assert ProbeSet.objects.count() == 2 and Audit.objects.count() == 2


def test_an_audit_from_uploads_is_all_or_nothing(users, package_files, horse_probe, private_media):
    files = uploads(package_files) | {"dataset": SimpleUploadedFile("horses.zip", horse_probe)}
    with pytest.raises(ValidationError) as caught:
        services.audit_create_from_upload(organization=users["acme"], user=users["alice"], **files)
    assert "'horse'" in caught.value.message_dict["probe_set"][0]   # after both files were stored
    assert (ModelVersion.objects.count(), ProbeSet.objects.count(), Audit.objects.count()) == (0, 0, 0)
    assert media_files(private_media) == []


def test_errors_of_an_audit_from_uploads_name_the_request_fields(users, package_files, private_media):
    files = uploads(package_files) | {"dataset": SimpleUploadedFile("probe.txt", b"not a zip")}
    with pytest.raises(ValidationError) as caught:
        services.audit_create_from_upload(organization=users["acme"], user=users["alice"], **files)
    assert list(caught.value.message_dict) == ["dataset"] and "probe.txt" in caught.value.message_dict["dataset"][0]
    files = uploads(package_files) | {"reference": SimpleUploadedFile("ref.pt2", package_files["model"]),
                                      "dataset": SimpleUploadedFile("probe.zip", b"x")}
    with pytest.raises(ValidationError) as caught:
        services.audit_create_from_upload(organization=users["acme"], user=users["alice"], **files)
    assert list(caught.value.message_dict) == ["reference_meta"]
    assert ModelVersion.objects.count() == 0 and media_files(private_media) == []


def test_a_model_version_cannot_be_its_own_reference(users, stored):
    version, probe = stored
    with pytest.raises(ValidationError) as caught:
        services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                              probe_set=probe, reference=version)
    assert "cannot be its own reference" in caught.value.message_dict["reference"][0]
    assert Audit.objects.count() == 0


def test_a_pipeline_sending_the_same_audit_again_gets_the_queued_one(users, package_files, stored):
    version, probe = stored
    first, created = services.audit_get_or_create_from_upload(
        organization=users["acme"], user=users["alice"], probe_set=probe, seed=7, **uploads(package_files))
    assert created and first.model_version == version   # the same model bytes: the registered version
    again, created = services.audit_get_or_create_from_upload(
        organization=users["acme"], user=users["alice"], probe_set=probe, seed=7, **uploads(package_files))
    assert (again, created) == (first, False) and Audit.objects.count() == 1
    other_seed, created = services.audit_get_or_create_from_upload(
        organization=users["acme"], user=users["alice"], model_version=version, probe_set=probe, seed=8)
    assert created and other_seed != first
    services.audit_fail(first, "gone")
    _, created = services.audit_get_or_create_from_upload(
        organization=users["acme"], user=users["alice"], model_version=version, probe_set=probe, seed=7)
    assert created and Audit.objects.count() == 3   # a finished audit is not reused


# --- executing ---------------------------------------------------------------------------------

def test_an_audit_runs_once_on_the_stored_model_json_and_a_finished_one_is_left_alone(
        users, stored, monkeypatch, django_capture_on_commit_callbacks):
    version, probe = stored
    given, checks = [], []
    add_model = ConfinedAudit.add_model

    def add_model_seen(sandbox, path, meta, role="model"):
        given.append((role, meta))
        add_model(sandbox, path, meta, role)

    monkeypatch.setattr(ConfinedAudit, "add_model", add_model_seen)
    monkeypatch.setattr(upload_services, "check_model", lambda *args: checks.append(args))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe)
    assert len(callbacks) == 1  # enqueued on commit; without REDIS_URL nothing runs it in this process
    audit.refresh_from_db()
    assert audit.status == "queued" and audit.stage == services.NO_WORKER
    services.audit_execute(audit.pk)  # the worker's task body
    audit.refresh_from_db()
    assert audit.status == "done" and audit.progress == 1.0 and audit.attempts == 1 and audit.stage == "done"
    assert [(s["name"], s["status"]) for s in audit.steps] == [("setup", "ok"), ("summary", "ok"),
                                                                ("performance", "ok"), ("report", "ok")]
    assert all(s["seconds"] >= 0 and s["started"] for s in audit.steps)
    assert audit.report_pdf.name and audit.findings_json.name and audit.verdict in ("pass", "warn", "fail")
    assert audit.findings.count() == len(json.loads(audit.findings_json.read())["findings"])
    assert given == [("model", ModelMeta.from_dict(version.meta))] and checks == []   # no upload check again
    services.audit_execute(audit.pk)  # a redelivered message for a finished audit
    audit.refresh_from_db()
    assert audit.attempts == 1 and len(given) == 1 and audit.runs_completed == 1   # ran to completion once


@pytest.mark.parametrize("timeout", [SoftTimeLimitExceeded, TimeLimitExceeded])
def test_a_timeout_fails_the_audit_and_is_raised_to_celery(queued, monkeypatch, settings, timeout):
    def run(*args):
        raise timeout()

    monkeypatch.setattr(audit_services, "run_in_sandbox", run)
    monkeypatch.setattr(audit_services, "sandbox_prepare_next", lambda: None)
    settings.AUDIT_SOFT_TIME_LIMIT = 1800
    with pytest.raises(timeout):
        services.audit_execute(queued.pk, worker="w1")
    queued.refresh_from_db()
    assert (queued.status, queued.message) == ("failed", "The audit took longer than the 30 minute limit.")


@pytest.mark.parametrize("error, raised, message", [
    (BadInput("probe.zip: no images"), False, "probe.zip: no images"),
    (KeyError("x"), True, "Internal error while auditing: KeyError: 'x'"),
])
def test_a_failed_run_fails_the_audit_with_the_reason(queued, monkeypatch, error, raised, message):
    def run(*args):
        raise error

    monkeypatch.setattr(audit_services, "run_in_sandbox", run)
    monkeypatch.setattr(audit_services, "sandbox_prepare_next", lambda: None)
    if raised:
        with pytest.raises(type(error)):
            services.audit_execute(queued.pk)
    else:
        services.audit_execute(queued.pk)
    queued.refresh_from_db()
    assert (queued.status, queued.message, queued.attempts) == ("failed", message, 1)
    assert [s["status"] for s in queued.steps] == ["error", "skipped", "skipped", "skipped"]   # failed in set-up


# --- status ------------------------------------------------------------------------------------

def test_status_changes_only_along_the_life_cycle(queued):
    services.audit_transition(queued, Audit.Status.RUNNING)
    services.audit_fail(queued, "a reason\nover two lines")
    assert queued.message == "a reason over two lines" and queued.finished
    with pytest.raises(ValueError):
        services.audit_transition(queued, Audit.Status.RUNNING)
    queued.refresh_from_db()
    assert (queued.status, queued.message) == ("failed", "a reason over two lines")


def test_the_sweeper_requeues_then_fails_silent_audits(queued, settings, sent_tasks,
                                                       django_capture_on_commit_callbacks):
    settings.AUDIT_MAX_ATTEMPTS = 2
    services.audit_transition(queued, Audit.Status.RUNNING, attempts=1, worker="w1")
    later = timezone.now() + timedelta(seconds=settings.AUDIT_STALE_AFTER + 1)
    assert services.audits_sweep(now=timezone.now()) == []   # its heartbeat is fresh
    with django_capture_on_commit_callbacks(execute=True):
        assert services.audits_sweep(now=later) == [queued.pk]
    queued.refresh_from_db()
    assert queued.status == "queued" and sent_tasks == [("tasks.audits.execute_audit", [queued.pk])]
    services.audit_transition(queued, Audit.Status.RUNNING, attempts=2)
    services.audits_sweep(now=later + timedelta(seconds=settings.AUDIT_STALE_AFTER + 1))
    queued.refresh_from_db()
    assert queued.status == "failed" and "stopped responding" in queued.message and len(sent_tasks) == 1


@pytest.fixture
def revoked(monkeypatch):
    """The revocations sent to the workers, recorded instead."""
    sent = []
    monkeypatch.setattr(celery_app.control, "revoke", lambda task_id, **options: sent.append((task_id, options)))
    return sent


def test_a_cancelled_audit_is_final_and_its_task_revoked_once_committed(
        users, stored, sent_tasks, revoked, django_capture_on_commit_callbacks):
    version, probe = stored
    with django_capture_on_commit_callbacks(execute=True):
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe, profile="quick")
    assert sent_tasks == [("tasks.audits.execute_audit", [audit.pk])]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.audit_cancel(audit, user=users["alice"])
    assert revoked == []   # not before the cancel is committed
    for callback in callbacks:
        callback()
    assert revoked == [(f"audit-{audit.pk}", {"terminate": True})]
    audit.refresh_from_db()
    assert (audit.status, audit.message, audit.stage) == ("cancelled", "Cancelled by alice.", "cancelled")
    assert audit.finished and {s["status"] for s in audit.steps} == {"cancelled"}
    with pytest.raises(ValueError):
        services.audit_transition(audit, Audit.Status.RUNNING)
    services.audit_execute(audit.pk)   # its message, delivered anyway: nothing runs
    audit.refresh_from_db()
    assert (audit.status, audit.attempts) == ("cancelled", 0)
    with pytest.raises(ValidationError, match=f"Audit {audit.pk} has already finished \\(cancelled\\)"):
        services.audit_cancel(audit, user=users["alice"])


def test_cancelling_a_finished_audit_is_refused(queued, revoked):
    services.audit_transition(queued, Audit.Status.RUNNING)
    services.audit_transition(queued, Audit.Status.DONE, verdict="pass")
    with pytest.raises(ValidationError) as caught:
        services.audit_cancel(queued)
    assert caught.value.messages == [f"Audit {queued.pk} has already finished (done); only a queued or running "
                                     "audit can be cancelled."]
    queued.refresh_from_db()
    assert (queued.status, queued.verdict) == ("done", "pass") and revoked == []


def test_a_stale_copy_cannot_cancel_an_audit_that_finished_meanwhile(queued):
    stale = Audit.objects.get(pk=queued.pk)
    services.audit_transition(queued, Audit.Status.RUNNING)
    services.audit_fail(queued, "the model crashed")
    with pytest.raises(ValidationError, match="already finished \\(failed\\)"):
        services.audit_cancel(stale)
    queued.refresh_from_db()
    assert (queued.status, queued.message) == ("failed", "the model crashed")


def test_a_running_audit_cancelled_stops_and_stores_nothing(users, stored, monkeypatch, private_media, tmp_path):
    """The cancel comes while the sandboxed child runs the second section: the child is killed and its job
    folder removed at the next progress report, the audit stays cancelled, no report or finding is stored."""
    version, probe = stored
    audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                  probe_set=probe)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("AUDITSVC_SCRATCH", str(scratch))   # where job folders are made
    step = running_services.ProgressWriter.step

    def cancel_when_performance_starts(writer, name, status, fraction):
        if (name, status) == ("performance", "running"):
            services.audit_cancel(Audit.objects.get(pk=writer.audit.pk), user=users["alice"])
        step(writer, name, status, fraction)

    monkeypatch.setattr(running_services.ProgressWriter, "step", cancel_when_performance_starts)
    services.audit_execute(audit.pk)
    audit.refresh_from_db()
    assert (audit.status, audit.attempts, audit.verdict, audit.runs_completed) == ("cancelled", 1, "", 0)
    assert [(s["name"], s["status"]) for s in audit.steps] == [("setup", "ok"), ("summary", "ok"),
                                                                ("performance", "cancelled"), ("report", "cancelled")]
    assert not (audit.report_html or audit.report_pdf or audit.findings_json) and audit.findings.count() == 0
    assert [p.name for p in media_files(private_media) if "/audit/" in p.as_posix()] == []
    assert list(scratch.iterdir()) == []   # the child's job folder went with it
    assert processes_naming(str(scratch)) == []   # and the child


def processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_the_service_tests_run_on_postgresql():
    from django.db import connection

    assert connection.vendor == "postgresql" and connection.settings_dict["HOST"] == "127.0.0.1"
