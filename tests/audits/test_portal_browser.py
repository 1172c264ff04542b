"""The portal in headless Chromium (Playwright) against the real stack: a reviewer logs in, uploads
the tank demo, watches the progress bar, reads the report and downloads the PDF. Screenshots go to
build/screenshots/ for a person to look at."""

from __future__ import annotations

import subprocess

from pathlib import Path

import pytest
import torch
from playwright.sync_api import expect

from auditsvc.demo.nets import PlainNet
from tests.audits.browser import ROOT, log_in, shot, zip_directory
from tests.conftest import write_package, write_probe

XSS = "<img src=x onerror=alert(1)>"
LINK = '<link href="file:///etc/passwd">'

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tank_demo, tmp_path_factory):
    probe = zip_directory(tank_demo["probe"], tmp_path_factory.mktemp("demo") / "tank-probe.zip")
    return tank_demo["shortcut"], probe


def test_a_reviewer_audits_the_tank_demo_in_the_browser(page, service_stack, demo):
    stack, (model, probe) = service_stack, demo
    log_in(page, stack)
    shot(page, "01-audits-empty")

    page.goto(f"{stack.url}/models/")
    page.set_input_files("#model-upload input[name=file]", str(model))
    page.set_input_files("#model-upload input[name=meta]", str(model.with_name("model.json")))
    page.fill("#model-upload input[name=release_tag]", "demo-1")
    page.click("#model-upload button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("tank-detector-shortcut 1.0 registered")
    shot(page, "02-model-registered")

    page.goto(f"{stack.url}/probe-sets/")
    page.fill("#probe-upload input[name=name]", "tank probe")
    page.set_input_files("#probe-upload input[name=file]", str(probe))
    page.click("#probe-upload button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("200 images")

    page.goto(f"{stack.url}/audits/new/")
    page.select_option("select[name=model_version]", label="tank-detector-shortcut 1.0 · release demo-1")
    page.select_option("select[name=probe_set]", label="tank probe (200 images)")
    page.click("#audit-form button[type=submit]")
    bar = page.locator(".progress")
    expect(bar).to_be_visible()
    shot(page, "03-audit-running")
    expect(page.locator("#download-pdf")).to_be_visible(timeout=240_000)  # the poller reloads when done
    expect(page.locator("table").first).to_contain_text("Shortcut")
    expect(page.locator("#verdict-reason")).to_contain_text("FAIL: predictions follow")
    shot(page, "04-audit-done")

    with page.expect_download() as download:
        page.click("#download-pdf")
    pdf = download.value.path()
    assert Path(pdf).read_bytes()[:4] == b"%PDF"
    assert download.value.suggested_filename.endswith("report.pdf")
    expect(page.locator("#audit-header")).to_contain_text("demo-1")
    cover = subprocess.run(["pdftotext", "-l", "1", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "demo-1" in cover, "the release tag is on the PDF's cover"
    page.click("#read-report")
    expect(page.locator(".report h2").first).to_contain_text("Findings and what to do")
    expect(page.locator(".report .verdict")).to_have_text("FAIL")
    shot(page, "04b-report")
    assert page.dialogs == []


def test_upload_errors_show_next_to_the_field(page, service_stack, tmp_path):
    stack = service_stack
    log_in(page, stack)
    not_a_model = tmp_path / "model.pt2"
    not_a_model.write_text("hello")
    meta = tmp_path / "model.json"
    meta.write_text('{"name": "x", "version": "1"}')
    page.goto(f"{stack.url}/models/")
    page.set_input_files("#model-upload input[name=file]", str(not_a_model))
    page.set_input_files("#model-upload input[name=meta]", str(meta))
    page.click("#model-upload button[type=submit]")
    expect(page.locator("#meta-errors")).to_contain_text("missing required key")
    page.set_input_files("#model-upload input[name=file]", str(not_a_model))
    page.set_input_files("#model-upload input[name=meta]", str(ROOT / "build" / "demo" / "shortcut" / "model.json"))
    page.click("#model-upload button[type=submit]")
    expect(page.locator("#file-errors")).to_contain_text("not a torch.export")
    shot(page, "05-upload-error")


def test_hostile_class_names_show_as_text_and_fetch_nothing(page, service_stack, tmp_path):
    stack = service_stack
    torch.manual_seed(0)
    model = write_package(tmp_path / "model", PlainNet(3, widths=(4, 8)), [XSS, "plain", LINK], name="hostile")
    probe = zip_directory(write_probe(tmp_path / "probe", [XSS, "plain"], per_class=4), tmp_path / "probe.zip")
    created = stack.create_audit(model, probe)
    stack.wait_until(created["id"], lambda s: s["status"] in ("done", "failed"))
    requests_seen = []
    page.on("request", lambda request: requests_seen.append(request.url))
    log_in(page, stack)
    page.goto(f"{stack.url}/audits/{created['id']}/report/")
    expect(page.locator(".report")).to_contain_text(XSS)
    expect(page.locator(".report")).to_contain_text(LINK)
    shot(page, "06-hostile-names")
    assert page.dialogs == []
    assert not [url for url in requests_seen if url.startswith("file:") or "/x" == url[-2:]]
