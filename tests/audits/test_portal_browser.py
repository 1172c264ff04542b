"""The portal in headless Chromium (Playwright) against the real stack: a reviewer logs in, uploads
the tank demo, watches the progress bar, reads the report and downloads the PDF. Screenshots go to
build/screenshots/ for a person to look at."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from playwright.sync_api import expect, sync_playwright

from auditsvc.demo.nets import PlainNet
from tests.conftest import write_package, write_probe

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
XSS = "<img src=x onerror=alert(1)>"
LINK = '<link href="file:///etc/passwd">'

pytestmark = pytest.mark.integration


def zip_directory(root: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(root).as_posix())
    return archive


@pytest.fixture(scope="module")
def demo(tank_demo, tmp_path_factory):
    probe = zip_directory(tank_demo["probe"], tmp_path_factory.mktemp("demo") / "tank-probe.zip")
    return tank_demo["shortcut"], probe


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, service_stack):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def log_in(page, stack, username="alice", password="alice-password-1"):
    page.goto(f"{stack.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Audits")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


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
    report = page.frame_locator("iframe.report")
    expect(report.locator("h2").first).to_contain_text("Findings and what to do")
    expect(report.locator(".verdict")).to_have_text("FAIL")
    shot(page, "04-audit-done")

    with page.expect_download() as download:
        page.click("#download-pdf")
    pdf = download.value.path()
    assert Path(pdf).read_bytes()[:4] == b"%PDF"
    assert download.value.suggested_filename.endswith("report.pdf")
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
    page.goto(f"{stack.url}/audits/{created['id']}/")
    report = page.frame_locator("iframe.report")
    expect(report.locator("body")).to_contain_text(XSS)
    expect(report.locator("body")).to_contain_text(LINK)
    shot(page, "06-hostile-names")
    assert page.dialogs == []
    assert not [url for url in requests_seen if url.startswith("file:") or "/x" == url[-2:]]
