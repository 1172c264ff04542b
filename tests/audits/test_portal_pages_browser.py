"""The portal's pages in headless Chromium against the real stack: comparing two audits of different model
versions picked in the audit list, the compare page without a choice, release tags, the model and probe set
pages, no repeated actions (a reloaded token page, Back and "Start audit" again, revoking only when
confirmed), upload errors that name the user's files. Screenshots (1280 px and 390 px wide) go to
build/screenshots/."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import pytest
import torch
from playwright.sync_api import expect

from auditsvc.demo.nets import PlainNet
from tests.audits.browser import log_in, overflow, shot, zip_directory
from tests.conftest import write_package, write_probe

pytestmark = pytest.mark.integration
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def shots(page, name: str) -> None:
    """The page at desktop and phone width; at neither does the page itself scroll sideways."""
    shot(page, name)
    assert overflow(page) <= 0, f"{name} at desktop width"
    page.set_viewport_size(PHONE)
    shot(page, f"{name}-phone")
    assert overflow(page) <= 0, f"{name} at phone width"
    page.set_viewport_size(DESKTOP)


@contextmanager
def workers_paused(stack):
    """Every Celery worker of the stack stopped (SIGSTOP to its process group), so that a new audit stays
    queued; continued afterwards."""
    groups = [process.pid for name, process in stack.processes.items() if name.startswith("worker")]
    for group in groups:
        os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        for group in groups:
            os.killpg(group, signal.SIGCONT)


@pytest.fixture(scope="module")
def two_versions(service_stack, tmp_path_factory):
    """Two finished audits through the API: compare-model 1.0 (release v1.0) and 2.0 (release v2.0-rc1), on
    one probe set."""
    stack, directory = service_stack, tmp_path_factory.mktemp("two_versions")
    probe = zip_directory(write_probe(directory / "probe", ["cat", "dog"], per_class=6), directory / "pets.zip")
    audits = []
    for number, (version, tag) in enumerate((("1.0", "v1.0"), ("2.0", "v2.0-rc1"))):
        torch.manual_seed(number)
        model = write_package(directory / version, PlainNet(2, widths=(4, 8)), ["cat", "dog"],
                              name="compare-model", version=version)
        with open(model, "rb") as m, open(model.with_name("model.json"), "rb") as meta, open(probe, "rb") as d:
            stored = {"probe_set": audits[0]["probe_set"]["id"]} if audits else {}
            files = {"model": (f"compare-{version}.pt2", m), "meta": ("model.json", meta)}
            if not audits:
                files["dataset"] = ("pets.zip", d)
            response = stack.api().post(f"{stack.url}/api/v1/audits", files=files,
                                        data={"release_tag": tag, "dataset_name": "pets photos", **stored},
                                        timeout=120)
        response.raise_for_status()
        audits.append(response.json())
    done = [stack.wait_until(a["id"], lambda s: s["status"] in ("done", "failed")) for a in audits]
    assert [a["status"] for a in done] == ["done", "done"], done
    return done


def audits_of(stack, version_id: int) -> list[int]:
    response = stack.api().get(f"{stack.url}/api/v1/model-versions/{version_id}/audits", timeout=30)
    return [a["id"] for a in response.json()["results"]]


def test_a_reviewer_compares_two_versions_picked_in_the_audit_list(page, service_stack, two_versions):
    stack, (older, newer) = service_stack, two_versions
    log_in(page, stack)
    row = page.locator("tbody tr", has=page.locator(f"a[href='/audits/{older['id']}/']"))
    expect(row.locator("td.release")).to_have_text("v1.0")
    page.select_option("#audit-filters select[name=release_tag]", "v2.0-rc1")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#compare-form tbody tr")).to_have_count(1)
    shots(page, "10-audit-list-filtered")
    page.goto(f"{stack.url}/audits/")

    page.check(f"input[name=audit][value='{older['id']}']")
    page.click("#compare-selected")
    expect(page.locator("#compare-problem")).to_contain_text("Choose exactly two audits")   # one is not enough
    page.goto(f"{stack.url}/audits/")
    page.check(f"input[name=audit][value='{older['id']}']")
    page.check(f"input[name=audit][value='{newer['id']}']")
    page.click("#compare-selected")

    expect(page.locator("h1")).to_have_text(f"Compare audit #{older['id']} with #{newer['id']}")
    for audit in (older, newer):
        expect(page.locator(f"#side-{audit['id']} .verdict")).to_have_text(audit["verdict"], ignore_case=True)
    differing = page.locator("#model-diff tr.differs th")
    expect(differing.filter(has_text="Version")).to_have_count(1)
    expect(differing.filter(has_text="Release tag")).to_have_count(1)
    expect(differing.filter(has_text="sha256")).to_have_count(1)
    expect(page.locator("#model-diff tr", has_text="Classes")).to_have_attribute("data-differs", "no")
    expect(page.locator("#model-diff")).to_contain_text("v2.0-rc1")
    shots(page, "11-compare")
    assert page.dialogs == []


def test_the_compare_link_without_a_choice_explains_what_to_do(page, service_stack, two_versions):
    stack = service_stack
    log_in(page, stack)
    page.click("header >> text=Compare")
    expect(page.locator("h1")).to_have_text("Compare two audits")
    expect(page.locator("main")).to_contain_text("Pick two finished audits")
    expect(page.locator(f"input[name=audit][value='{two_versions[0]['id']}']")).to_be_visible()
    shots(page, "12-compare-choose")
    page.goto(f"{stack.url}/audits/compare/?audit=abc&audit=99999999")
    expect(page.locator("#compare-problem")).to_contain_text("There is no audit")
    expect(page.locator("#compare-selected")).to_be_visible()


def test_release_tags_and_the_model_and_probe_set_pages(page, service_stack, two_versions):
    stack, (older, newer) = service_stack, two_versions
    log_in(page, stack)
    page.goto(f"{stack.url}/audits/{newer['id']}/")
    expect(page.locator("#release-tag")).to_have_text("release v2.0-rc1")
    page.select_option("#compare-with", str(older["id"]))   # "compare with..." on the audit page
    page.click("#compare-with + button")
    expect(page.locator("h1")).to_have_text(f"Compare audit #{older['id']} with #{newer['id']}")

    page.goto(f"{stack.url}/audits/{newer['id']}/")
    page.click("h1 a")
    expect(page.locator("h1")).to_have_text("Model compare-model")
    for audit in (older, newer):
        section = page.locator(f"#version-{audit['model_version']['id']}")
        expect(section.locator(f"a[href='/audits/{audit['id']}/']")).to_be_visible()
        expect(section.locator(".latest-verdict")).to_have_text(audit["verdict"], ignore_case=True)
    shots(page, "13-model-page")

    page.goto(f"{stack.url}/audits/{newer['id']}/")
    page.click("#audit-header a[href^='/probe-sets/']")
    expect(page.locator("#classes")).to_contain_text("cat")
    for audit in (older, newer):
        expect(page.locator(f"#probe-set-audits a[href='/audits/{audit['id']}/']")).to_be_visible()
    shots(page, "14-probe-set-page")


def test_back_and_start_audit_again_shows_the_queued_audit(page, service_stack, two_versions):
    stack, (older, _) = service_stack, two_versions
    version = older["model_version"]["id"]
    log_in(page, stack)
    with workers_paused(stack):
        before = audits_of(stack, version)
        page.goto(f"{stack.url}/audits/new/")
        page.select_option("select[name=model_version]", label="compare-model 1.0 · release v1.0")
        page.select_option("select[name=probe_set]", str(older["probe_set"]["id"]))
        page.fill("input[name=seed]", "4242")
        shots(page, "15-new-audit")
        page.click("#audit-form button[type=submit]")
        expect(page.locator(".progress")).to_be_visible()
        first = page.url
        page.go_back()
        expect(page.locator("input[name=seed]")).to_have_value("4242")   # the browser kept the form
        page.click("#audit-form button[type=submit]")
        expect(page.locator(".messages")).to_have_text("An identical audit is already queued: showing it.")
        assert page.url == first
        assert len(audits_of(stack, version)) == len(before) + 1
        shots(page, "16-identical-audit")


def test_a_reloaded_token_page_creates_nothing_and_revoking_asks_first(page, service_stack):
    stack = service_stack
    log_in(page, stack)
    page.goto(f"{stack.url}/tokens/")
    rows = page.locator("#tokens tbody tr")
    before = rows.count()
    page.fill("input[name=name]", "nightly pipeline")
    page.click("main form button[type=submit]")
    expect(page.locator("#new-key")).to_contain_text("asv_")
    expect(rows).to_have_count(before + 1)
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)   # shown once
    expect(rows).to_have_count(before + 1)               # and nothing made again

    row = rows.filter(has_text="nightly pipeline")
    row.locator("text=revoke…").click()
    expect(page.locator("#confirm h1")).to_contain_text("Revoke the token “nightly pipeline”")
    shots(page, "17-confirm-revoke")
    page.click("text=Cancel")
    expect(row).to_contain_text("in use")
    row.locator("text=revoke…").click()
    page.click("#confirm-button")
    expect(page.locator(".messages")).to_contain_text("Token “nightly pipeline” revoked")
    expect(row).to_have_class("revoked")
    expect(row).to_contain_text("revoked")
    expect(rows).to_have_count(before + 1)   # still listed
    shots(page, "18-token-revoked")
    assert page.dialogs == []


def test_an_upload_error_names_the_users_file_and_keeps_the_release_tag(page, service_stack, tmp_path):
    stack = service_stack
    log_in(page, stack)
    not_a_model = tmp_path / "my detector v3.pt2"
    not_a_model.write_text("hello")
    meta = write_package(tmp_path / "real", PlainNet(2, widths=(4, 8)), ["cat", "dog"]).with_name("model.json")
    page.goto(f"{stack.url}/models/")
    page.set_input_files("#model-upload input[name=file]", str(not_a_model))
    page.set_input_files("#model-upload input[name=meta]", str(meta))
    page.fill("#model-upload input[name=release_tag]", "v3.0")
    page.click("#model-upload button[type=submit]")
    expect(page.locator("#file-errors")).to_contain_text("my detector v3.pt2 is not a torch.export")
    expect(page.locator("#choose-files-again")).to_contain_text("choose your files again (my detector v3.pt2, "
                                                                "model.json)")
    expect(page.locator("#model-upload input[name=release_tag]")).to_have_value("v3.0")
    shots(page, "19-upload-error")
