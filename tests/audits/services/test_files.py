"""Stored files in an S3 bucket (an S3-compatible server on loopback, configured as AUDITSVC_S3_* configures
production): uploads go straight to the bucket and a refused one leaves no object there; a worker copies its
inputs out of the bucket into its scratch folder; a run's results are stored unless the run fails; deleting
a model version takes its objects (and its audits') with it once the deletion commits; the portal and the API
stream downloads from the bucket, for members of the organization only."""

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse

from auditsvc.audits import services
from auditsvc.audits.models import Audit, ModelVersion
from auditsvc.audits.services.files import copy_stored, stored_unless_failed
from tests.audits.audit_rows import finished_audit
from tests.service_fixtures import uploads

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("s3_media")]


@pytest.fixture
def bucket_keys(s3_server, s3_media):
    return lambda: s3_server.keys(s3_media)


@pytest.fixture
def reported(stored, tmp_path):
    """A finished audit of the stored model and probe set, with its three result files in the bucket."""
    version, probe = stored
    audit = finished_audit(version, probe)
    results = {}
    for field, name, content in (("report_html", "report.html", b"<!doctype html><p>report</p>"),
                                 ("report_pdf", "report.pdf", b"%PDF-1.7 " + bytes(range(256)) * 64),
                                 ("findings_json", "findings.json", b'{"schema": 1}')):
        results[field] = tmp_path / name
        results[field].write_bytes(content)
    with stored_unless_failed(audit, results):
        audit.save(update_fields=list(results))
    return audit


def test_uploads_are_objects_in_the_bucket_named_as_their_rows(stored, package_files, probe_bytes, s3_server,
                                                                s3_media, bucket_keys, private_media):
    version, probe = stored
    assert bucket_keys() == sorted([version.file.name, probe.file.name])
    assert s3_server.read(s3_media, version.file.name) == package_files["model"]
    assert s3_server.read(s3_media, probe.file.name) == probe_bytes
    assert not private_media.exists()   # nothing on the local disk


def test_an_upload_refused_leaves_no_object_in_the_bucket(users, package_files, bucket_keys):
    """The model passes its checks and is stored, then the probe set of the same request is refused: the
    model's object is deleted with the rolled-back rows."""
    files = uploads(package_files)
    with pytest.raises(ValidationError, match="zip"):
        services.audit_create_from_upload(organization=users["acme"], user=users["alice"], model=files["model"],
                                          meta=files["meta"], dataset=SimpleUploadedFile("probe.zip", b"not a zip"))
    assert bucket_keys() == [] and not ModelVersion.objects.exists()


def test_a_worker_copies_its_inputs_out_of_the_bucket(stored, package_files, probe_bytes, tmp_path):
    version, probe = stored
    assert copy_stored(version.file, tmp_path / "model.pt2").read_bytes() == package_files["model"]
    assert copy_stored(probe.file, tmp_path / "probe.zip").read_bytes() == probe_bytes


def test_results_are_stored_unless_the_run_fails(stored, tmp_path, bucket_keys):
    version, probe = stored
    audit = finished_audit(version, probe)
    report = tmp_path / "report.html"
    report.write_text("<p>report</p>")
    with pytest.raises(RuntimeError):
        with stored_unless_failed(audit, {"report_html": report}):
            assert audit.report_html.name in bucket_keys()
            raise RuntimeError("the row could not be saved")
    assert bucket_keys() == sorted([version.file.name, probe.file.name])


def test_deleting_a_model_version_deletes_its_objects_and_its_audits_once_committed(
        reported, bucket_keys, django_capture_on_commit_callbacks):
    version, probe = reported.model_version, reported.probe_set
    assert len(bucket_keys()) == 5
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            version.delete()
            raise RuntimeError("rolled back")
    assert len(bucket_keys()) == 5
    with django_capture_on_commit_callbacks(execute=True):
        ModelVersion.objects.get(pk=reported.model_version_id).delete()   # its audits go with it
    assert not Audit.objects.exists() and bucket_keys() == [probe.file.name]


def test_downloads_stream_from_the_bucket_to_members_only(client, users, reported):
    pdf = reported.report_pdf.open("rb").read()
    _, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    client.force_login(users["alice"])
    for name, expected, headers in (("audit-pdf", pdf, {}), ("audit-findings", b'{"schema": 1}', {}),
                                    ("api-audit-pdf", pdf, {"Authorization": f"Token {key}"})):
        response = client.get(reverse(name, args=[reported.pk]), headers=headers)
        assert response.status_code == 200 and response.streaming, name
        assert b"".join(response.streaming_content) == expected
        assert int(response["Content-Length"]) == len(expected)
    assert b"<p>report</p>" in client.get(reverse("audit-report", args=[reported.pk])).content
    client.force_login(users["bob"])
    assert client.get(reverse("audit-pdf", args=[reported.pk])).status_code == 404
