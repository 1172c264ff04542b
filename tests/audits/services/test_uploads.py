"""Uploads: model versions and probe sets validated before anything is stored; a refused upload leaves
nothing behind; a model that passed its check is not run again."""

import io
import zipfile

import pytest
import torch
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from auditsvc.audits import services
from auditsvc.audits.models import ModelVersion, ProbeSet
from auditsvc.audits.services import uploads as upload_services
from auditsvc.battery import ModelMeta
from auditsvc.demo.nets import PlainNet
from tests.service_fixtures import uploads

pytestmark = pytest.mark.django_db


def media_files(media):
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_a_model_version_is_validated_and_stored(users, stored, private_media):
    version, probe = stored
    assert (version.name, version.version, version.format) == ("pets", "1.0", "torch.export")
    assert len(version.sha256) == 64 and version.meta["classes"] == ["cat", "dog"]
    assert version.file.name.startswith(f"org-{users['acme'].pk}/modelversion/")
    assert (probe.images, probe.classes, probe.attributes) == (12, ["cat", "dog"], ["site"])
    assert len(media_files(private_media)) == 2


def test_a_pickled_model_leaves_nothing_behind(users, package_files, private_media, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(PlainNet(2), path)
    with pytest.raises(ValidationError) as caught:
        services.model_version_create(organization=users["acme"], user=users["alice"],
                                      file=SimpleUploadedFile("model.pt", path.read_bytes()),
                                      meta=SimpleUploadedFile("model.json", package_files["meta"]))
    assert "arbitrary code" in caught.value.message_dict["file"][0]
    assert ModelVersion.objects.count() == 0 and media_files(private_media) == []


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
    assert media_files(private_media) == []


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
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../etc/cron.d/x", b"x")
    with pytest.raises(ValidationError) as caught:
        services.probe_set_create(organization=users["acme"], user=users["alice"], name="evil",
                                  file=SimpleUploadedFile("evil.zip", buffer.getvalue()))
    assert "path traversal" in caught.value.message_dict["file"][0]
    assert ProbeSet.objects.count() == 0 and media_files(private_media) == []


def test_the_same_model_version_twice_is_refused(users, stored, package_files):
    files = uploads(package_files)
    with pytest.raises(ValidationError, match="already registered"):
        services.model_version_create(organization=users["acme"], user=users["alice"], file=files["model"],
                                      meta=files["meta"])


def test_a_model_that_passed_its_check_is_not_run_again(users, package_files, monkeypatch):
    """The check is given model.json as a checked value; the same bytes and model.json are run once per process."""
    checks = []

    def check_model(path, meta):
        checks.append(meta)
        return real_check(path, meta)

    real_check = upload_services.check_model
    monkeypatch.setattr(upload_services, "check_model", check_model)
    monkeypatch.setattr(upload_services, "_PASSED_CHECKS", {})
    for organization in (users["acme"], users["globex"]):
        files = uploads(package_files)
        services.model_version_create(organization=organization, user=users["alice"], file=files["model"],
                                      meta=files["meta"])
    assert ModelVersion.objects.count() == 2
    [meta] = checks
    assert isinstance(meta, ModelMeta)
    assert (meta.name, meta.version, list(meta.classes)) == ("pets", "1.0", ["cat", "dog"])


def test_errors_about_model_json_name_the_users_file(users, package_files):
    for meta, text in ((b"{not json", "detector-meta.json: not valid JSON"),
                       (b'{"name": "x"}', "detector-meta.json: missing required key")):
        with pytest.raises(ValidationError) as caught:
            services.model_version_create(organization=users["acme"], user=users["alice"],
                                          file=SimpleUploadedFile("detector-v2.pt2", package_files["model"]),
                                          meta=SimpleUploadedFile("detector-meta.json", meta))
        assert text in caught.value.message_dict["meta"][0]
    with pytest.raises(ValidationError) as caught:
        services.model_version_create(organization=users["acme"], user=users["alice"],
                                      file=SimpleUploadedFile("detector-v2.pt2", b"not a model"),
                                      meta=SimpleUploadedFile("detector-meta.json", package_files["meta"]))
    assert caught.value.message_dict["file"][0].startswith("detector-v2.pt2 ")
