"""The report as a reviewer gets it: HTML self-contained and escaped, PDF rendered and readable."""

import re
import subprocess

import pytest
import torch

from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.results import Figure
from auditsvc.battery import audit
from auditsvc.demo.nets import PlainNet
from auditsvc.reports import render
from auditsvc.reports.render import inline_only_fetcher, render_pdf, write_report
from tests.conftest import write_package, write_probe

XSS = "<img src=x onerror=alert(1)>"
LINK = '<link href="file:///etc/passwd">'


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    classes = [XSS, "plain", LINK]
    path = write_package(tmp / "model", PlainNet(3, widths=(4, 8)), classes, name="evil <b>model</b>")
    root = write_probe(tmp / "probe", [XSS, "plain"], per_class=4)
    with ProbeDataset(root, classes) as probe:
        result = audit(load_model(path), probe, AuditOptions(samples=2, ig_steps=4, smoothgrad_samples=2))
    paths = write_report(result, tmp / "out")
    text = subprocess.run(["pdftotext", "-layout", str(paths["pdf"]), "-"], capture_output=True, text=True,
                          check=True).stdout
    return result, paths, paths["html"].read_text(), text


def test_html_is_self_contained(report):
    _, _, html, _ = report
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert "<link" not in html.replace("&lt;link", "")
    assert "<script" not in html


def test_user_strings_are_escaped_in_html(report):
    _, _, html, _ = report
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert LINK not in html and "&lt;link href=&#34;file:///etc/passwd&#34;&gt;" in html
    assert "evil &lt;b&gt;model&lt;/b&gt;" in html


def test_pdf_shows_user_strings_as_text(report):
    _, _, _, text = report
    flat = " ".join(text.split())
    assert "onerror=alert(1)>" in flat
    assert 'file:///etc/passwd">' in flat
    assert "root:x:0:0" not in flat


def test_every_link_in_the_html_lands_on_an_anchor_and_the_contents_list_every_section(report):
    result, _, html, _ = report
    anchors = set(re.findall(r' id="([^"]+)"', html))
    links = re.findall(r'href="#([^"]+)"', html)
    assert links and set(links) <= anchors
    contents = html[html.index('<nav class="screen-toc"'):html.index("</nav>")]
    listed = set(re.findall(r'href="#([^"]+)"', contents))
    assert {f"section-{s.name}" for s in result.sections} <= listed
    assert {f"finding-{i + 1}" for i in range(len(result.findings))} <= listed


def test_each_finding_in_detail_links_to_the_section_that_raised_it(report):
    result, _, html, _ = report
    raised = [(i, s) for s in result.sections for f in s.findings for i, g in enumerate(result.findings) if g is f]
    assert raised
    for index, section in raised:
        article = html[html.index(f'id="finding-{index + 1}"'):]
        article = article[:article.index("</article>")]
        assert f'Raised by <a href="#section-{section.name}">{section.title}</a>' in article


def test_pdf_has_findings_first_running_header_and_page_numbers(report):
    result, paths, _, text = report
    pages = text.split("\f")
    assert len([p for p in pages if p.strip()]) >= 6
    assert "Findings and what to do" in pages[0] and "Severity" in pages[0]   # findings on the first page
    assert "Every check, with its line" in pages[1] and "Sign-off" in pages[1]
    for number, page in enumerate(pages[1:4], start=2):
        assert "evil <b>model</b> 1.0" in page and result.verdict.upper() in page
        assert re.search(rf"page {number} of \d+", page)
    assert result.verdict.upper() in pages[0]


def test_pdf_pages_render(report, tmp_path):
    _, paths, _, _ = report
    subprocess.run(["pdftoppm", "-r", "30", "-png", "-f", "1", "-l", "3", str(paths["pdf"]), str(tmp_path / "p")],
                   check=True)
    assert len(list(tmp_path.glob("p-*.png"))) == 3


def test_pdf_fetches_nothing_but_inline_images(tmp_path):
    secret = tmp_path / "secret.png"
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    secret.write_bytes(buffer.getvalue())
    import base64
    inline = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    for url, images in ((secret.as_uri(), 0), ("http://127.0.0.1:9/x.png", 0), (inline, 1)):
        pdf = tmp_path / "t.pdf"
        pdf.write_bytes(render_pdf(f'<p>x</p><img src="{url}"><link rel="stylesheet" href="{secret.as_uri()}">'))
        listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True).stdout
        assert len(listing.strip().splitlines()) - 2 == images, url
    with pytest.raises(ValueError):
        inline_only_fetcher().fetch(secret.as_uri())


@pytest.mark.parametrize("width", ["100%; background: url(file:///etc/passwd)", "50%\" onload=\"x", "10em", ""])
def test_a_figure_width_is_a_percentage_or_refused(width):
    with pytest.raises(ValueError, match="percentage"):
        render._block(Figure(b"", "caption", width=width))


def test_the_worst_group_label_names_the_cell():
    assert render._worst_group_label({}) == "Worst-group accuracy"
    worst = {"attribute": "weather", "class": "no_tank", "value": "cloudy", "accuracy": 0.0, "n": 50}
    assert render._worst_group_label({"worst_group": worst}) == "Worst-group accuracy: no_tank, weather = cloudy"
