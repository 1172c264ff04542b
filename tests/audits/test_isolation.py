"""A member of another organization gets 404 for everything of the first, and sees none of its data,
while their own objects are shown to them; anonymous users get a login redirect or 401; CSRF is
enforced on portal forms."""

import pytest
from django.test import Client
from django.urls import reverse

from auditsvc.audits import services
from auditsvc.audits.models import Audit, ModelVersion, ProbeSet, Schedule

pytestmark = pytest.mark.django_db
ACME_NAMES = ("pets", "pets probe")           # what Acme's audit shows: its model and probe set
GLOBEX_NAMES = ("globex-model", "globex probe")


@pytest.fixture
def globex_audit(users):
    """Bob's own objects in Globex (rows only: the pages that show them read no files)."""
    version = ModelVersion.objects.create(organization=users["globex"], name=GLOBEX_NAMES[0], version="2.0",
                                          meta={"classes": ["cat", "dog"]}, format="torch.export", sha256="0" * 64,
                                          file="globex/model.pt2", uploaded_by=users["bob"])
    probe = ProbeSet.objects.create(organization=users["globex"], name=GLOBEX_NAMES[1], sha256="1" * 64, images=4,
                                    classes=["cat", "dog"], file="globex/probe.zip", uploaded_by=users["bob"])
    services.schedule_create(organization=users["globex"], user=users["bob"], model_version=version,
                             probe_set=probe, every_hours=24)
    return Audit.objects.create(organization=users["globex"], model_version=version, probe_set=probe,
                                requested_by=users["bob"])


def portal_urls(audit):
    return [reverse(name, args=[audit.pk]) for name in
            ("audit-detail", "audit-status", "audit-read", "audit-report", "audit-pdf", "audit-findings")] + [
        reverse("audit-compare") + f"?a={audit.pk}&b={audit.pk}"]


def api_urls(audit):
    return [reverse("api-audit", args=[audit.pk]), reverse("api-audit-findings", args=[audit.pk]),
            reverse("api-audit-pdf", args=[audit.pk]),
            reverse("api-model-version-audits", args=[audit.model_version_id])]


def shows(response, names) -> bool:
    body = response.content.decode()
    return all(name in body for name in names)


def shows_none(response, names) -> bool:
    body = response.content.decode()
    return not any(name in body for name in names)


def test_the_owner_sees_everything(client, users, done_audit):
    client.force_login(users["alice"])
    for url in portal_urls(done_audit):
        assert client.get(url).status_code == 200, url
    assert shows(client.get(portal_urls(done_audit)[0]), ACME_NAMES)
    for view in ("audit-report", "audit-read"):
        report = client.get(reverse(view, args=[done_audit.pk]))
        assert "default-src 'none'" in report["Content-Security-Policy"], view
    assert client.get(reverse("audit-pdf", args=[done_audit.pk])).getvalue()[:4] == b"%PDF"


def test_another_organization_gets_404_and_none_of_its_data_on_the_portal(client, users, done_audit, globex_audit):
    client.force_login(users["bob"])
    for url in portal_urls(done_audit):
        response = client.get(url)
        assert response.status_code == 404 and shows_none(response, ACME_NAMES), url
    own = client.get(reverse("audit-detail", args=[globex_audit.pk]))
    assert own.status_code == 200 and shows(own, GLOBEX_NAMES)
    assert client.get(reverse("audit-status", args=[globex_audit.pk])).json()["model_version"]["name"] == "globex-model"
    mixed = client.get(reverse("audit-compare") + f"?a={done_audit.pk}&b={globex_audit.pk}")
    assert mixed.status_code == 404 and shows_none(mixed, ACME_NAMES)
    for page in ("audit-list", "model-list", "probe-set-list", "schedule-list", "audit-new"):
        response = client.get(reverse(page))
        assert response.status_code == 200 and shows_none(response, ACME_NAMES), page
        assert GLOBEX_NAMES[0] in response.content.decode() or page == "probe-set-list", page
    assert GLOBEX_NAMES[1] in client.get(reverse("probe-set-list")).content.decode()


def test_another_organization_cannot_act_on_the_first_ones_objects(client, users, done_audit, globex_audit):
    acme_schedule = services.schedule_create(organization=users["acme"], user=users["alice"],
                                             model_version=done_audit.model_version, probe_set=done_audit.probe_set,
                                             every_hours=24)
    client.force_login(users["bob"])
    for action in ("delete", "disable", "run"):
        response = client.post(reverse("schedule-action", args=[acme_schedule.pk]), {"action": action})
        assert response.status_code == 404 and shows_none(response, ACME_NAMES), action
    assert Schedule.objects.get(pk=acme_schedule.pk).enabled and Audit.objects.count() == 2
    refused = client.post(reverse("audit-new"), {"model_version": done_audit.model_version_id,
                                                 "probe_set": done_audit.probe_set_id, "seed": 0})
    assert refused.status_code == 200 and "no model version" in refused.content.decode()
    assert shows_none(refused, ACME_NAMES) and Audit.objects.count() == 2   # the form refuses foreign objects
    started = client.post(reverse("audit-new"), {"model_version": globex_audit.model_version_id,
                                                 "probe_set": globex_audit.probe_set_id, "seed": 1})
    assert started.status_code == 302 and Audit.objects.filter(organization=users["globex"]).count() == 2


def test_another_organizations_token_gets_404_on_the_api(client, users, done_audit, globex_audit):
    _, key = services.api_token_create(user=users["bob"], organization=users["globex"], name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    for url in api_urls(done_audit):
        response = client.get(url, **auth)
        assert response.status_code == 404 and shows_none(response, ACME_NAMES), url
    own = client.get(reverse("api-audit", args=[globex_audit.pk]), **auth)
    assert own.status_code == 200 and own.json()["model_version"]["name"] == "globex-model"
    listing = client.get(reverse("api-model-versions"), **auth).json()
    assert [v["name"] for v in listing["results"]] == ["globex-model"]
    created = client.post(reverse("api-audits"), {"model_version": done_audit.model_version_id,
                                                  "probe_set": done_audit.probe_set_id}, **auth)
    assert created.status_code == 400 and {"model_version", "probe_set"} <= set(created.json()["fields"])
    assert shows_none(created, ACME_NAMES) and Audit.objects.count() == 2


def test_anonymous_users_are_sent_to_log_in_or_get_401(client, done_audit):
    for url in portal_urls(done_audit):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    for url in api_urls(done_audit):
        response = client.get(url)
        assert response.status_code == 401 and response.json()["error"], url
        assert shows_none(response, ACME_NAMES)
    assert client.get(api_urls(done_audit)[0], HTTP_AUTHORIZATION="Token asv_wrong").status_code == 401


def test_portal_forms_need_the_csrf_token(users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    assert client.post(reverse("token-list"), {"name": "x"}).status_code == 403
    page = client.get(reverse("token-list"))
    token = page.cookies["csrftoken"].value
    assert client.post(reverse("token-list"), {"name": "x", "csrfmiddlewaretoken": token}).status_code == 302
