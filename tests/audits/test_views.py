"""Portal pages in-process (Django's test client): comparing any two audits (and the page that explains a
bad choice), release tags, no repeated actions (post/redirect/get, the identical audit, confirmation
steps), model and probe set pages, forms that guide; the report read in the portal (views.audit_read): the
portal's header, then the stored report, whole, under the report's strict policy; the report alone keeps it
too, and no page frames either. An audit's progress: its steps on its page, Cancel as a POST with CSRF that
says what it did, the status endpoint for the poller, the profile on the new-audit form."""

import html
import re

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from auditsvc.audits import services, views
from auditsvc.audits.models import ApiToken, Audit, Schedule
from tests.audits.audit_rows import another_version, finding, finished_audit

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client, users):
    client.force_login(users["alice"])
    return client


@pytest.fixture
def two_versions(stored):
    """A baseline (pets 1.0, release v1.0, fail) and a candidate (pets 2.0, release v2.0-rc1, pass), both done."""
    version, probe = stored
    version.release_tag = "v1.0"
    version.save()
    candidate = another_version(version, "2.0", release_tag="v2.0-rc1")
    baseline = finished_audit(version, probe, verdict="fail", findings=[finding("shortcut.site", "fail")])
    better = finished_audit(candidate, probe, verdict="pass", findings=[finding("calibration.over", "info")])
    return baseline, better


def text(response) -> str:
    """The page's visible text, roughly: tags and the style sheet dropped, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>|<script>.*?</script>", "", response.content.decode(), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def flashed(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def compare_url(*ids) -> str:
    return reverse("audit-compare") + "?" + "&".join(f"audit={i}" for i in ids)


# --- comparing ---------------------------------------------------------------------------------

def test_two_audits_of_different_versions_are_compared(alice, two_versions):
    baseline, better = two_versions
    page = alice.get(compare_url(better.pk, baseline.pk))
    assert page.status_code == 200
    shown = text(page)
    assert f"Compare audit #{baseline.pk} with #{better.pk}" in shown
    assert "Verdict fail" in shown and "Verdict pass" in shown
    assert "Title of calibration.over" in shown.split("Resolved findings")[0].split("New findings")[1]
    assert "Title of shortcut.site" in shown.split("Resolved findings")[1].split("Unchanged findings")[0]
    differs = re.findall(r'<tr class="differs" data-differs="yes">\s*<th scope="row">([^<]+)',
                         page.content.decode())
    assert [label.strip() for label in differs] == ["Version", "Release tag", "sha256", "Format"]
    assert "v2.0-rc1" in shown and "v1.0" in shown
    assert alice.get(reverse("audit-compare") + f"?a={baseline.pk}&b={better.pk}").status_code == 200  # old links


@pytest.mark.parametrize("query, says", [
    ("", "Pick two finished audits"),
    ("?audit={a}", "Choose exactly two audits to compare; 1 was chosen."),
    ("?audit={a}&audit={a}", "was chosen twice"),
    ("?audit={a}&audit={queued}", "is still queued: compare it once it is done"),
])
def test_a_bare_or_bad_compare_url_explains_with_a_picker(alice, two_versions, users, query, says):
    baseline, better = two_versions
    queued = services.audit_create(organization=users["acme"], user=users["alice"],
                                   model_version=baseline.model_version, probe_set=baseline.probe_set, seed=3)
    page = alice.get(reverse("audit-compare") + query.format(a=baseline.pk, queued=queued.pk))
    assert page.status_code == 200 and says in text(page)
    body = page.content.decode()
    assert f'name="audit" value="{better.pk}"' in body and f'name="audit" value="{baseline.pk}"' in body
    assert f'value="{queued.pk}"' not in body   # only finished audits are offered
    assert re.search(r'href="/audits/compare/"[^>]*>Compare</a>', body)   # and the navigation leads here


@pytest.mark.parametrize("query", ["?audit=999999&audit={a}", "?audit=abc&audit={a}", "?a=x&b={a}"])
def test_an_unknown_audit_gets_a_404_that_explains(alice, two_versions, query):
    baseline, _ = two_versions
    page = alice.get(reverse("audit-compare") + query.format(a=baseline.pk))
    assert page.status_code == 404
    assert "that you can see: choose two from the list" in text(page) and "Compare selected" in text(page)


def test_another_organizations_audits_cannot_be_compared(client, users, two_versions):
    baseline, better = two_versions
    client.force_login(users["bob"])
    page = client.get(compare_url(baseline.pk, better.pk))
    assert page.status_code == 404
    shown = text(page)
    assert "pets" not in shown and "shortcut.site" not in shown and "v1.0" not in shown
    assert "There is no finished audit to compare yet in Globex" in shown


def test_the_audit_page_offers_other_finished_audits_to_compare_with(alice, two_versions):
    baseline, better = two_versions
    page = alice.get(reverse("audit-detail", args=[baseline.pk])).content.decode()
    assert f'<option value="{better.pk}">#{better.pk} · pets 2.0 (v2.0-rc1)' in page
    assert 'id="release-tag" title="release tag">release v1.0</span>' in page
    assert f'href="/models/{baseline.model_version_id}/"' in page
    assert f'href="/probe-sets/{baseline.probe_set_id}/"' in page


# --- the report read in the portal -------------------------------------------------------------

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


# --- the audit list ----------------------------------------------------------------------------

def test_the_audit_list_shows_release_tags_picks_audits_and_filters(alice, two_versions, users):
    baseline, better = two_versions
    queued = services.audit_create(organization=users["acme"], user=users["alice"],
                                   model_version=better.model_version, probe_set=better.probe_set, seed=4)
    page = alice.get(reverse("audit-list"))
    body = page.content.decode()
    assert body.count('<span class="tag" title="release tag">v2.0-rc1</span>') == 2
    assert f'name="audit" value="{baseline.pk}"' in body and f'name="audit" value="{queued.pk}"' not in body
    assert 'id="compare-selected"' in body
    filtered = alice.get(reverse("audit-list"), {"release_tag": "v2.0-rc1", "status": "done"}).content.decode()
    rows = re.findall(r'<a href="/audits/(\d+)/">\d+</a>', filtered)
    assert rows == [str(better.pk)]
    nothing = alice.get(reverse("audit-list"), {"verdict": "warn"})
    assert "No audit matches these filters" in text(nothing)
    invalid = alice.get(reverse("audit-list"), {"release_tag": "no-such-tag"})
    assert invalid.status_code == 200 and "Select a valid choice" in text(invalid)
    assert len(re.findall(r'<a href="/audits/(\d+)/">\d+</a>', invalid.content.decode())) == 3   # not applied


# --- starting an audit -------------------------------------------------------------------------

def test_the_new_audit_form_guides(alice, stored):
    version, probe = stored
    version.release_tag = "v1.0"
    version.save()
    body = alice.get(reverse("audit-new")).content.decode()
    assert "pets 1.0 · release v1.0</option>" in body
    assert f'<option value="{probe.pk}" selected>' in body   # the only probe set is chosen already
    for words in ("so that the report sets this model", "the same seed on the same inputs gives the same report",
                  "class folders must be among the model&#39;s classes"):
        assert words in body
    refused = alice.post(reverse("audit-new"), {"model_version": version.pk, "probe_set": probe.pk,
                                                "reference": version.pk, "seed": "5"})
    assert "cannot be its own reference" in text(refused) and Audit.objects.count() == 0
    kept = refused.content.decode()
    assert 'name="seed" value="5"' in kept and f'<option value="{version.pk}" selected>' in kept


def test_starting_an_identical_audit_shows_the_queued_one(alice, stored):
    version, probe = stored
    form = {"model_version": version.pk, "probe_set": probe.pk, "seed": "0"}
    first = alice.post(reverse("audit-new"), form)
    audit = Audit.objects.get()
    assert first.status_code == 302 and first["Location"] == reverse("audit-detail", args=[audit.pk])
    again = alice.post(reverse("audit-new"), form, follow=True)   # Back, and "Start audit" once more
    assert again.redirect_chain[-1][0] == reverse("audit-detail", args=[audit.pk])
    assert "An identical audit is already queued: showing it." in text(again)
    assert Audit.objects.count() == 1
    alice.post(reverse("audit-new"), form | {"seed": "1"})
    assert Audit.objects.count() == 2   # another seed is another audit


# --- tokens and schedules: once, and only when confirmed ---------------------------------------

def test_a_new_token_key_is_shown_once_and_a_reload_creates_nothing(alice, users):
    created = alice.post(reverse("token-list"), {"name": "release pipeline"})
    assert created.status_code == 302 and created["Location"] == reverse("token-list")
    shown = alice.get(reverse("token-list"))
    key = re.search(r'id="new-key"[^>]*>(asv_[^<]+)<', shown.content.decode()).group(1)
    assert services.api_token_authenticate(key).name == "release pipeline"
    reloaded = alice.get(reverse("token-list"))
    assert key not in reloaded.content.decode() and 'id="new-key"' not in reloaded.content.decode()
    assert ApiToken.objects.count() == 1


def test_revoking_a_token_asks_then_confirms_and_keeps_it_listed(alice, users):
    token, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    url = reverse("token-revoke", args=[token.pk])
    asked = alice.get(url)
    assert "Revoke the token “ci”" in text(asked) and 'id="confirm-button"' in asked.content.decode()
    assert services.api_token_authenticate(key) is not None   # asking changed nothing
    done = alice.post(url, follow=True)
    assert "Token “ci” revoked" in text(done)
    assert services.api_token_authenticate(key) is None
    row = re.search(r'<tr class="revoked">(.*?)</tr>', done.content.decode(), flags=re.S).group(1)
    token.refresh_from_db()
    assert "ci" in row and "revoked" in row and token.revoked_at.strftime("%Y-%m-%d %H:%M") in row
    assert "revoke…" not in row


def test_deleting_a_schedule_asks_then_confirms(alice, users, stored):
    version, probe = stored
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                        probe_set=probe, every_hours=24)
    old_form = alice.post(reverse("schedule-action", args=[schedule.pk]), {"action": "delete"})
    assert old_form["Location"] == reverse("schedule-delete", args=[schedule.pk]) and Schedule.objects.count() == 1
    asked = alice.get(reverse("schedule-delete", args=[schedule.pk]))
    assert "Delete the schedule" in text(asked) and Schedule.objects.count() == 1
    done = alice.post(reverse("schedule-delete", args=[schedule.pk]), follow=True)
    assert "Schedule deleted" in text(done) and Schedule.objects.count() == 0


def test_another_organizations_token_and_schedule_are_not_found(client, users, stored):
    version, probe = stored
    token, _ = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    schedule = services.schedule_create(organization=users["acme"], user=users["alice"], model_version=version,
                                        probe_set=probe, every_hours=24)
    client.force_login(users["bob"])
    for url in (reverse("token-revoke", args=[token.pk]), reverse("schedule-delete", args=[schedule.pk])):
        assert client.get(url).status_code == 404 and client.post(url).status_code == 404
    assert ApiToken.objects.get().revoked is False and Schedule.objects.count() == 1


# --- model and probe set pages -----------------------------------------------------------------

def test_the_model_page_lists_every_version_with_its_audits(alice, two_versions):
    baseline, better = two_versions
    page = alice.get(reverse("model-detail", args=[baseline.model_version_id]))
    body = page.content.decode()
    assert "Model pets" in text(page)
    versions = re.findall(r'<section class="card" id="version-(\d+)"', body)
    assert versions == [str(better.model_version_id), str(baseline.model_version_id)]
    assert f'href="/audits/{baseline.pk}/"' in body and f'href="/audits/{better.pk}/"' in body
    assert re.findall(r'latest-verdict">(\w+)<', body) == ["pass", "fail"]
    assert f'class="compare-previous" href="/audits/compare/?audit={baseline.pk}&amp;audit={better.pk}"' in body
    assert 'v2.0-rc1' in body and "torchscript" in body
    assert 'href="/models/%d/"' % baseline.model_version_id in alice.get(reverse("model-list")).content.decode()


def test_the_probe_set_page_lists_classes_images_and_audits(alice, two_versions):
    baseline, better = two_versions
    page = alice.get(reverse("probe-set-detail", args=[baseline.probe_set_id]))
    shown = text(page)
    assert "Class Images cat 6 dog 6" in shown and "site" in shown
    assert f"#{baseline.pk}" in shown and f"#{better.pk}" in shown
    assert 'href="/probe-sets/%d/"' % baseline.probe_set_id in alice.get(reverse("probe-set-list")).content.decode()


def test_another_organizations_model_and_probe_set_pages_are_not_found(client, users, stored):
    version, probe = stored
    client.force_login(users["bob"])
    for url in (reverse("model-detail", args=[version.pk]), reverse("probe-set-detail", args=[probe.pk])):
        response = client.get(url)
        assert response.status_code == 404 and "pets" not in response.content.decode()


# --- uploads -----------------------------------------------------------------------------------

def test_an_upload_error_names_the_users_file_and_asks_for_the_files_again(alice, package_files):
    page = alice.post(reverse("model-list"), {
        "file": SimpleUploadedFile("detector v2.pt2", b"not a model"),
        "meta": SimpleUploadedFile("detector-meta.json", package_files["meta"]), "release_tag": "v2.0-rc1"})
    shown = text(page)
    assert "detector v2.pt2 is not a torch.export" in shown
    assert "choose your files again (detector v2.pt2, detector-meta.json)" in shown
    assert 'name="release_tag" value="v2.0-rc1"' in page.content.decode()
    assert "the release this model version ships in" in shown and "one folder per class" not in shown


# --- the API -----------------------------------------------------------------------------------

def test_the_api_gives_the_release_tag_and_the_identical_audit_with_200(client, users, stored):
    version, probe = stored
    version.release_tag = "v1.0"
    version.save()
    _, key = services.api_token_create(user=users["alice"], organization=users["acme"], name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    form = {"model_version": version.pk, "probe_set": probe.pk, "seed": "2"}
    created = client.post(reverse("api-audits"), form, **auth)
    assert created.status_code == 201
    assert created.json()["release_tag"] == "v1.0" and created.json()["existing"] is False
    again = client.post(reverse("api-audits"), form, **auth)
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    assert again.json()["existing"] is True and "identical audit is already queued" in again.json()["note"]
    assert Audit.objects.count() == 1
    polled = client.get(reverse("api-audit", args=[created.json()["id"]]), **auth).json()
    assert polled["release_tag"] == "v1.0" and polled["model_version"]["release_tag"] == "v1.0"


# --- an audit's progress and Cancel ---------------------------------------------------------------

@pytest.fixture
def audit(users, stored):
    version, probe = stored
    return services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                 probe_set=probe, profile="quick")


def page_html(response) -> str:
    return html.unescape(response.content.decode())


def test_a_queued_audit_shows_its_steps_its_place_and_a_cancel_button(client, users, audit):
    client.force_login(users["alice"])
    page = page_html(client.get(reverse("audit-detail", args=[audit.pk])))
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
    assert f"Audit {audit.pk} cancelled." in page_html(done) and "badge-cancelled" in page_html(done)
    assert "Cancel audit" not in page_html(done)   # nothing left to cancel
    again = client.post(url, follow=True)
    assert f"Audit {audit.pk} has already finished (cancelled); only a queued or running audit can be cancelled." \
        in page_html(again)
    audit.refresh_from_db()
    assert audit.status == Audit.Status.CANCELLED


def test_another_organizations_audit_cannot_be_cancelled(client, users, audit):
    client.force_login(users["bob"])
    assert client.post(reverse("audit-cancel", args=[audit.pk])).status_code == 404
    audit.refresh_from_db()
    assert audit.status == "queued"


def test_the_new_audit_form_offers_the_profiles_with_their_help(client, users, stored):
    client.force_login(users["alice"])
    page = page_html(client.get(reverse("audit-new")))
    assert '<select name="profile"' in page and "Quick: the model summary, performance, shortcut probes" in page
    version, probe = stored
    response = client.post(reverse("audit-new"), {"model_version": version.pk, "probe_set": probe.pk,
                                                   "profile": "quick", "seed": "0"})
    assert response.status_code == 302
    assert Audit.objects.get().profile == "quick"
