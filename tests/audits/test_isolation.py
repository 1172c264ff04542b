"""A member of another organization gets 404 for everything of the first; anonymous users get a login
redirect or 401; CSRF is enforced on portal forms."""

import pytest
from django.test import Client
from django.urls import reverse

from auditsvc.audits import services
from auditsvc.audits.models import Audit

pytestmark = pytest.mark.django_db


@pytest.fixture
def done_audit(users, stored, django_capture_on_commit_callbacks):
    version, probe = stored
    with django_capture_on_commit_callbacks(execute=True):
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe)
    services.audit_run(audit.pk)
    audit.refresh_from_db()
    assert audit.status == Audit.Status.DONE
    return audit


def portal_urls(audit):
    return [reverse(name, args=[audit.pk]) for name in
            ("audit-detail", "audit-status", "audit-report", "audit-pdf", "audit-findings")] + [
        reverse("audit-compare") + f"?a={audit.pk}&b={audit.pk}"]


def api_urls(audit):
    return [reverse("api-audit", args=[audit.pk]), reverse("api-audit-findings", args=[audit.pk]),
            reverse("api-audit-pdf", args=[audit.pk]),
            reverse("api-model-version-audits", args=[audit.model_version_id])]


def test_the_owner_sees_everything(client, users, done_audit):
    client.force_login(users["alice"])
    for url in portal_urls(done_audit):
        assert client.get(url).status_code == 200, url
    report = client.get(reverse("audit-report", args=[done_audit.pk]))
    assert "default-src 'none'" in report["Content-Security-Policy"]
    assert client.get(reverse("audit-pdf", args=[done_audit.pk])).getvalue()[:4] == b"%PDF"


def test_another_organization_gets_404_everywhere(client, users, done_audit):
    client.force_login(users["bob"])
    for url in portal_urls(done_audit):
        assert client.get(url).status_code == 404, url
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"],
                                        model_version=done_audit.model_version, probe_set=done_audit.probe_set,
                                        every_hours=24)
    assert client.post(reverse("schedule-action", args=[schedule.pk]), {"action": "delete"}).status_code == 404
    for page in ("audit-list", "model-list", "probe-set-list", "schedule-list"):
        body = client.get(reverse(page)).content.decode()
        assert "pets" not in body, page
    start = client.post(reverse("audit-new"), {"model_version": done_audit.model_version_id,
                                               "probe_set": done_audit.probe_set_id, "seed": 0})
    assert start.status_code == 200 and Audit.objects.count() == 1  # the form refuses foreign objects


def test_another_organizations_token_gets_404_on_the_api(client, users, done_audit):
    _, key = services.api_token_create(user=users["bob"], organization=users["globex"], name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    for url in api_urls(done_audit):
        assert client.get(url, **auth).status_code == 404, url
    listing = client.get(reverse("api-model-versions"), **auth).json()
    assert listing == {"results": []}
    created = client.post(reverse("api-audits"), {"model_version": done_audit.model_version_id,
                                                  "probe_set": done_audit.probe_set_id}, **auth)
    assert created.status_code == 400 and "model_version" in created.json()["fields"]


def test_anonymous_users_are_sent_to_log_in_or_get_401(client, done_audit):
    for url in portal_urls(done_audit):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    for url in api_urls(done_audit):
        response = client.get(url)
        assert response.status_code == 401 and response.json()["error"], url
    assert client.get(api_urls(done_audit)[0], HTTP_AUTHORIZATION="Token asv_wrong").status_code == 401


def test_portal_forms_need_the_csrf_token(users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    assert client.post(reverse("token-list"), {"name": "x"}).status_code == 403
    page = client.get(reverse("token-list"))
    token = page.cookies["csrftoken"].value
    assert client.post(reverse("token-list"), {"name": "x", "csrfmiddlewaretoken": token}).status_code == 200
