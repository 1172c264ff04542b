"""The portal in headless Chromium at desktop (1280 px) and phone (390 px) width, against the real stack:
no page scrolls sideways, the header stays one row with a menu, and the audit page leads to the report:
its verdict with the report's reason, findings that link to their part of the report, the report as a
page with a table of contents, its PDF and the report alone in a new tab. Screenshots of every page at
both widths go to build/screenshots/ for a person to look at."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from playwright.sync_api import expect

from auditsvc.demo.nets import PlainNet
from tests.audits.browser import log_in, overflow, shot, zip_directory
from tests.conftest import write_package, write_probe

pytestmark = pytest.mark.integration
WIDTHS = {"desktop": 1280, "phone": 390}
RELEASE_TAG = "v9.1-layout"


@pytest.fixture(scope="module")
def finished(service_stack, tmp_path_factory) -> int:
    """A finished audit of a tiny model, with a release tag; its id."""
    folder = tmp_path_factory.mktemp("layout")
    torch.manual_seed(1)
    model = write_package(folder / "model", PlainNet(3, widths=(4, 8)), ["cat", "dog", "fox"], name="layout")
    probe = zip_directory(write_probe(folder / "probe", ["cat", "dog", "fox"], per_class=4), folder / "probe.zip")
    with open(model, "rb") as m, open(model.with_name("model.json"), "rb") as meta, open(probe, "rb") as p:
        response = service_stack.api().post(f"{service_stack.url}/api/v1/audits", data={"release_tag": RELEASE_TAG},
                                            files={"model": m, "meta": meta, "dataset": p}, timeout=120)
    response.raise_for_status()
    audit = response.json()["id"]
    assert service_stack.wait_until(audit, lambda s: s["status"] in ("done", "failed"))["status"] == "done"
    return audit


@pytest.fixture(params=WIDTHS.values(), ids=WIDTHS.keys())
def sized(request, browser, service_stack):
    """A logged-in page at each width."""
    context = browser.new_context(accept_downloads=True, viewport={"width": request.param, "height": 844})
    page = context.new_page()
    log_in(page, service_stack)
    yield page
    context.close()


@pytest.fixture
def phone(browser, service_stack):
    context = browser.new_context(viewport={"width": WIDTHS["phone"], "height": 844})
    page = context.new_page()
    log_in(page, service_stack)
    yield page
    context.close()


def portal_pages(stack, audit: int) -> dict[str, str]:
    status = stack.status(audit)
    return {"audits": "/audits/", "audit": f"/audits/{audit}/", "report": f"/audits/{audit}/report/",
            "new-audit": "/audits/new/", "compare": "/audits/compare/", "models": "/models/",
            "model": f"/models/{status['model_version']['id']}/", "probe-sets": "/probe-sets/",
            "probe-set": f"/probe-sets/{status['probe_set']['id']}/", "schedules": "/schedules/", "tokens": "/tokens/"}


def test_no_page_scrolls_sideways(sized, service_stack, finished):
    width = sized.viewport_size["width"]
    for name, path in portal_pages(service_stack, finished).items():
        sized.goto(service_stack.url + path)
        shot(sized, f"layout-{name}-{width}")
        assert overflow(sized) <= 0, f"{path} at {width} px"


def test_the_header_is_one_row_at_phone_width_and_its_menu_opens(phone, service_stack, finished):
    for path in ("/audits/", f"/audits/{finished}/report/"):   # the report's page has the portal's header too
        phone.goto(service_stack.url + path)
        header, brand, menu = (phone.locator(s) for s in ("header.site", "header.site .brand", "header.site summary"))
        models = phone.locator("header.site nav a", has_text="Models")
        assert header.bounding_box()["height"] < 2 * brand.bounding_box()["height"] + 20
        assert abs(menu.bounding_box()["y"] - brand.bounding_box()["y"]) < brand.bounding_box()["height"]
        expect(models).to_be_hidden()
        menu.click()
        expect(models).to_be_visible()
        expect(phone.locator("header.site button", has_text="Log out")).to_be_visible()
        shot(phone, f"layout-menu-open{'-report' if 'report' in path else ''}-390", full_page=False)
    models.click()
    expect(phone.locator("h1")).to_have_text("Model versions")


def test_the_desktop_header_shows_its_links_without_a_menu(page, service_stack, finished):
    log_in(page, service_stack)
    expect(page.locator("header.site summary")).to_be_hidden()
    expect(page.locator("header.site nav a", has_text="Probe sets")).to_be_visible()
    assert page.locator("header.site").bounding_box()["height"] < 60


def test_the_audit_page_shows_the_verdict_with_the_reports_reason_and_who_and_how_long(page, service_stack, finished):
    log_in(page, service_stack)
    page.goto(f"{service_stack.url}/audits/{finished}/")
    reason = page.locator("#verdict-reason").inner_text()
    verdict = service_stack.status(finished)["verdict"]
    assert reason.startswith(f"{verdict.upper()}: ")
    facts = page.locator("#audit-header").inner_text()
    for fact in (RELEASE_TAG, f"no. {finished}", "alice"):
        assert fact in facts
    assert re.search(r"Waited in the queue\s+(under 1 s|\d+ s|\d+ min)", facts)
    assert re.search(r"Ran\s+(under 1 s|\d+ s|\d+ min)", facts)
    page.click("#read-report")
    expect(page.locator(".report .reason")).to_have_text(reason)


def test_each_finding_links_to_its_part_of_the_report(page, service_stack, finished):
    log_in(page, service_stack)
    page.goto(f"{service_stack.url}/audits/{finished}/")
    links = page.locator("#findings td a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == [f"/audits/{finished}/report/#finding-{i + 1}" for i in range(len(hrefs))] and hrefs
    title = links.first.inner_text()
    links.first.click()
    target = page.locator("#finding-1")
    expect(target).to_be_in_viewport()
    expect(target.locator("h3")).to_contain_text(title)
    assert all(page.locator(f"#finding-{i + 1}").count() == 1 for i in range(len(hrefs)))


def test_the_reports_contents_jump_to_their_sections(page, service_stack, finished):
    log_in(page, service_stack)
    page.goto(f"{service_stack.url}/audits/{finished}/report/")
    entries = page.locator("#contents a")
    anchors = [entries.nth(i).get_attribute("href") for i in range(entries.count())]
    assert anchors and all(a.startswith("#") for a in anchors)
    missing = [a for a in anchors if page.locator(f"[id='{a[1:]}']").count() != 1]
    assert not missing
    for anchor in ("#section-performance", "#appendix", anchors[-1]):
        page.locator(f"#contents a[href='{anchor}']").click()
        assert page.evaluate("location.hash") == anchor
        expect(page.locator(anchor)).to_be_in_viewport()
        if anchor != anchors[-1]:   # the last one is near the end of the page, which cannot scroll further
            top = page.evaluate(f"document.getElementById('{anchor[1:]}').getBoundingClientRect().top")
            assert abs(top) < 2, anchor   # the section starts at the top of the window


def test_the_pdf_downloads_and_the_report_opens_alone_in_a_new_tab(page, service_stack, finished):
    log_in(page, service_stack)
    for path in (f"/audits/{finished}/", f"/audits/{finished}/report/"):
        page.goto(service_stack.url + path)
        with page.expect_download() as download:
            page.click("#download-pdf")
        assert Path(download.value.path()).read_bytes()[:5] == b"%PDF-"
    with page.context.expect_page() as opened:
        page.click("#open-report")
    alone = opened.value
    alone.wait_for_load_state()
    assert alone.url == f"{service_stack.url}/audits/{finished}/report.html"
    expect(alone.locator(".report .verdict")).to_be_visible()
    assert alone.locator("header.site").count() == 0
