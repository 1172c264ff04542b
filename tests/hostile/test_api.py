"""Hostile input to the REST API: every refusal is a 4xx JSON {"error", "fields"} naming the field
(and the user's file), never a 500 with a traceback; a refused request leaves no row and no file in
media; a token acts for its own organization only."""

from __future__ import annotations

import io
import json
import socket
import zipfile

import pytest
import requests
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from auditsvc.audits import services
from auditsvc.audits.models import ApiToken, Audit, Membership, ModelVersion, ProbeSet
from auditsvc.audits.services import audits as audit_services
from auditsvc.demo.nets import PlainNet
from tests.conftest import write_probe
from tests.service_fixtures import uploads, zip_directory

pytestmark = pytest.mark.django_db


def media_files(media) -> list:
    return sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []


def token_header(user, organization) -> dict:
    _, key = services.api_token_create(user=user, organization=organization, name="ci")
    return {"HTTP_AUTHORIZATION": f"Token {key}"}


@pytest.fixture
def auth(users):
    return token_header(users["alice"], users["acme"])


def refusal(response, status: int, field: str | None, text: str) -> dict:
    """The API's one error shape, with `text` in the field's messages (or the error line)."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "fields"} and isinstance(body["fields"], dict), body
    assert b"Traceback" not in response.content
    messages = " ".join(body["fields"].get(field, [])) if field else body["error"]
    assert text in messages, body
    return body


# --- ids, numbers and text fields (stored objects, no upload) ----------------------------------

FIELD_CASES = [
    ("seed", "1" + "0" * 30, "between 0 and 4294967295"),    # 10**30 used to be a traceback
    ("seed", "4294967296", "between 0 and 4294967295"),
    ("seed", "-1", "between 0 and 4294967295"),
    ("seed", "\u0663", "ASCII digits"),                        # ARABIC-INDIC DIGIT THREE: int() takes it
    ("seed", "\uff17", "ASCII digits"),                        # FULLWIDTH DIGIT SEVEN
    ("seed", "1_000", "ASCII digits"),
    ("seed", "1e3", "ASCII digits"),
    ("seed", "9" * 5000, "between 0 and 4294967295"),          # past Python's int() digit limit
    ("model_version", "\u0663", "not a model version id"),
    ("model_version", "\u00b2", "not a model version id"),     # SUPERSCRIPT TWO: isdigit() but not int()
    ("model_version", "9" * 25, "not a model version id"),     # beyond 64 bits
    ("model_version", "9223372036854775808", "not a model version id"),   # 2**63
    ("model_version", "-4", "not a model version id"),
    ("model_version", "0", "not a model version id"),
    ("probe_set", "1 OR 1=1", "not a probe set id"),
    ("reference_version", "0x10", "not a model version id"),
    ("release_tag", "v" * 201, "at most 200 characters"),
    ("release_tag", "v1\x00rc", "Null characters are not allowed"),
    ("dataset_name", "n" * 201, "at most 200 characters"),
]


@pytest.mark.parametrize("field, value, text", FIELD_CASES, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(FIELD_CASES)])
def test_bad_ids_numbers_and_text_are_refused_on_their_field(client, auth, stored, field, value, text):
    version, probe = stored
    response = client.post(reverse("api-audits"), {"model_version": version.pk, "probe_set": probe.pk,
                                                   field: value}, **auth)
    refusal(response, 400, field, text)
    assert Audit.objects.count() == 0


def test_the_largest_seed_is_accepted(client, auth, stored, django_capture_on_commit_callbacks):
    version, probe = stored
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("api-audits"), {"model_version": version.pk, "probe_set": probe.pk,
                                                       "seed": "4294967295"}, **auth)
    assert response.status_code == 201, response.content
    assert Audit.objects.get().seed == 2**32 - 1 and response.json()["status"] == "queued"


# --- uploads: refused with the user's file name, nothing left behind ---------------------------

def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _meta(package_files, **changes) -> SimpleUploadedFile:
    meta = json.loads(package_files["meta"]) | changes
    return SimpleUploadedFile("model.json", json.dumps(meta).encode())


def _pickled(tmp_path) -> SimpleUploadedFile:
    path = tmp_path / "legacy.pt"
    torch.save(PlainNet(2), path)
    return SimpleUploadedFile("legacy.pt", path.read_bytes())


@pytest.fixture(scope="module")
def horse_probe(tmp_path_factory) -> bytes:
    """Class folders the model does not have: the audit itself is refused after both files were stored."""
    return zip_directory(write_probe(tmp_path_factory.mktemp("horse") / "probe", ["cat", "horse"], per_class=3))


UPLOAD_CASES = {
    # name: (changes to the valid request, status, field, text in the message)
    "not-a-model": (lambda p, t: {"model": SimpleUploadedFile("resnet50-final.pt2", b"hello")},
                    400, "model", "resnet50-final.pt2"),
    "pickled-model": (lambda p, t: {"model": _pickled(t)}, 400, "model", "legacy.pt is a pickled"),
    "unknown-suffix": (lambda p, t: {"model": SimpleUploadedFile("net.caffemodel", b"caffe")}, 400, "model", ".pt2"),
    "onnx-garbage": (lambda p, t: {"model": SimpleUploadedFile("resnet.onnx", b"\x08\x07garbage")},
                     400, "model", "resnet.onnx: not "),
    "empty-model": (lambda p, t: {"model": SimpleUploadedFile("model.pt2", b"")}, 400, "model", "empty"),
    "meta-not-json": (lambda p, t: {"meta": SimpleUploadedFile("model.json", b"{broken")},
                      400, "meta", "not valid JSON"),
    "meta-nested": (lambda p, t: {"meta": SimpleUploadedFile("model.json", b"[" * 100_000 + b"]" * 100_000)},
                    400, "meta", "model.json"),
    "meta-huge-number": (lambda p, t: {"meta": SimpleUploadedFile("model.json", b'{"name": ' + b"7" * 6000 + b"}")},
                         400, "meta", "too many digits"),
    "meta-array": (lambda p, t: {"meta": SimpleUploadedFile("model.json", b"[1, 2]")}, 400, "meta", "JSON object"),
    "meta-nul-in-name": (lambda p, t: {"meta": _meta(p, name="pe\x00ts")}, 400, "meta", "NUL"),
    "meta-long-name": (lambda p, t: {"meta": _meta(p, name="n" * 300)}, 400, "meta", "200"),
    "meta-long-version": (lambda p, t: {"meta": _meta(p, version="1." * 60)}, 400, "meta", "100"),
    "meta-nan": (lambda p, t: {"meta": SimpleUploadedFile("model.json", p["meta"][:-1] + b', "extra": NaN}')},
                 400, "meta", "NaN"),
    "dataset-broken-zip": (lambda p, t: {"dataset": SimpleUploadedFile("holiday-photos.zip", b"PK\x03\x04junk")},
                           400, "dataset", "holiday-photos.zip"),
    "dataset-not-zip": (lambda p, t: {"dataset": SimpleUploadedFile("probe.tar", b"tar")}, 400, "dataset", "probe.tar"),
    "dataset-empty": (lambda p, t: {"dataset": SimpleUploadedFile("probe.zip", b"")}, 400, "dataset", "empty"),
    "dataset-traversal": (lambda p, t: {"dataset": SimpleUploadedFile(
        "probe.zip", _zip({"../../etc/cat/1.png": b"x"}))}, 400, "dataset", "path traversal"),
    "reference-without-meta": (lambda p, t: {"reference": SimpleUploadedFile("old.pt2", p["model"])},
                               400, "reference_meta", "required"),
    "model-without-meta": (lambda p, t: {"meta": None}, 400, "meta", "required"),
}


@pytest.mark.parametrize("case", list(UPLOAD_CASES))
def test_a_refused_upload_names_the_field_and_leaves_nothing(client, auth, package_files, probe_bytes,
                                                             private_media, tmp_path, case):
    change, status, field, text = UPLOAD_CASES[case]
    files = uploads(package_files, probe_bytes) | change(package_files, tmp_path)
    response = client.post(reverse("api-audits"), {k: v for k, v in files.items() if v is not None}, **auth)
    refusal(response, status, field, text)
    assert media_files(private_media) == []
    assert (ModelVersion.objects.count(), ProbeSet.objects.count(), Audit.objects.count()) == (0, 0, 0)


def test_an_audit_refused_after_both_files_were_stored_takes_them_along(client, auth, package_files, horse_probe,
                                                                         private_media):
    response = client.post(reverse("api-audits"), uploads(package_files, horse_probe), **auth)
    refusal(response, 400, "probe_set", "'horse'")
    assert media_files(private_media) == []
    assert (ModelVersion.objects.count(), ProbeSet.objects.count()) == (0, 0)


def test_a_crash_after_the_files_were_stored_answers_json_500_and_leaves_nothing(users, auth, package_files,
                                                                                probe_bytes, private_media,
                                                                                monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(audit_services, "audit_create", crash)   # the last step of audit_create_from_upload
    client = Client(raise_request_exception=False)
    response = client.post(reverse("api-audits"), uploads(package_files, probe_bytes), **auth)
    body = refusal(response, 500, None, "went wrong")
    assert "database went away" not in json.dumps(body)
    assert media_files(private_media) == []
    assert (ModelVersion.objects.count(), ProbeSet.objects.count()) == (0, 0)


@pytest.mark.parametrize("field, limit", [("model", "MAX_MODEL_UPLOAD"), ("dataset", "MAX_DATASET_UPLOAD")])
def test_an_oversized_file_is_413_naming_it(client, auth, package_files, probe_bytes, private_media, settings,
                                             field, limit):
    setattr(settings, limit, 4096)
    files = uploads(package_files, probe_bytes)
    files[field] = SimpleUploadedFile(f"huge-{field}.bin", b"\0" * 50_000)
    refusal(client.post(reverse("api-audits"), files, **auth), 413, field, f"huge-{field}.bin is larger than")
    assert media_files(private_media) == [] and ModelVersion.objects.count() == 0


def test_a_body_past_every_limit_is_refused_unread(client, auth, settings):
    settings.MAX_MODEL_UPLOAD = settings.MAX_DATASET_UPLOAD = 1024
    response = client.post(reverse("api-audits"), {"model": SimpleUploadedFile("m.pt2", b"x")}, **auth,
                           CONTENT_LENGTH=str(10 * 1024**3))
    refusal(response, 413, None, "at most")


def test_model_json_as_a_6_mib_text_field_is_400(client, auth, package_files):
    response = client.post(reverse("api-audits"), {"model": SimpleUploadedFile("m.pt2", package_files["model"]),
                                                   "meta": "x" * (6 * 1024**2)}, **auth)
    refusal(response, 400, None, "larger than the 5 MiB")


def test_a_malformed_multipart_body_is_400(client, auth):
    response = client.generic("POST", reverse("api-audits"), b"--x\r\nnot a part", **auth,
                              content_type="multipart/form-data")
    refusal(response, 400, None, "could not be read")


@pytest.mark.parametrize("method, url, status", [
    ("get", "/api/v1/audits", 405),
    ("delete", "/api/v1/audits/1", 405),
    ("get", "/api/v1/nowhere", 404),
    ("get", "/api/v1/audits/" + "9" * 30, 404),            # beyond 64 bits in the path
    ("get", "/api/v1/model-versions/9223372036854775808/audits", 404),
])
def test_wrong_methods_and_paths_get_json(client, auth, method, url, status):
    response = getattr(client, method)(url, **auth)
    refusal(response, status, None, "")


# --- tokens ------------------------------------------------------------------------------------

@pytest.fixture
def two_organizations(users, stored):
    """Alice owns Acme (with an audit) and Initech; her Initech token must not see Acme."""
    version, probe = stored
    initech = services.organization_create(name="Initech", owner=users["alice"])
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe)
    return initech, audit


def test_a_token_reads_its_own_organization_only(client, users, two_organizations):
    initech, audit = two_organizations
    acme_token, initech_token = token_header(users["alice"], users["acme"]), token_header(users["alice"], initech)
    urls = [reverse("api-audit", args=[audit.pk]), reverse("api-audit-findings", args=[audit.pk]),
            reverse("api-audit-pdf", args=[audit.pk]), reverse("api-model-version-audits", args=[audit.model_version_id])]
    assert client.get(urls[0], **acme_token).status_code == 200
    for url in urls:
        refusal(client.get(url, **initech_token), 404, None, "")
    assert client.get(reverse("api-model-versions"), **initech_token).json() == {"results": []}
    assert len(client.get(reverse("api-model-versions"), **acme_token).json()["results"]) == 1
    created = client.post(reverse("api-audits"), {"model_version": audit.model_version_id,
                                                  "probe_set": audit.probe_set_id}, **initech_token)
    body = refusal(created, 400, "model_version", "no model version")
    assert "no probe set" in body["fields"]["probe_set"][0]
    assert Audit.objects.count() == 1


@pytest.mark.parametrize("header", ["revoked", "left", "inactive", "Token asv_" + "x" * 43, "Basic YWxpY2U6cHc=",
                                    "Token", "Token \u00fc\u00fc\u00fc"])
def test_bad_tokens_get_401(client, users, two_organizations, header):
    initech, audit = two_organizations
    _, key = services.api_token_create(user=users["alice"], organization=initech, name="ci")
    if header == "revoked":
        ApiToken.objects.update(revoked=True)
    elif header == "left":   # alice left Initech: its token stops working
        Membership.objects.filter(user=users["alice"], organization=initech).delete()
    elif header == "inactive":
        type(users["alice"]).objects.filter(pk=users["alice"].pk).update(is_active=False)
    value = f"Token {key}" if header in ("revoked", "left", "inactive") else header
    response = client.get(reverse("api-model-versions"), HTTP_AUTHORIZATION=value)
    refusal(response, 401, None, "API token")


# --- the real server (auditsvc/stack/stack.py: runserver with DEBUG on, so a crash would show its traceback) ----

def _raw_post(stack, path: str, headers: dict, body: bytes = b"") -> tuple[int, bytes]:
    """A request whose Content-Length need not match its body; returns the status and the body read."""
    with socket.create_connection(("127.0.0.1", stack.web_port), timeout=60) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{head}\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


@pytest.mark.integration
def test_the_real_server_refuses_hostile_requests_without_a_traceback(service_stack):
    stack = service_stack
    api, url = stack.api("alice"), stack.url + "/api/v1"
    cases = [
        (api.post, url + "/audits", {"data": {"seed": "1" + "0" * 30, "model_version": "1", "probe_set": "1"}}, 400),
        (api.post, url + "/audits", {"data": {"model_version": "\u00b2", "probe_set": "\u0663"}}, 400),
        (api.post, url + "/audits", {"data": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data"}},
         400),
        (api.post, url + "/audits", {"files": {"model": ("m.pt2", b"x")}, "data": {"meta": "x" * (6 * 2**20)}}, 400),
        (api.post, url + "/audits", {"files": {"model": ("huge.pt2", b"\0" * (65 * 2**20))}}, 413),  # read, not stored
        (api.get, url + "/audits/" + "9" * 30, {}, 404),
        (api.get, url + "/model-versions/%D9%A3/audits", {}, 404),
        (api.delete, url + "/audits", {}, 405),
        (requests.get, url + "/audits/1", {}, 401),
    ]
    for send, target, kwargs, status in cases:
        response = send(target, timeout=120, **kwargs)
        assert response.status_code == status, (target, response.status_code, response.text[:300])
        body = response.json()
        assert set(body) == {"error", "fields"} and "Traceback" not in response.text, body
    assert json.loads(_raw_post(stack, "/api/v1/audits", {
        "Authorization": api.headers["Authorization"], "Content-Type": "multipart/form-data; boundary=x",
        "Content-Length": str(10 * 2**30)})[1])["error"].startswith("The request is 10240 MiB")
    assert "Traceback" not in stack.log("web")


@pytest.mark.integration
def test_the_real_portal_keeps_redirects_on_site_and_ids_strict(service_stack):
    stack = service_stack
    browser = requests.Session()
    browser.get(f"{stack.url}/login/", timeout=30)
    token = browser.cookies["csrftoken"]
    login = browser.post(f"{stack.url}/login/", data={"username": "alice", "password": "alice-password-1",
                                                      "next": "https://elsewhere.example/", "csrfmiddlewaretoken": token},
                         allow_redirects=False, timeout=30)
    assert login.status_code == 302 and login.headers["Location"] == "/audits/"
    token = browser.cookies["csrftoken"]
    switch = browser.post(f"{stack.url}/organization/", data={"organization": "\u00b2", "next": "//elsewhere.example",
                                                              "csrfmiddlewaretoken": token},
                          allow_redirects=False, timeout=30)
    assert switch.status_code == 302 and switch.headers["Location"] == "/audits/"
    for path in ("/audits/compare/?a=%D9%A3&b=1", "/audits/" + "9" * 30 + "/"):
        page = browser.get(stack.url + path, timeout=30)
        assert page.status_code == 404 and "Traceback" not in page.text, path


@pytest.mark.integration
def test_through_the_real_api_a_token_reads_its_own_organization_only(service_stack, package_files, probe_bytes):
    stack = service_stack
    initech_key = stack.manage("bootstrap", "--organization", "Initech", "--username", "alice",
                               "--password", "alice-password-1", "--token")
    acme = stack.api("alice")
    created = acme.post(f"{stack.url}/api/v1/audits", timeout=120, files={
        "model": ("pets.pt2", package_files["model"]), "meta": ("model.json", package_files["meta"]),
        "dataset": ("probe.zip", probe_bytes)})
    assert created.status_code == 201, created.text
    done = stack.wait_until(created.json()["id"], lambda s: s["status"] in ("done", "failed"))
    assert done["status"] == "done", done
    initech = requests.Session()
    initech.headers["Authorization"] = f"Token {initech_key}"
    links = [done["links"]["self"], done["links"]["findings"], done["links"]["report_pdf"],
             f"{stack.url}/api/v1/model-versions/{done['model_version']['id']}/audits"]
    assert all(acme.get(link, timeout=30).status_code == 200 for link in links)
    for link in links:
        response = initech.get(link, timeout=30)
        assert response.status_code == 404 and response.json()["error"], link
    assert initech.get(f"{stack.url}/api/v1/model-versions", timeout=30).json() == {"results": []}
