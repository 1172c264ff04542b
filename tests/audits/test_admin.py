"""The admin shows an audit's progress as a percentage and its waits and run times as durations."""

from datetime import timedelta

import html

import pytest
from django.urls import reverse

from auditsvc.audits.models import Audit

pytestmark = pytest.mark.django_db


def test_progress_and_durations_read_as_a_reviewer_would(client, users, stored):
    users["alice"].is_staff = users["alice"].is_superuser = True
    users["alice"].save()
    client.force_login(users["alice"])
    version, probe = stored
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe,
                                 status=Audit.Status.DONE, progress=1 / 7, steps=[
                                     {"name": "summary", "title": "Model summary", "status": "ok", "started": None,
                                      "seconds": 0.4, "fraction": 1.0}])
    created = audit.created
    Audit.objects.filter(pk=audit.pk).update(started=created + timedelta(seconds=3),
                                             finished=created + timedelta(seconds=3 + 134))
    for url in (reverse("admin:audits_audit_changelist"), reverse("admin:audits_audit_change", args=[audit.pk])):
        page = html.unescape(client.get(url).content.decode())
        assert "14%" in page and "0.14285714285714285" not in page
        assert "3 s" in page and "2 min 14 s" in page
    change = html.unescape(client.get(reverse("admin:audits_audit_change", args=[audit.pk])).content.decode())
    assert "Model summary: ok (under 1 s)" in change
