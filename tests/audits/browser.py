"""Helpers for the browser tests: log in, take a screenshot for a person to look at, measure how far a page
scrolls sideways, zip a probe folder."""

from __future__ import annotations

import zipfile
from pathlib import Path

from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"


def zip_directory(root: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(root).as_posix())
    return archive


def log_in(page, stack, username="alice", password="alice-password-1"):
    page.goto(f"{stack.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Audits")


def shot(page, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def overflow(page) -> int:
    """How far the page itself scrolls sideways, in CSS pixels (0: not at all)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
