"""The report read in the portal (views.audit_read): the portal's header, then the stored report, whole, under
the report's strict policy; the report alone keeps it too, and no page frames either."""

import re

import pytest
from django.urls import reverse

from auditsvc.audits import services, views

pytestmark = pytest.mark.django_db


def test_the_report_reads_as_a_portal_page_under_the_reports_policy(client, users, done_audit):
    services.organization_create(name="Second", owner=users["alice"])   # the header offers a switch
    client.force_login(users["alice"])
    response = client.get(reverse("audit-read", args=[done_audit.pk]))
    html = response.content.decode()
    policy = response["Content-Security-Policy"]
    assert policy == views.READ_POLICY
    assert "default-src 'none'" in policy and "form-action 'self'" in policy and "base-uri 'none'" in policy
    assert "script-src" not in policy and "<script" not in html and "onchange" not in html
    report = done_audit.report_html.open("rb").read().decode()
    top = html[:len(html) - len(report)]
    assert html == top + report   # the report itself, whole and unchanged, after the portal's part
    assert top.lstrip().startswith("<!DOCTYPE html>") and top.rstrip().endswith("</nav>")
    assert '<header class="site">' in top and top.count("<form") == top.count("</form>") == 2
    assert ">Switch</button>" in top and f'href="{reverse("audit-pdf", args=[done_audit.pk])}"' in top
    assert " id=" not in "".join(re.findall(r"<form[^>]*>", top))   # nothing in the report can name them

    detail = client.get(reverse("audit-detail", args=[done_audit.pk])).content.decode()
    reason = re.search(r'<p class="reason">(.+?)</p>', report).group(1)
    assert f'<p class="reason" id="verdict-reason">{reason}</p>' in detail   # the page says what the report says
    assert 'onchange="this.form.submit()"' in detail


def test_the_report_alone_may_post_nothing_and_no_page_may_frame_it(client, users, done_audit):
    client.force_login(users["alice"])
    for name in ("audit-report", "audit-read"):
        response = client.get(reverse(name, args=[done_audit.pk]))
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"] and response["X-Frame-Options"] == "DENY"
    assert "form-action 'none'" in client.get(reverse("audit-report", args=[done_audit.pk]))["Content-Security-Policy"]
