"""The pipeline API in-process (the queued audit is run by calling the service, as a worker does): create
from uploads, poll, fetch, list; OpenAPI."""

import json

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import get_resolver, reverse

from auditsvc.audits import services
from auditsvc.audits.models import Audit
from auditsvc.demo.nets import PlainNet
from tests.conftest import write_package
from tests.service_fixtures import CLASSES, uploads

pytestmark = pytest.mark.django_db


@pytest.fixture
def auth(users):
    _, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_a_pipeline_audits_a_release(client, auth, package_files, probe_bytes, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post(reverse("api-audits"), {**uploads(package_files, probe_bytes), "seed": "5",
                                                      "release_tag": "v1.0"}, **auth)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "queued" and body["links"]["self"].endswith(f"/api/v1/audits/{body['id']}")
    assert "no worker is configured" in body["stage"]  # no REDIS_URL: the web process ran nothing
    services.audit_execute(body["id"])  # what a worker (or manage.py run_queued_audits) does
    status = client.get(body["links"]["self"], **auth).json()
    assert status["status"] == "done" and status["progress"] == 1.0 and status["verdict"] in ("pass", "warn", "fail")
    findings = json.loads(client.get(status["links"]["findings"], **auth).getvalue())
    assert findings["model"]["name"] == "pets" and findings["environment"]["seed"] == 5
    assert client.get(status["links"]["report_pdf"], **auth).getvalue()[:4] == b"%PDF"
    assert status["links"]["report"] == f"http://testserver/audits/{body['id']}/report/"
    versions = client.get(reverse("api-model-versions"), **auth).json()["results"]
    assert [(v["name"], v["version"], v["release_tag"]) for v in versions] == [("pets", "1.0", "v1.0")]
    audits = client.get(reverse("api-model-version-audits", args=[versions[0]["id"]]), **auth).json()
    assert [a["id"] for a in audits["results"]] == [body["id"]]


def test_a_pipeline_audits_an_onnx_model(client, auth, probe_bytes, tmp_path, django_capture_on_commit_callbacks):
    torch.manual_seed(0)
    model = write_package(tmp_path, PlainNet(2, widths=(4, 8)), CLASSES, fmt="onnx", name="pets-onnx")
    files = {"model": SimpleUploadedFile("model.onnx", model.read_bytes()),
             "meta": SimpleUploadedFile("model.json", model.with_name("model.json").read_bytes()),
             "dataset": SimpleUploadedFile("probe.zip", probe_bytes)}
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post(reverse("api-audits"), files, **auth)
    assert created.status_code == 201, created.content
    services.audit_execute(created.json()["id"])
    status = client.get(created.json()["links"]["self"], **auth).json()
    assert status["status"] == "done"
    findings = json.loads(client.get(status["links"]["findings"], **auth).getvalue())
    assert findings["model"]["format"] == "onnx"
    assert {section["status"] for section in findings["sections"].values()} == {"ok"}
    versions = client.get(reverse("api-model-versions"), **auth).json()["results"]
    assert [(v["name"], v["format"]) for v in versions] == [("pets-onnx", "onnx")]
    with Audit.objects.get(pk=status["id"]).report_html.open() as report:
        assert b"converted from ONNX (opset " in report.read()


def test_a_pipeline_audits_a_keras_model_and_a_lambda_layer_stores_nothing(client, auth, probe_bytes, tmp_path,
                                                                          private_media,
                                                                          django_capture_on_commit_callbacks):
    from tests.keras_models import keras, layers, plain, save_package   # imports Keras: only this test needs it

    path = save_package(tmp_path / "model", plain(classes=len(CLASSES)), CLASSES, name="pets-keras")
    files = {"model": SimpleUploadedFile("model.keras", path.read_bytes()),
             "meta": SimpleUploadedFile("model.json", path.with_name("model.json").read_bytes())}
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post(reverse("api-audits"), {**files, "dataset": SimpleUploadedFile("probe.zip", probe_bytes)},
                              **auth)
    assert created.status_code == 201, created.content
    services.audit_execute(created.json()["id"])
    status = client.get(created.json()["links"]["self"], **auth).json()
    assert status["status"] == "done"
    findings = json.loads(client.get(status["links"]["findings"], **auth).getvalue())
    assert findings["model"]["format"] == "keras" and findings["sections"]["summary"]["status"] == "ok"
    assert [v["format"] for v in client.get(reverse("api-model-versions"), **auth).json()["results"]] == ["keras"]

    inputs = keras.Input((16, 16, 3))
    shifted = layers.Lambda(lambda t: t + 1, name="shift")(inputs)
    lambda_model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(shifted)))
    path = save_package(tmp_path / "lambda", lambda_model, CLASSES, name="pets-lambda")
    stored = sorted(p for p in private_media.rglob("*") if p.is_file())
    refused = client.post(reverse("api-audits"), {
        "model": SimpleUploadedFile("model.keras", path.read_bytes()),
        "dataset": SimpleUploadedFile("probe.zip", probe_bytes),
        "meta": SimpleUploadedFile("model.json", path.with_name("model.json").read_bytes())}, **auth)
    assert refused.status_code == 400
    message = refused.json()["fields"]["model"]
    assert "'shift' is a Lambda layer" in str(message) and "model.onnx" in str(message)
    assert sorted(p for p in private_media.rglob("*") if p.is_file()) == stored
    assert len(client.get(reverse("api-model-versions"), **auth).json()["results"]) == 1


def test_rerunning_a_pipeline_reuses_the_model_version(client, auth, package_files, probe_bytes,
                                                       django_capture_on_commit_callbacks):
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=False):
            assert client.post(reverse("api-audits"), uploads(package_files, probe_bytes), **auth).status_code == 201
    assert len(client.get(reverse("api-model-versions"), **auth).json()["results"]) == 1


def test_bad_input_gets_400_with_the_field(client, auth, package_files):
    missing = client.post(reverse("api-audits"), uploads(package_files), **auth)
    assert missing.status_code == 400 and "dataset" in missing.json()["fields"]
    files = uploads(package_files)
    files["meta"] = b"{broken"
    broken = client.post(reverse("api-audits"), {"model": files["model"], "meta": "{broken"}, **auth)
    assert broken.status_code == 400 and "meta" in broken.json()["fields"]


def test_openapi_describes_every_api_route(client):
    spec = client.get(reverse("api-openapi")).json()
    assert spec["openapi"].startswith("3.") and "token" in spec["components"]["securitySchemes"]
    routes = {"/" + str(p.pattern).replace("<int:pk>", "{id}") for p in get_resolver().url_patterns
              if str(p.pattern).startswith("api/v1/") and "openapi" not in str(p.pattern)}
    assert routes == set(spec["paths"])


def test_a_pipeline_runs_a_quick_audit_and_cancels_it(client, auth, package_files, probe_bytes, settings):
    settings.AUDIT_SECTIONS = None
    created = client.post(reverse("api-audits"), {**uploads(package_files, probe_bytes), "profile": "quick"}, **auth)
    body = created.json()
    assert created.status_code == 201 and body["profile"] == "quick" and body["queue_position"] == 0
    assert [s["name"] for s in body["steps"]] == ["setup", "summary", "performance", "shortcuts", "looking", "report"]
    assert body["remaining"] is None and body["cancellable"]   # no finished audit to estimate from yet
    cancel = body["links"]["cancel"]
    assert client.get(cancel, **auth).status_code == 405
    cancelled = client.post(cancel, **auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert "cancel" not in cancelled.json()["links"] and {s["status"] for s in cancelled.json()["steps"]} == {
        "cancelled"}
    again = client.post(cancel, **auth)
    assert again.status_code == 409 and "already finished (cancelled)" in again.json()["error"]


def test_an_unknown_profile_is_refused(client, auth, package_files, probe_bytes):
    refused = client.post(reverse("api-audits"), {**uploads(package_files, probe_bytes), "profile": "thorough"},
                          **auth)
    assert refused.status_code == 400 and "profile" in refused.json()["fields"]


def test_a_release_gate_asks_for_release_priority(client, auth, stored):
    version, probe = stored
    ids = {"model_version": version.pk, "probe_set": probe.pk}
    queued = client.post(reverse("api-audits"), {**ids, "priority": "scheduled"}, **auth).json()
    assert queued["priority"] == "scheduled" and queued["queue_position"] == 0
    interactive = client.post(reverse("api-audits"), {**ids, "seed": "1"}, **auth).json()
    assert interactive["priority"] == "interactive" and interactive["queue_position"] == 0   # goes first
    again = client.post(reverse("api-audits"), {**ids, "priority": "release"}, **auth)
    assert again.status_code == 200 and again.json()["existing"]   # the same audit, raised to a release gate
    assert (again.json()["id"], again.json()["priority"], again.json()["queue_position"]) == (queued["id"], "release", 0)
    refused = client.post(reverse("api-audits"), {**ids, "priority": "urgent"}, **auth)
    assert refused.status_code == 400 and "priority" in refused.json()["fields"]
