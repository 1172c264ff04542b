"""Hostile input to the portal and the admin: redirects stay on the site, ids and numbers are parsed
strictly, text fits its column, refused uploads name the user's file and leave nothing in media,
errors are plain pages without a traceback, and the admin cannot change evidence."""

from __future__ import annotations

import html

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from auditsvc.audits import selectors, services
from auditsvc.audits.models import ApiToken, Audit, AuditFinding, ModelVersion, ProbeSet

pytestmark = pytest.mark.django_db

EVIL_NEXT = ["https://elsewhere.example/", "//elsewhere.example/", "https:/elsewhere.example", "/\\elsewhere.example",
             "\\\\elsewhere.example", "javascript:alert(1)", "http://testserver@elsewhere.example/",
             " https://elsewhere.example", "https://testserver.elsewhere.example/"]


def media_files(media) -> list:
    return sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []


def page_text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def alice(client, users):
    client.force_login(users["alice"])
    return client


# --- redirects ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", EVIL_NEXT)
def test_login_never_redirects_off_site(client, users, target):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-1", "next": target})
    assert response.status_code == 302 and response["Location"] == reverse("audit-list"), response["Location"]


def test_login_follows_a_next_on_this_site(client, users):
    response = client.post(reverse("login") + "?next=/models/", {"username": "alice", "password": "alice-password-1"})
    assert response["Location"] == "/models/"


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_the_organization_switch_never_redirects_off_site(alice, users, target):
    response = alice.post(reverse("organization-switch"), {"organization": users["acme"].pk, "next": target})
    assert response.status_code == 302 and response["Location"] == reverse("audit-list")
    assert alice.session["organization"] == users["acme"].pk
    kept = alice.post(reverse("organization-switch"), {"organization": users["acme"].pk, "next": "/probe-sets/"})
    assert kept["Location"] == "/probe-sets/"


@pytest.mark.parametrize("organization", ["\u00b2", "\u0663", "9" * 30, "-1", "", "1 OR 1=1"])
def test_a_malformed_organization_id_changes_nothing(alice, users, organization):
    response = alice.post(reverse("organization-switch"), {"organization": organization})
    assert response.status_code == 302 and "organization" not in alice.session


def test_another_organization_cannot_be_switched_to(alice, users):
    alice.post(reverse("organization-switch"), {"organization": users["globex"].pk})
    assert "organization" not in alice.session


# --- ids and numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["a=\u0663&b=\u0663", "a=" + "9" * 30 + "&b=1", "a=1_0&b=1", "a=-1&b=1",
                                   "audit=%00&audit=x"])
def test_compare_with_bad_ids_is_a_404_that_explains(alice, query):
    response = alice.get(reverse("audit-compare") + "?" + query)
    assert response.status_code == 404 and b"Traceback" not in response.content
    assert "There is no audit with that id that you can see" in page_text(response)
    assert "Compare two audits" in page_text(response)


def test_compare_with_empty_ids_is_the_page_to_choose(alice):
    response = alice.get(reverse("audit-compare") + "?a=&b=")
    assert response.status_code == 200 and "Pick two finished audits" in page_text(response)


@pytest.mark.parametrize("url", ["/audits/" + "9" * 30 + "/", "/audits/9223372036854775808/report.pdf",
                                 "/no/such/page/"])
def test_unknown_pages_are_a_plain_404(alice, url):
    response = alice.get(url)
    assert response.status_code == 404 and "Not found" in page_text(response)


AUDIT_FORM_CASES = [
    ("seed", "1" + "0" * 30, "The seed must be between 0 and 4294967295."),
    ("seed", "4294967296", "The seed must be between 0 and 4294967295."),
    ("seed", "-1", "The seed must be between 0 and 4294967295."),
    ("seed", "\u0663", "is not a whole number in ASCII digits."),
    ("model_version", "\u00b2", "is not a model version id"),
    ("model_version", "9" * 25, "is not a model version id"),
    ("probe_set", "\u0663", "is not a probe set id"),
]


@pytest.mark.parametrize("field, value, text", AUDIT_FORM_CASES)
def test_the_audit_form_refuses_bad_numbers_and_ids(alice, stored, field, value, text):
    version, probe = stored
    response = alice.post(reverse("audit-new"), {"model_version": version.pk, "probe_set": probe.pk, "seed": "0",
                                                 field: value})
    assert response.status_code == 200 and text in page_text(response)
    assert Audit.objects.count() == 0


# --- text that does not fit its column ---------------------------------------------------------

def test_a_long_token_name_is_a_form_error(alice):
    for name, text in (("t" * 201, "at most 200 characters (it has 201)"), ("ci\x00", "Null characters are not allowed")):
        response = alice.post(reverse("token-list"), {"name": name})
        assert response.status_code == 200 and text in page_text(response)
    assert ApiToken.objects.count() == 0


def test_long_names_and_tags_are_form_errors_and_store_nothing(alice, package_files, probe_bytes, private_media):
    response = alice.post(reverse("model-list"), {"file": SimpleUploadedFile("pets.pt2", package_files["model"]),
                                                  "meta": SimpleUploadedFile("model.json", package_files["meta"]),
                                                  "release_tag": "r" * 201})
    assert "at most 200 characters (it has 201)" in page_text(response)
    response = alice.post(reverse("probe-set-list"), {"name": "p" * 201,
                                                      "file": SimpleUploadedFile("probe.zip", probe_bytes)})
    assert "at most 200 characters (it has 201)" in page_text(response)
    assert media_files(private_media) == [] and (ModelVersion.objects.count(), ProbeSet.objects.count()) == (0, 0)


def test_organization_names_past_their_column_are_refused(users):
    with pytest.raises(Exception) as caught:
        services.organization_create(name="o" * 201, owner=users["alice"])
    assert "at most 200" in str(caught.value)


# --- uploads: the user's file is named, nothing is left in media -------------------------------

def test_a_bad_model_upload_names_the_users_file(alice, package_files, private_media):
    response = alice.post(reverse("model-list"), {"file": SimpleUploadedFile("resnet50-final.pt2", b"hello"),
                                                  "meta": SimpleUploadedFile("model.json", package_files["meta"])})
    text = page_text(response)
    assert response.status_code == 200 and "resnet50-final.pt2 is not a torch.export" in text
    assert ">model.pt2 is not" not in text and media_files(private_media) == []


def test_a_bad_probe_set_names_the_users_file(alice, private_media):
    response = alice.post(reverse("probe-set-list"), {"name": "holiday",
                                                      "file": SimpleUploadedFile("photos.zip", b"PK\x03\x04junk")})
    assert "photos.zip" in page_text(response) and "probe.zip" not in page_text(response)
    assert media_files(private_media) == [] and ProbeSet.objects.count() == 0


def test_a_row_that_cannot_be_saved_takes_its_file_along(alice, package_files, private_media, monkeypatch):
    def collide(self, *args, **kwargs):
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(ModelVersion, "save", collide)
    response = alice.post(reverse("model-list"), {"file": SimpleUploadedFile("pets.pt2", package_files["model"]),
                                                  "meta": SimpleUploadedFile("model.json", package_files["meta"])})
    assert response.status_code == 200 and "at the same time" in page_text(response)
    assert media_files(private_media) == []


def test_an_oversized_upload_is_a_413_page_naming_the_file(alice, settings, private_media):
    settings.MAX_MODEL_UPLOAD = settings.MAX_DATASET_UPLOAD = 4096
    response = alice.post(reverse("probe-set-list"), {"name": "big",
                                                      "file": SimpleUploadedFile("big<photos>.zip", b"\0" * 50_000)})
    assert response.status_code == 413 and response["Content-Type"].startswith("text/html")
    assert "big&lt;photos&gt;.zip is larger than the 4096 bytes accepted" in response.content.decode()
    assert media_files(private_media) == [] and ProbeSet.objects.count() == 0


# --- errors without tracebacks -----------------------------------------------------------------

def test_a_crash_is_a_plain_500_page(users, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "audits_for", crash)
    client = Client(raise_request_exception=False)
    client.force_login(users["alice"])
    response = client.get(reverse("audit-list"))
    assert response.status_code == 500 and "went wrong" in page_text(response)
    assert b"secret internals" not in response.content and b"Traceback" not in response.content


# --- the admin: evidence is read-only ----------------------------------------------------------

@pytest.fixture
def staff(client, users, stored):
    users["alice"].is_staff = users["alice"].is_superuser = True
    users["alice"].save()
    client.force_login(users["alice"])
    version, probe = stored
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe, verdict="fail",
                                 report_pdf="org-1/audit/x/report.pdf")
    finding = AuditFinding.objects.create(audit=audit, code="shortcut:brightness", category="shortcut",
                                          severity="fail", title="Relies on brightness", summary="s",
                                          evidence={"flip_rate": 0.4})
    return client, audit, finding


def test_the_admin_shows_audits_and_findings_but_cannot_change_them(staff):
    client, audit, finding = staff
    change = reverse("admin:audits_audit_change", args=[audit.pk])
    page = client.get(change)
    assert page.status_code == 200 and "Relies on brightness" in page_text(page)
    assert 'type="file"' not in page.content.decode() and 'name="verdict"' not in page.content.decode()
    assert client.post(change, {"verdict": "pass", "report_pdf": ""}).status_code == 403
    assert client.get(reverse("admin:audits_audit_add")).status_code == 403
    assert client.post(reverse("admin:audits_audit_delete", args=[audit.pk]), {"post": "yes"}).status_code == 403
    finding_change = reverse("admin:audits_auditfinding_change", args=[finding.pk])
    assert client.get(finding_change).status_code == 200
    assert client.post(finding_change, {"severity": "info", "evidence": "{}"}).status_code == 403
    finding_delete = reverse("admin:audits_auditfinding_delete", args=[finding.pk])
    assert client.post(finding_delete, {"post": "yes"}).status_code == 403
    audit.refresh_from_db()
    finding.refresh_from_db()
    assert (audit.verdict, audit.report_pdf.name, finding.severity, finding.evidence) == (
        "fail", "org-1/audit/x/report.pdf", "fail", {"flip_rate": 0.4})


def test_the_admin_cannot_change_a_model_versions_file_or_hash(staff):
    client, audit, _ = staff
    version = audit.model_version
    change = reverse("admin:audits_modelversion_change", args=[version.pk])
    page = client.get(change).content.decode()
    assert 'type="file"' not in page and 'name="sha256"' not in page and 'name="release_tag"' in page
    client.post(change, {"release_tag": "relabelled", "sha256": "0" * 64, "name": "other", "file": ""})
    version.refresh_from_db()
    assert version.release_tag == "relabelled" and version.sha256 != "0" * 64 and version.name == "pets"
    assert client.get(reverse("admin:audits_modelversion_add")).status_code == 403
    assert client.get(reverse("admin:audits_probeset_add")).status_code == 403
    probe_page = client.get(reverse("admin:audits_probeset_change", args=[audit.probe_set_id])).content.decode()
    assert 'type="file"' not in probe_page and 'name="sha256"' not in probe_page
