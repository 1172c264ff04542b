"""Services: uploads validated before anything is stored; the audit job row's life cycle."""

from datetime import timedelta

import pytest
import torch
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from auditsvc.audits import services
from auditsvc.audits.models import ApiToken, Audit, ModelVersion, ProbeSet
from auditsvc.demo.nets import PlainNet
from tests.service_fixtures import uploads

pytestmark = pytest.mark.django_db


def _files(media):
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_a_model_version_is_validated_and_stored(users, stored, private_media):
    version, probe = stored
    assert (version.name, version.version, version.format) == ("pets", "1.0", "torch.export")
    assert len(version.sha256) == 64 and version.meta["classes"] == ["cat", "dog"]
    assert version.file.name.startswith(f"org-{users['acme'].pk}/modelversion/")
    assert (probe.images, probe.classes, probe.attributes) == (12, ["cat", "dog"], ["site"])
    assert len(_files(private_media)) == 2


def test_a_pickled_model_leaves_nothing_behind(users, package_files, private_media, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(PlainNet(2), path)
    with pytest.raises(ValidationError) as caught:
        services.model_version_create(organization=users["acme"], user=users["alice"],
                                      file=SimpleUploadedFile("model.pt", path.read_bytes()),
                                      meta=SimpleUploadedFile("model.json", package_files["meta"]))
    assert "arbitrary code" in caught.value.message_dict["file"][0]
    assert ModelVersion.objects.count() == 0 and _files(private_media) == []


@pytest.mark.parametrize("meta, field, text", [
    (b"{not json", "meta", "not valid JSON"),
    (b'{"name": "x"}', "meta", "missing required key"),
    (b'{"name": "pets", "version": "1", "classes": ["a", "b", "c"], "input": {"size": [3, 32, 32], '
     b'"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}', "file", "expected (2, 3)"),
])
def test_bad_metadata_is_reported_on_its_field(users, package_files, private_media, meta, field, text):
    with pytest.raises(ValidationError) as caught:
        services.model_version_create(organization=users["acme"], user=users["alice"],
                                      file=SimpleUploadedFile("model.pt2", package_files["model"]),
                                      meta=SimpleUploadedFile("model.json", meta))
    assert text in " ".join(caught.value.message_dict[field])
    assert _files(private_media) == []


def test_oversized_uploads_are_refused(users, package_files, probe_bytes, settings):
    settings.MAX_MODEL_UPLOAD = 100
    files = uploads(package_files)
    with pytest.raises(ValidationError, match="at most"):
        services.model_version_create(organization=users["acme"], user=users["alice"], file=files["model"],
                                      meta=files["meta"])
    settings.MAX_DATASET_UPLOAD = 100
    with pytest.raises(ValidationError, match="at most"):
        services.probe_set_create(organization=users["acme"], user=users["alice"], name="x",
                                  file=SimpleUploadedFile("probe.zip", probe_bytes))


def test_a_bad_zip_is_refused_with_the_reason(users, private_media):
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../etc/cron.d/x", b"x")
    with pytest.raises(ValidationError) as caught:
        services.probe_set_create(organization=users["acme"], user=users["alice"], name="evil",
                                  file=SimpleUploadedFile("evil.zip", buffer.getvalue()))
    assert "path traversal" in caught.value.message_dict["file"][0]
    assert ProbeSet.objects.count() == 0 and _files(private_media) == []


def test_the_same_model_version_twice_is_refused(users, stored, package_files):
    files = uploads(package_files)
    with pytest.raises(ValidationError, match="already registered"):
        services.model_version_create(organization=users["acme"], user=users["alice"], file=files["model"],
                                      meta=files["meta"])


def test_audits_use_one_organization_and_matching_classes(users, stored, django_capture_on_commit_callbacks):
    version, probe = stored
    other_probe = ProbeSet.objects.create(organization=users["globex"], name="x", file="x.zip", sha256="0" * 64,
                                          images=1, classes=["cat", "dog"])
    with pytest.raises(ValidationError, match="same organization"):
        services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                              probe_set=other_probe)
    probe.classes = ["cat", "horse"]
    with pytest.raises(ValidationError, match="horse"):
        services.audit_create(organization=users["acme"], user=users["alice"], model_version=version, probe_set=probe)


def test_an_audit_runs_once_and_a_finished_one_is_left_alone(users, stored, django_capture_on_commit_callbacks):
    version, probe = stored
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe)
    assert len(callbacks) == 1  # enqueued on commit; without REDIS_URL nothing runs it in this process
    audit.refresh_from_db()
    assert audit.status == "queued" and audit.stage == services.NO_WORKER
    services.audit_run(audit.pk)  # the worker's task body
    audit.refresh_from_db()
    assert audit.status == "done" and audit.progress == 1.0 and audit.attempts == 1
    assert audit.report_pdf.name and audit.findings_json.name and audit.verdict in ("pass", "warn", "fail")
    assert audit.findings.count() == len(__import__("json").loads(audit.findings_json.read())["findings"])
    services.audit_run(audit.pk)  # a redelivered message for a finished audit
    audit.refresh_from_db()
    assert audit.attempts == 1


def test_status_changes_only_along_the_life_cycle(users, stored):
    version, probe = stored
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe)
    services.audit_transition(audit, Audit.Status.RUNNING)
    services.audit_fail(audit, "a reason\nover two lines")
    assert audit.message == "a reason over two lines" and audit.finished
    with pytest.raises(ValueError):
        services.audit_transition(audit, Audit.Status.RUNNING)


def test_the_sweeper_requeues_then_fails_silent_audits(users, stored, settings, django_capture_on_commit_callbacks):
    version, probe = stored
    settings.AUDIT_MAX_ATTEMPTS = 2
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe)
    services.audit_transition(audit, Audit.Status.RUNNING, attempts=1, worker="w1")
    later = timezone.now() + timedelta(seconds=settings.AUDIT_STALE_AFTER + 1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.audits_sweep(now=later) == [audit.pk]
    audit.refresh_from_db()
    assert audit.status == "queued" and len(callbacks) == 1
    services.audit_transition(audit, Audit.Status.RUNNING, attempts=2)
    services.audits_sweep(now=later + timedelta(seconds=settings.AUDIT_STALE_AFTER + 1))
    audit.refresh_from_db()
    assert audit.status == "failed" and "stopped responding" in audit.message


def test_api_tokens_are_stored_hashed(users):
    token, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    assert key.startswith("asv_") and key not in token.key_hash and token.key_hash != key
    assert services.api_token_authenticate(key) == token
    assert services.api_token_authenticate(key + "x") is None
    services.api_token_revoke(token)
    assert services.api_token_authenticate(key) is None
    with pytest.raises(ValidationError):
        services.api_token_create(user=users["alice"], organization=users["globex"], name="not mine")
    assert ApiToken.objects.filter(key_hash=key).count() == 0


def test_the_service_tests_run_on_postgresql():
    from django.db import connection

    assert connection.vendor == "postgresql" and connection.settings_dict["HOST"] == "127.0.0.1"
