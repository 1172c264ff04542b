"""report.pdf as a record: PDF/A-3b with findings.json inside and the audit's hashes in its metadata,
signed without disturbing either; and the checks that verify-report relies on.

veraPDF is not available here: what PDF/A-3b asks that can be checked is checked directly (the
identification, the output intent, the associated file, the XMP extension schema, document info and
XMP agreeing, embedded fonts)."""

import dataclasses
import hashlib
import io
import json
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest
from pyhanko.keys import load_certs_from_pemder
from pypdf import PdfReader

from auditsvc.battery.results import Verdict
from auditsvc.reports import record
from auditsvc.reports.jsonable import to_jsonable
from auditsvc.reports.render import render_html, render_pdf, report_data, write_report
from tests.records import (MODEL_SHA256, PROBE_SHA256, audit_result, make_signing_key, with_changed_byte,
                           with_swapped_findings)

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
PDFAID = "{http://www.aiim.org/pdfa/ns/id/}"
PDFA_SCHEMA = "{http://www.aiim.org/pdfa/ns/schema#}"
PDFA_PROPERTY = "{http://www.aiim.org/pdfa/ns/property#}"
XMP_PDF = "{http://ns.adobe.com/pdf/1.3/}"
DC = "{http://purl.org/dc/elements/1.1/}"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[bytes, bytes]:
    paths = write_report(audit_result("fail"), tmp_path_factory.mktemp("record"))
    return paths["pdf"].read_bytes(), paths["json"].read_bytes()


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return make_signing_key(tmp_path_factory.mktemp("key"))


@pytest.fixture(scope="module")
def signed(report, key) -> bytes:
    pdf, findings = report
    return record.seal(pdf, findings, record.load_signer(key.p12, key.password))


def _reader(pdf: bytes) -> PdfReader:
    return PdfReader(io.BytesIO(pdf))


def _xmp(pdf: bytes) -> ElementTree.Element:
    return ElementTree.fromstring(_reader(pdf).root_object["/Metadata"].get_object().get_data())


def _other_findings(findings: bytes) -> bytes:
    return findings.replace(b'"verdict": "fail"', b'"verdict": "pass"')


def test_findings_json_is_embedded_as_the_reports_data(report):
    pdf, findings = report
    reader = _reader(pdf)
    assert dict(reader.attachments) == {"findings.json": [findings]}
    (filespec,) = [spec.get_object() for spec in reader.root_object["/AF"]]   # the associated file
    assert filespec["/AFRelationship"] == "/Data" and filespec["/UF"] == "findings.json"
    embedded = filespec["/EF"]["/F"].get_object()
    assert embedded["/Subtype"] == "/application/json" and "/ModDate" in embedded["/Params"]
    assert embedded.get_data() == findings


def test_the_metadata_states_the_hashes_and_the_verdict(report):
    pdf, findings = report
    expected = {"ModelSHA256": MODEL_SHA256, "ProbeSetSHA256": PROBE_SHA256, "Verdict": "fail",
                "FindingsSHA256": hashlib.sha256(findings).hexdigest()}
    info = _reader(pdf).metadata
    assert {name: info[f"/Auditsvc{name}"] for name in expected} == expected
    namespace = "{" + record.RECORD_NS + "}"
    xmp = {e.tag.removeprefix(namespace): e.text for e in _xmp(pdf).iter() if e.tag.startswith(namespace)}
    assert xmp == expected


def test_the_pdf_identifies_as_pdfa_3b_with_an_srgb_output_intent(report):
    pdf, _ = report
    reader = _reader(pdf)
    assert pdf.startswith(b"%PDF-1.7") and "/ID" in reader.trailer
    identified = [(d.get(PDFAID + "part"), d.get(PDFAID + "conformance"))
                  for d in _xmp(pdf).iter(RDF + "Description") if d.get(PDFAID + "part")]
    assert identified == [("3", "B")]
    (intent,) = [i.get_object() for i in reader.root_object["/OutputIntents"]]
    profile = intent["/DestOutputProfile"].get_object()
    assert intent["/S"] == "/GTS_PDFA1" and profile["/N"] == 3
    assert profile.get_data()[36:40] == b"acsp"   # an ICC profile


def test_the_xmp_declares_the_records_properties_for_pdfa(report):
    pdf, _ = report
    xmp = _xmp(pdf)
    (schema,) = [li for li in xmp.iter(RDF + "li") if li.findtext(PDFA_SCHEMA + "namespaceURI") == record.RECORD_NS]
    assert schema.findtext(PDFA_SCHEMA + "prefix") == "auditsvc"
    assert f'xmlns:auditsvc="{record.RECORD_NS}"'.encode() in _reader(pdf).root_object["/Metadata"].get_data()
    declared = {name.text for name in schema.iter(PDFA_PROPERTY + "name")}
    used = {e.tag.split("}")[1] for e in xmp.iter() if e.tag.startswith("{" + record.RECORD_NS + "}")}
    assert used == declared == {name for _, name, _ in record.PROPERTIES}


@pytest.mark.parametrize("which", ["report", "signed"])
def test_document_info_and_xmp_agree(request, which):
    pdf = request.getfixturevalue(which)
    pdf = pdf[0] if which == "report" else pdf
    info, xmp = _reader(pdf).metadata, _xmp(pdf)
    producers = [d.get(XMP_PDF + "Producer") for d in xmp.iter(RDF + "Description") if d.get(XMP_PDF + "Producer")]
    assert producers == [info.producer]
    assert [li.text for li in xmp.iter(RDF + "li") if li.get("{http://www.w3.org/XML/1998/namespace}lang")] \
        == [info.title]


def test_every_font_is_embedded(report, tmp_path):
    pdf, _ = report
    (tmp_path / "report.pdf").write_bytes(pdf)
    listing = subprocess.run(["pdffonts", str(tmp_path / "report.pdf")], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    column = listing[0].index("emb")
    assert listing[2:] and all(line[column:column + 3] == "yes" for line in listing[2:])


def test_an_untouched_record_checks_out(report):
    pdf, findings = report
    check = record.check_record(pdf)
    assert check.problems == [] and check.pdfa == "3B"
    assert check.facts == record.RecordFacts(MODEL_SHA256, PROBE_SHA256, "fail", hashlib.sha256(findings).hexdigest())
    assert record.check_signatures(pdf) == []


def test_signing_appends_and_leaves_the_pdfa_part_as_it_was(report, signed):
    pdf, _ = report
    assert signed.startswith(pdf)   # an incremental update
    before, after = _reader(pdf), _reader(signed)
    assert after.root_object["/Metadata"].get_object().get_data() == \
        before.root_object["/Metadata"].get_object().get_data()
    assert dict(after.metadata) == dict(before.metadata)
    (field,) = [f.get_object() for f in after.root_object["/AcroForm"]["/Fields"]]
    assert field["/FT"] == "/Sig" and field["/F"] & 4 and not field["/F"] & 2   # PDF/A: printable, not hidden
    assert [float(x) for x in field["/Rect"]] == [0, 0, 0, 0]                    # invisible: no appearance needed
    assert record.check_record(signed).problems == []


def test_a_signed_record_is_intact_covers_the_file_and_is_trusted_by_its_certificate(signed, key):
    trusted = list(load_certs_from_pemder([str(key.certificate)]))
    (signature,) = record.check_signatures(signed, trusted)
    assert signature.intact and signature.whole_file and signature.trusted
    assert "Test Org report signing" in signature.signer
    assert record.signature_problems([signature], required=True) == []


def test_one_changed_byte_breaks_the_signature(report, signed):
    pdf, _ = report
    (signature,) = record.check_signatures(with_changed_byte(signed, len(pdf) // 2))   # inside the signed range
    assert not signature.intact
    assert "does not match the signed bytes" in record.signature_problems([signature], required=False)[0]


def test_a_swapped_attachment_shows_without_a_signature(report):
    pdf, findings = report
    problems = record.check_record(with_swapped_findings(pdf, _other_findings(findings))).problems
    assert len(problems) == 1 and "is not the one its metadata names" in problems[0]


def test_an_update_appended_after_signing_shows(report, signed):
    _, findings = report
    forged = with_swapped_findings(signed, _other_findings(findings), incremental=True)
    (signature,) = record.check_signatures(forged)
    assert signature.intact and not signature.whole_file   # the signed bytes are all still there
    assert record.signature_problems([signature], required=False) == [
        "its signature does not cover the whole file (something was added after signing)"]


def test_a_first_page_showing_another_verdict_shows():
    result = audit_result("fail")
    findings = json.dumps(to_jsonable(result.findings_json())).encode()
    shown_as_pass = render_html(report_data(dataclasses.replace(result, verdict=Verdict.PASS)))
    assert record.check_record(render_pdf(shown_as_pass, findings)).problems == [
        "the first page shows the verdict PASS, the embedded findings FAIL"]


def test_only_a_record_of_the_findings_written_with_it_is_signed(report, key):
    pdf, findings = report
    signer = record.load_signer(key.p12, key.password)
    with pytest.raises(record.RecordError, match="embeds another findings.json"):
        record.seal(pdf, _other_findings(findings), signer)
    with pytest.raises(record.RecordError, match="not a consistent record"):
        record.seal(with_swapped_findings(pdf, _other_findings(findings)), findings, signer)


def test_a_bad_signing_key_is_refused_in_one_line(key, tmp_path):
    with pytest.raises(record.RecordError, match="not a PKCS#12 file, or its password is wrong"):
        record.load_signer(key.p12, "wrong")
    with pytest.raises(record.RecordError, match="cannot be read"):
        record.load_signer(tmp_path / "none.p12", "")


def test_the_signing_key_comes_from_the_settings(settings, key):
    settings.REPORT_SIGNING_KEY, settings.REPORT_SIGNING_PASSWORD = str(key.p12), key.password
    assert "Test Org" in record.configured_signer().signing_cert.subject.human_friendly
    settings.REPORT_SIGNING_KEY = ""
    assert record.configured_signer() is None
