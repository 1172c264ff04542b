"""Portal views of an audit's progress: the steps on its page, Cancel as a POST with CSRF that says
what it did, the status endpoint for the poller."""

import html

import pytest
from django.test import Client
from django.urls import reverse

from auditsvc.audits import services
from auditsvc.audits.models import Audit

pytestmark = pytest.mark.django_db


@pytest.fixture
def audit(users, stored):
    version, probe = stored
    return services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                 probe_set=probe, profile="quick")


def text(response) -> str:
    return html.unescape(response.content.decode())


def test_a_queued_audit_shows_its_steps_its_place_and_a_cancel_button(client, users, audit):
    client.force_login(users["alice"])
    page = text(client.get(reverse("audit-detail", args=[audit.pk])))
    assert "Set up (sandbox, model, probe set)" in page and "Model summary" in page and "Report files" in page
    assert 'class="step step-queued"' in page
    assert "Next in the queue" in page and "no estimate yet" in page
    assert f'action="{reverse("audit-cancel", args=[audit.pk])}"' in page and "csrfmiddlewaretoken" in page
    status = client.get(reverse("audit-status", args=[audit.pk])).json()
    assert status["profile"] == "quick" and [s["status"] for s in status["steps"]] == ["queued"] * 4


def test_cancel_is_a_post_with_csrf(users, audit):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["alice"])
    url = reverse("audit-cancel", args=[audit.pk])
    assert browser.get(url).status_code == 405
    assert browser.post(url).status_code == 403
    audit.refresh_from_db()
    assert audit.status == "queued"


def test_cancel_says_what_it_did_and_refuses_a_finished_audit(client, users, audit):
    client.force_login(users["alice"])
    url = reverse("audit-cancel", args=[audit.pk])
    done = client.post(url, follow=True)
    assert f"Audit {audit.pk} cancelled." in text(done) and "badge-cancelled" in text(done)
    assert "Cancel audit" not in text(done)   # nothing left to cancel
    again = client.post(url, follow=True)
    assert f"Audit {audit.pk} has already finished (cancelled); only a queued or running audit can be cancelled." \
        in text(again)
    audit.refresh_from_db()
    assert audit.status == Audit.Status.CANCELLED


def test_another_organizations_audit_cannot_be_cancelled(client, users, audit):
    client.force_login(users["bob"])
    assert client.post(reverse("audit-cancel", args=[audit.pk])).status_code == 404
    audit.refresh_from_db()
    assert audit.status == "queued"


def test_the_new_audit_form_offers_the_profiles_with_their_help(client, users, stored):
    client.force_login(users["alice"])
    page = text(client.get(reverse("audit-new")))
    assert '<select name="profile"' in page and "Quick: the model summary, performance, shortcut probes" in page
    version, probe = stored
    response = client.post(reverse("audit-new"), {"model_version": version.pk, "probe_set": probe.pk,
                                                   "profile": "quick", "seed": "0"})
    assert response.status_code == 302
    assert Audit.objects.get().profile == "quick"
