"""Fixtures shared by the portal's tests: a finished audit (run in this process), headless Chromium and a
page in it (desktop size) for the browser tests against the real stack."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from auditsvc.audits import services
from auditsvc.audits.models import Audit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture
def done_audit(users, stored, django_capture_on_commit_callbacks):
    version, probe = stored
    with django_capture_on_commit_callbacks(execute=True):
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe)
    services.audit_execute(audit.pk)
    audit.refresh_from_db()
    assert audit.status == Audit.Status.DONE
    return audit


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def desktop_page(browser, accept_dialogs: bool = False):
    """A desktop-size page that records its dialogs' messages (`page.dialogs`) and dismisses or accepts them;
    yields it and closes its context."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                      dialog.accept() if accept_dialogs else dialog.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


@pytest.fixture
def page(browser, service_stack):
    yield from desktop_page(browser)
