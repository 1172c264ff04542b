"""Crafted model archives at upload and in the worker: refused in one line, nothing stored, and the
payload never runs (not in the web process, not in the worker)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile

from auditsvc.audits import services
from auditsvc.audits.models import Audit, ModelVersion
from tests.hostile.test_model_files import pickled_constant, pickled_sample_inputs, pickled_weight

pytestmark = pytest.mark.django_db
CRAFTED = {"pickled weight": pickled_weight, "pickled constant": pickled_constant,
           "pickled sample inputs": pickled_sample_inputs}


@pytest.fixture
def good_model(tmp_path, package_files):
    path = tmp_path / "good" / "model.pt2"
    path.parent.mkdir()
    path.write_bytes(package_files["model"])
    return path


@pytest.mark.parametrize("case", list(CRAFTED))
def test_an_upload_of_a_crafted_archive_is_refused(case, users, good_model, package_files, private_media, tmp_path):
    marker = tmp_path / "pwned"
    crafted = CRAFTED[case](good_model, tmp_path / "model.pt2", marker)
    with pytest.raises(ValidationError) as caught:
        services.model_version_create(organization=users["acme"], user=users["alice"],
                                      file=SimpleUploadedFile("model.pt2", crafted.read_bytes()),
                                      meta=SimpleUploadedFile("model.json", package_files["meta"]))
    [message] = caught.value.message_dict["file"]
    assert "pickle" in message and "\n" not in message
    assert not marker.exists() and ModelVersion.objects.count() == 0
    assert not any(p.is_file() for p in private_media.rglob("*"))


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_archive_already_stored_fails_its_audit_in_the_worker(case, users, stored, good_model, tmp_path):
    """A model stored before these checks existed (or put there behind the service's back)."""
    version, probe = stored
    marker = tmp_path / "pwned"
    crafted = CRAFTED[case](good_model, tmp_path / "model.pt2", marker)
    version.file.save("model.pt2", ContentFile(crafted.read_bytes()), save=True)
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe)
    services.audit_execute(audit.pk)
    audit.refresh_from_db()
    assert audit.status == "failed" and "pickle" in audit.message, audit.message
    assert not marker.exists() and not audit.report_pdf
