"""No user-supplied string is read as markup where it is drawn.

Class names, model names and versions, manifest attribute names and values, probe set names and
release tags reach matplotlib (mathtext, LaTeX), the HTML report and its PDF (HTML, CSS, URLs
WeasyPrint would fetch), the portal and notification mail. Each is drawn as the text it is.
"""

from __future__ import annotations

import csv
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from django.core import mail
from django.core.mail import BadHeaderError
from django.urls import reverse
from matplotlib.text import Text as MatplotlibText
from weasyprint.urls import URLFetcher

from auditsvc.audits import services
from auditsvc.audits.models import Audit, AuditFinding, ModelVersion, ProbeSet as StoredProbeSet
from auditsvc.audits.services import notifications
from auditsvc.battery import figures
from auditsvc.battery.context import AuditOptions
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.registry import section_names
from auditsvc.battery.results import (AuditResult, Figure, Finding, SectionResult, Table, Text, incomplete_finding,
                                      verdict_of)
from auditsvc.battery import audit
from auditsvc.battery.figures import Cell, mosaic
from auditsvc.demo.nets import PlainNet
from auditsvc.reports import render
from tests.conftest import write_package, write_probe

# Printable strings an upload may hold (within the length limits), each built to be read as markup.
HOSTILE = {
    "mathtext-frac": r"$\frac{1}{$",
    "escaped-dollar": r"\$",
    "mathtext-superscript": "$x^$",
    "mathtext-empty": "$$",
    "latex-commands": r"\mathrm{x}\\ \input{/etc/passwd}",
    "html-script": "<script>alert(1)</script>",
    "html-img-file": "<img src=file:///etc/passwd>",
    "style-breakout": "</style><link rel=stylesheet href=http://127.0.0.1:9/x.css>",
    "css-url": "url(file:///etc/passwd)",
    "attribute-breakout": '" onmouseover="alert(1)" x=\'',
    "jinja-expression": "{{ 7*7 }}",
    "jinja-statement": "{% if true %}yes{% endif %}",
    "long-200": "W" * 198 + "$x",
}
# Control and layout characters: uploads refuse them, but every layer that draws must survive them.
CONTROL = {
    "nul": "a\x00b",
    "rtl-override": "abc\u202edef",
    "crlf": "a\r\nBcc: evil@example.com",
}
ANY = HOSTILE | CONTROL
BENIGN = "plain"


# --- matplotlib: never mathtext, never LaTeX ---------------------------------------------------

def _chart(text: str):
    """Every kind of text a section draws on a chart: title, axis label, ticks, legend, annotation."""
    fig, ax = figures.plt.subplots(figsize=(2.5, 2))
    ax.bar([0, 1], [1, 2], label=text)
    ax.set_xticks([0, 1], [text, "b"], rotation=90)
    ax.set_title(text)
    ax.set_ylabel(text)
    ax.text(0.5, 1.5, text)
    ax.legend()
    return fig


def _image_grid(text: str):
    return figures.image_grid([[np.zeros((4, 4, 3))]], row_labels=[text], col_labels=[text])


def _panel_grid(text: str):
    """Titles above single panels (the true label, an attribute value) and a colour bar's label."""
    return figures.image_grid([[figures.Panel(np.zeros((4, 4)), title=f"true: {text}")]],
                              scale=figures.ColourScale("jet", text))


def _patch_mosaic(text: str):
    return mosaic([[Cell(np.zeros((4, 4, 3)), f"0.5\n{text}")]], row_labels=[text])


FIGURES = {"chart": _chart, "image-grid": _image_grid, "panel-grid": _panel_grid, "patch-mosaic": _patch_mosaic}


def _drawn_texts(fig) -> list[MatplotlibText]:
    return [t for t in fig.findobj(MatplotlibText) if t.get_text()]


@pytest.mark.parametrize("kind", FIGURES)
@pytest.mark.parametrize("text", ANY.values(), ids=ANY.keys())
def test_figures_draw_user_strings_as_plain_text(text, kind):
    fig = FIGURES[kind](text)
    png = figures.to_png(fig)
    assert png.startswith(b"\x89PNG")
    texts = _drawn_texts(fig)
    assert all(not t.get_parse_math() and not t.get_usetex() for t in texts)
    assert any(text in t.get_text() for t in texts)   # drawn verbatim: nothing escaped into view


def test_plain_text_holds_whatever_the_global_settings_say():
    """to_png alone makes texts plain: even with mathtext and LaTeX switched on globally (no LaTeX is
    installed here, so a text handed to it would fail), the figure is drawn."""
    with figures.plt.rc_context({"text.usetex": True, "text.parse_math": True}):
        fig = _chart(HOSTILE["mathtext-frac"])
        assert figures.to_png(fig).startswith(b"\x89PNG")
    assert not figures.plt.rcParams["text.usetex"] and not figures.plt.rcParams["text.parse_math"]


# --- the whole battery on hostile class names, attributes and model name ----------------------

FOLDER_CLASSES = [HOSTILE[k] for k in ("mathtext-frac", "escaped-dollar", "mathtext-superscript",
                                       "jinja-expression", "long-200")]
# Not valid folder names ('/'): classes of the model that the probe set does not cover.
OTHER_CLASSES = [HOSTILE[k] for k in ("html-script", "style-breakout", "css-url")]
ATTRIBUTE_NAME = HOSTILE["mathtext-superscript"] + " <b>site</b>"
ATTRIBUTE_VALUES = [HOSTILE["mathtext-frac"], HOSTILE["style-breakout"]]


def _hostile_manifest(root) -> None:
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", ATTRIBUTE_NAME])
        for label in FOLDER_CLASSES:
            for i, image in enumerate(sorted((root / label).iterdir())):
                writer.writerow([f"{label}/{image.name}", label, ATTRIBUTE_VALUES[i % 2]])


class _FigureRecorder:
    """Wraps figures.to_png to keep every figure's texts as drawn (tick labels appear while drawing)."""

    def __init__(self):
        self.texts: list[MatplotlibText] = []
        self._to_png = figures.to_png

    def __call__(self, fig) -> bytes:
        png = self._to_png(fig)
        self.texts += _drawn_texts(fig)
        return png


def _record_fetches(monkeypatch) -> list[str]:
    """Every URL WeasyPrint's fetcher is asked for from now on."""
    urls, fetch = [], URLFetcher.fetch

    def recording(fetcher, url, *args, **kwargs):
        urls.append(url)
        return fetch(fetcher, url, *args, **kwargs)

    monkeypatch.setattr(URLFetcher, "fetch", recording)
    return urls


@pytest.fixture(scope="module")
def hostile_audit(tmp_path_factory):
    """One audit of a model whose classes, name, version and probe attributes are hostile."""
    directory = tmp_path_factory.mktemp("hostile_audit")
    classes = FOLDER_CLASSES + OTHER_CLASSES
    torch.manual_seed(0)
    model = write_package(directory / "model", PlainNet(len(classes), widths=(4, 8)), classes,
                          name=HOSTILE["html-img-file"], version=HOSTILE["jinja-statement"])
    root = write_probe(directory / "probe", FOLDER_CLASSES, per_class=3, manifest=False)
    _hostile_manifest(root)
    drawn = _FigureRecorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "to_png", drawn)
        fetched = _record_fetches(patch)
        with ProbeDataset(root, classes) as probe:
            # The model is its own reference, so the sections that compare two models run too.
            result = audit(load_model(model), probe, AuditOptions(samples=2, ig_steps=4, smoothgrad_samples=2,
                                                                      batch_size=16), reference=load_model(model))
        paths = render.write_report(result, directory / "out")
    return {"result": result, "texts": drawn.texts, "fetched": fetched, "html": paths["html"].read_text()}


@pytest.mark.parametrize("section", section_names())
def test_no_section_fails_on_hostile_names(hostile_audit, section):
    result = next(s for s in hostile_audit["result"].sections if s.name == section)
    assert result.status == "ok", result.reason


def test_the_battery_drew_hostile_names_as_plain_text(hostile_audit):
    texts = hostile_audit["texts"]
    assert texts and all(not t.get_parse_math() and not t.get_usetex() for t in texts)
    drawn = "\n".join(t.get_text() for t in texts)
    for name in [*FOLDER_CLASSES[:4], ATTRIBUTE_VALUES[0]]:
        assert name in drawn, name
    assert not any(f.code == "health.incomplete" for f in hostile_audit["result"].findings)


def test_the_hostile_audit_report_fetches_nothing_and_adds_no_markup(hostile_audit):
    assert hostile_audit["fetched"] and all(url.startswith("data:") for url in hostile_audit["fetched"])
    page = _Page(hostile_audit["html"])
    assert page.tag_names() <= REPORT_TAGS
    style_sheet = render.TEMPLATES.joinpath("report/report.css").read_text()
    assert [style.strip() for style in page.styles] == [style_sheet.strip()]
    for name in [HOSTILE["html-img-file"], HOSTILE["jinja-statement"], *FOLDER_CLASSES, ATTRIBUTE_NAME]:
        assert name in page.text, name


# --- the HTML report and its PDF ----------------------------------------------------------------

REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "div", "section", "p", "h1", "h2", "h3", "span",
               "table", "thead", "tbody", "tr", "th", "td", "a", "ul", "li", "article", "caption", "figure", "img",
               "figcaption", "nav"}


class _Page(HTMLParser):
    """A parsed page: its elements with their attribute names, attribute values, text and style sheets."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, tuple[str, ...]]] = []
        self.attributes: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self.chunks: list[str] = []
        self._open = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, tuple(name for name, _ in attrs)))
        self.attributes += [(name, value or "") for name, value in attrs]
        self._open = tag

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        (self.styles if self._open == "style" else self.chunks).append(data)
        self._open = ""

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def tag_names(self) -> set[str]:
        return {tag for tag, _ in self.elements}

    def links(self) -> list[str]:
        return [value for name, value in self.attributes if name in ("src", "href", "action", "data-status-url")]


PIXEL = figures.to_png(figures.plt.figure(figsize=(0.2, 0.2)))


def _report_of(text: str) -> AuditResult:
    """An audit result with `text` in every field a user supplies."""
    model = {"name": text, "version": text, "sha256": "0" * 64, "format": "torch.export", "classes": [text, "b"],
             "input": [3, 32, 32], "file": text}
    sections = [SectionResult("performance", "Performance", blocks=[
                    Table([text, "images"], [[text, 3]], caption=text, title=text),
                    Figure(PIXEL, caption=text, title=text), Text(text, "note")]),
                SectionResult("embedding", "Embedding", status="skipped", reason=text),
                SectionResult("neurons", "Neurons", status="error", reason=f"ValueError: {text}")]
    finding = Finding("bias.attribute", "bias", "fail", f"Accuracy differs with {text}", f"Images with {text}.",
                      {"attribute": text, "accuracy": {text: 0.5}}, blocks=[Text(text, "warning")], headline=text)
    findings = [incomplete_finding(sections), finding]
    return AuditResult(
        model=model, reference=model, verdict=verdict_of(findings, sections), findings=findings, sections=sections,
        dataset={"sha256": "1" * 64, "images": 6, "classes": [text, "b"], "source": text, "attributes": [text],
                 "boxes": False},
        metrics={"accuracy": 0.5, "per_class": {text: 0.5}, "groups": {}},
        environment={"auditsvc": "0", "torch": "0", "device": "cpu", "seed": 0, "python": "3"},
        settings={"sections": [text]}, created="2025-01-01T00:00:00+00:00")


def _changes_of(text: str) -> dict:
    return {"previous_created": "2024-12-01T00:00:00+00:00", "previous_verdict": "pass", "new": [text],
            "resolved": [text], "metrics": [{"name": text, "before": "1", "after": "2", "delta": "+1"}]}


def _report_html(text: str) -> str:
    return render.render_html(render.report_data(_report_of(text), _changes_of(text)))


@pytest.mark.parametrize("text", ANY.values(), ids=ANY.keys())
def test_the_report_shows_user_strings_as_text(text):
    hostile, benign = _Page(_report_html(text)), _Page(_report_html(BENIGN))
    assert hostile.elements == benign.elements          # no element or attribute came from the string
    assert hostile.styles == benign.styles               # nothing reached the style sheet
    assert hostile.links() == benign.links()             # nor any URL
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in hostile.links())
    assert text in hostile.text                          # shown as it is


def test_the_report_lists_failed_sections_first():
    html = _report_html(BENIGN)
    summary = html[html.index('id="summary"'):]
    assert summary.index("Incomplete audit") < summary.index("Accuracy differs with")
    assert html.index("Neurons (error)") < html.index("Embedding (skipped)")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://127.0.0.1:9/x.css", "https://example.com/x.png",
                                 "ftp://example.com/x", "FILE:///etc/hostname"])
def test_the_pdf_fetcher_refuses_everything_but_data_urls(url):
    with pytest.raises(ValueError, match="disallowed protocol"):
        render.inline_only_fetcher().fetch(url)


@pytest.mark.parametrize("key", ["html-img-file", "style-breakout", "css-url", "attribute-breakout"])
def test_the_pdf_fetches_nothing_a_user_string_names(key, monkeypatch):
    text = HOSTILE[key]
    fetched = _record_fetches(monkeypatch)
    assert render.render_pdf(_report_html(text)).startswith(b"%PDF")
    assert fetched and all(url.startswith("data:") for url in fetched)


def test_the_pdf_title_is_the_model_name_as_text():
    from weasyprint import HTML

    text = HOSTILE["style-breakout"] + ") /Author (x"
    document = HTML(string=_report_html(text), url_fetcher=render.inline_only_fetcher()).render()
    assert document.metadata.title == f"Audit: {text} {text} (FAIL)"
    assert document.metadata.authors in (None, [])


# --- the portal ---------------------------------------------------------------------------------

PORTAL_PAGES = ("audit-detail", "audit-list", "model-list", "probe-set-list")


@pytest.fixture
def owner(django_user_model):
    """A user who owns an organization (no password: pages are fetched with force_login)."""
    user = django_user_model.objects.create_user("alice", "alice@example.com")
    return {"user": user, "organization": services.organization_create(name="Acme", owner=user)}


def _stored_audit(owner, text: str) -> Audit:
    """A finished audit whose model name, version, release tag, probe set, classes and findings hold `text`."""
    organization, user = owner["organization"], owner["user"]
    version = ModelVersion.objects.create(organization=organization, name=text, version=text[:100], release_tag=text,
                                          meta={"classes": [text, "b"]}, format="torch.export", sha256="0" * 64,
                                          file="model.pt2", uploaded_by=user)
    probe = StoredProbeSet.objects.create(organization=organization, name=text, sha256="1" * 64, images=6,
                                          classes=[text, "b"], attributes=[text], file="probe.zip", uploaded_by=user)
    audit = Audit.objects.create(organization=organization, model_version=version, probe_set=probe,
                                 requested_by=user, status=Audit.Status.DONE, verdict="warn")
    incomplete = incomplete_finding([SectionResult("neurons", "Neurons", status="error",
                                                   reason=f"ValueError: {text}")])
    shortcut = Finding("shortcut.cue", "shortcut", "warn", f"The model relies on {text}", f"Changing {text}.")
    AuditFinding.objects.bulk_create([
        AuditFinding(audit=audit, code=f.code, category=f.category, severity=f.severity, title=f.title,
                     summary=f.summary, evidence=f.evidence) for f in (incomplete, shortcut)])
    return audit


def _portal_page(client, owner, text: str, page: str) -> str:
    audit = _stored_audit(owner, text)
    client.force_login(owner["user"])
    url = reverse(page, args=[audit.pk]) if page == "audit-detail" else reverse(page)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("page", PORTAL_PAGES)
@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_portal_shows_user_strings_as_text(client, owner, text, page):
    hostile = _Page(_portal_page(client, owner, text, page))
    ModelVersion.objects.all().delete()
    StoredProbeSet.objects.all().delete()
    benign = _Page(_portal_page(client, owner, BENIGN, page))
    assert hostile.elements == benign.elements
    assert hostile.styles == benign.styles
    assert text in hostile.text


@pytest.mark.django_db
def test_the_portal_shows_the_incomplete_finding_first(client, owner):
    page = _portal_page(client, owner, BENIGN, "audit-detail")
    findings = page[page.index("<h2>Findings</h2>"):]
    assert findings.index("Incomplete audit: section neurons failed") < findings.index("The model relies on")


# --- notification mail ---------------------------------------------------------------------------

@pytest.fixture
def worse_audit(owner, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    audit = _stored_audit(owner, CONTROL["crlf"])
    audit.previous = Audit.objects.create(organization=owner["organization"], model_version=audit.model_version,
                                          probe_set=audit.probe_set, status=Audit.Status.DONE, verdict="pass")
    audit.changes = {"new": [f"{CONTROL['crlf']} (shortcut.cue)"]}
    return audit


@pytest.mark.django_db
def test_a_model_name_cannot_add_mail_headers(worse_audit):
    assert services.notify_worse_verdict(worse_audit) == 1
    message = mail.outbox[0].message()
    assert "\n" not in mail.outbox[0].subject and "\r" not in mail.outbox[0].subject
    assert message["Bcc"] is None and mail.outbox[0].recipients() == ["alice@example.com"]
    assert "PASS -> WARN" in mail.outbox[0].subject


@pytest.mark.django_db
@pytest.mark.parametrize("error", [BadHeaderError("header"), ConnectionRefusedError("no mail server")])
def test_a_mail_that_cannot_be_sent_does_not_undo_the_audit(worse_audit, monkeypatch, error):
    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(notifications, "send_mail", refuse)
    assert services.notify_worse_verdict(worse_audit) == 0
