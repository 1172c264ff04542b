"""The report read in the portal (views.audit_read): the stored report, whole, with the portal's header first
in its body, under the report's strict policy; the report alone keeps it too, and no page frames either."""

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
    body = html[html.index("<body>") + len("<body>"):]
    assert body.index('<header class="site">') < body.index('<div class="report">')
    assert ">Switch</button>" in body and f'href="{reverse("audit-pdf", args=[done_audit.pk])}"' in body
    report = done_audit.report_html.open("rb").read().decode()
    at, added = report.index("<body>") + len("<body>"), len(html) - len(report)
    assert html[:at] + html[at + added:] == report   # the report itself, whole and unchanged

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


def test_the_header_goes_first_in_the_body_whatever_the_body_tag_holds():
    assert views._first_in_body(b'<html><BODY class="x">text</BODY>', b"<h>") == b'<html><BODY class="x"><h>text</BODY>'
    assert views._first_in_body(b"<bodyguard><body>text", b"<h>") == b"<bodyguard><body><h>text"
    assert views._first_in_body(b"text", b"<h>") == b"<h>text"
