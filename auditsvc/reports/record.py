"""report.pdf as a record: PDF/A-3b with findings.json embedded, the audit's hashes in its metadata,
and, when the organization's key is configured, a PAdES signature; plus the checks of `verify-report`.

    write_record(html_document, findings)   # WeasyPrint HTML + findings.json's exact bytes -> PDF/A-3b
    seal(pdf, findings, signer)             # checked against findings.json, then signed (incremental update)
    check_record(pdf)                       # metadata, embedded findings.json and first page agree?
    check_signatures(pdf, trust_roots)      # each signature: signer, intact, whole file, trusted

The metadata (document info and XMP alike) names the model's and the probe set's sha256, the verdict
and the sha256 of the embedded findings.json, so a swapped attachment shows even in an unsigned PDF.
The signature is applied by the process that holds the key (auditsvc.sandbox signs in the parent,
never in the sandboxed child); pyHanko appends it as an incremental update, so the PDF/A part stays
byte for byte as WeasyPrint wrote it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

FINDINGS_NAME = "findings.json"
PDF_VARIANT = "pdf/a-3b"
SIGNATURE_FIELD = "AuditRecord"
VERDICTS = ("pass", "warn", "fail")
RECORD_NS = "urn:auditsvc:record:1#"   # the XMP namespace of the record's properties
INFO_PREFIX = "Auditsvc"               # document info keys: /AuditsvcModelSHA256, ...

# (attribute of RecordFacts, metadata property name, description for the PDF/A extension schema)
PROPERTIES = (
    ("model_sha256", "ModelSHA256", "SHA-256 of the audited model file"),
    ("probe_set_sha256", "ProbeSetSHA256", "SHA-256 of the probe set the model was audited on"),
    ("verdict", "Verdict", "The audit's verdict: pass, warn or fail"),
    ("findings_sha256", "FindingsSHA256", "SHA-256 of the embedded findings.json"),
)

# PDF/A allows XMP properties of its own schemas only, or of schemas it is told about (ISO 19005-3, 6.6.2.3).
XMP_RECORD = """<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:pdfaExtension="http://www.aiim.org/pdfa/ns/extension/"
 xmlns:pdfaSchema="http://www.aiim.org/pdfa/ns/schema#" xmlns:pdfaProperty="http://www.aiim.org/pdfa/ns/property#">
<pdfaExtension:schemas><rdf:Bag><rdf:li rdf:parseType="Resource">
<pdfaSchema:schema>auditsvc audit record</pdfaSchema:schema>
<pdfaSchema:namespaceURI>{namespace}</pdfaSchema:namespaceURI>
<pdfaSchema:prefix>auditsvc</pdfaSchema:prefix>
<pdfaSchema:property><rdf:Seq>{properties}</rdf:Seq></pdfaSchema:property>
</rdf:li></rdf:Bag></pdfaExtension:schemas>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:auditsvc="{namespace}">{values}</rdf:Description>
</rdf:RDF>"""
XMP_PROPERTY = ('<rdf:li rdf:parseType="Resource"><pdfaProperty:name>{name}</pdfaProperty:name>'
                '<pdfaProperty:valueType>Text</pdfaProperty:valueType>'
                '<pdfaProperty:category>external</pdfaProperty:category>'
                '<pdfaProperty:description>{description}</pdfaProperty:description></rdf:li>')
PDFAID = "http://www.aiim.org/pdfa/ns/id/"
RDF_DESCRIPTION = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"


class RecordError(Exception):
    """The PDF is not a consistent record, or a record cannot be signed: one line for the user."""


@dataclass(frozen=True)
class RecordFacts:
    """What a record states in its metadata."""

    model_sha256: str
    probe_set_sha256: str
    verdict: str
    findings_sha256: str

    @classmethod
    def of_findings(cls, findings: bytes) -> "RecordFacts":
        data = json.loads(findings)
        return cls(data["model"]["sha256"], data["dataset"]["sha256"], data["verdict"], sha256(findings))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- writing ---------------------------------------------------------------------------------------

def write_record(html_document, findings: bytes) -> bytes:
    """The report (a weasyprint.HTML) as PDF/A-3b: findings.json embedded as its data, the facts in its metadata."""
    from weasyprint import Attachment

    facts = RecordFacts.of_findings(findings)
    document = html_document.render(output_intent="srgb")
    document.metadata.custom = {INFO_PREFIX + name: getattr(facts, attribute) for attribute, name, _ in PROPERTIES}
    document.metadata.xmp_metadata.append(_xmp(facts).encode("utf-8"))
    attachment = Attachment(string=findings, name=FINDINGS_NAME, relationship="Data",
                            description="The audit's findings (findings.json) this report shows")
    return document.write_pdf(pdf_variant=PDF_VARIANT, custom_metadata=True, attachments=[attachment],
                              finisher=_associated_files_once)


def _associated_files_once(document, pdf) -> None:
    """WeasyPrint 70 lists an embedded file twice in the catalog's associated files (/AF); once will do."""
    import pydyf

    if "AF" in pdf.catalog:
        pdf.catalog["AF"] = pydyf.Array(dict.fromkeys(pdf.catalog["AF"]))


def _xmp(facts: RecordFacts) -> str:
    properties = "".join(XMP_PROPERTY.format(name=name, description=escape(description))
                         for _, name, description in PROPERTIES)
    values = "".join(f"<auditsvc:{name}>{escape(str(getattr(facts, attribute)))}</auditsvc:{name}>"
                     for attribute, name, _ in PROPERTIES)
    return XMP_RECORD.format(namespace=RECORD_NS, properties=properties, values=values)


# --- signing ---------------------------------------------------------------------------------------

def configured_signer():
    """The organization's key from the settings REPORT_SIGNING_KEY (a PKCS#12 file) and
    REPORT_SIGNING_PASSWORD; None when no key is set or there are no Django settings."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        path, password = settings.REPORT_SIGNING_KEY, settings.REPORT_SIGNING_PASSWORD
    except (ImproperlyConfigured, AttributeError):
        return None
    return load_signer(Path(path), password) if path else None


def load_signer(path: Path, password: str):
    from pyhanko.sign.signers import SimpleSigner

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordError(f"the signing key {path} cannot be read ({exc.strerror or exc})") from None
    try:
        return SimpleSigner.load_pkcs12_data(data, other_certs=[], passphrase=password.encode() or None)
    except ValueError:
        raise RecordError(f"the signing key {path} is not a PKCS#12 file, or its password is wrong") from None


def seal(pdf: bytes, findings: bytes, signer) -> bytes:
    """report.pdf signed, once it is checked to be a consistent record of the findings.json written with it."""
    check = check_record(pdf)
    if check.problems:
        raise RecordError(f"report.pdf is not a consistent record: {check.problems[0]}")
    if check.facts.findings_sha256 != sha256(findings):
        raise RecordError("report.pdf embeds another findings.json than the one written with it")
    return sign_record(pdf, signer)


def sign_record(pdf: bytes, signer) -> bytes:
    """A PAdES signature (ETSI.CAdES.detached, certifying: no changes allowed) as an incremental update."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    # pyHanko otherwise rewrites the XMP packet and the producer on signing, and not the same way in
    # both (PDF/A wants them equal). Its maintainer's advice for leaving metadata alone: this override.
    writer._update_meta = lambda: None
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD, subfilter=fields.SigSeedSubFilter.PADES, md_algorithm="sha256",
        reason="auditsvc audit record", certify=True, docmdp_permissions=fields.MDPPerm.NO_CHANGES)
    output = io.BytesIO()
    signers.sign_pdf(writer, metadata, signer=signer, output=output)
    return output.getvalue()


# --- checking --------------------------------------------------------------------------------------

@dataclass
class RecordCheck:
    """What check_record found: the stated facts (None when unreadable) and what does not agree."""

    facts: RecordFacts | None = None
    pdfa: str = ""                   # the XMP's PDF/A identification, e.g. "3B"
    problems: list[str] = field(default_factory=list)


def check_record(pdf: bytes) -> RecordCheck:
    """The metadata's facts, the embedded findings.json and the verdict on the first page, checked to agree."""
    from pypdf import PdfReader

    check = RecordCheck()
    try:
        reader = PdfReader(io.BytesIO(pdf))
        check.pdfa = _pdfa_identification(reader)
        check.facts = _stated_facts(reader)
        findings = _embedded_findings(reader, check.facts)
        _check_findings_match(findings, check.facts)
        _check_visible_verdict(reader, check.facts.verdict)
    except RecordError as exc:
        check.problems.append(str(exc))
    except Exception as exc:   # a damaged file makes pypdf raise errors of many kinds
        check.problems.append(f"the PDF cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})")
    return check


def _xmp_root(reader) -> ElementTree.Element | None:
    metadata = reader.root_object.get("/Metadata")
    return ElementTree.fromstring(metadata.get_object().get_data()) if metadata is not None else None


def _pdfa_identification(reader) -> str:
    root = _xmp_root(reader)
    for description in root.iter(RDF_DESCRIPTION) if root is not None else ():
        part = description.get(f"{{{PDFAID}}}part") or description.findtext(f"{{{PDFAID}}}part")
        if part:
            return part + (description.get(f"{{{PDFAID}}}conformance")
                           or description.findtext(f"{{{PDFAID}}}conformance") or "")
    return ""


def _xmp_values(reader) -> dict[str, str]:
    root = _xmp_root(reader)
    prefix = "{" + RECORD_NS + "}"
    return {element.tag.removeprefix(prefix): (element.text or "").strip()
            for element in (root.iter() if root is not None else ()) if element.tag.startswith(prefix)}


def _stated_facts(reader) -> RecordFacts:
    info, xmp = reader.metadata or {}, _xmp_values(reader)
    values = {}
    for attribute, name, _ in PROPERTIES:
        in_info, in_xmp = info.get(f"/{INFO_PREFIX}{name}"), xmp.get(name)
        if in_info is None or in_xmp is None:
            raise RecordError(f"its metadata does not state {name} (not an auditsvc report record)")
        if str(in_info) != in_xmp:
            raise RecordError(f"its document info and its XMP metadata disagree on {name}")
        values[attribute] = in_xmp
    if values["verdict"] not in VERDICTS:
        raise RecordError(f"its metadata states no verdict of {', '.join(VERDICTS)}")
    return RecordFacts(**values)


def _embedded_findings(reader, facts: RecordFacts) -> dict:
    embedded = reader.attachments.get(FINDINGS_NAME, [])
    if len(embedded) != 1:
        raise RecordError(f"it embeds {len(embedded)} files named {FINDINGS_NAME}, not one")
    if sha256(embedded[0]) != facts.findings_sha256:
        raise RecordError(f"the embedded {FINDINGS_NAME} (sha256 {sha256(embedded[0])}) is not the one its "
                          f"metadata names (sha256 {facts.findings_sha256})")
    try:
        findings = json.loads(embedded[0])
    except ValueError:
        raise RecordError(f"the embedded {FINDINGS_NAME} is not JSON") from None
    if not isinstance(findings, dict):
        raise RecordError(f"the embedded {FINDINGS_NAME} is not a JSON object")
    return findings


def _check_findings_match(findings: dict, facts: RecordFacts) -> None:
    stated = {"verdict": findings.get("verdict"), "model sha256": (findings.get("model") or {}).get("sha256"),
              "probe set sha256": (findings.get("dataset") or {}).get("sha256")}
    expected = {"verdict": facts.verdict, "model sha256": facts.model_sha256,
                "probe set sha256": facts.probe_set_sha256}
    for what, value in stated.items():
        if value != expected[what]:
            raise RecordError(f"the embedded {FINDINGS_NAME} states {what} {value!r}, its metadata {expected[what]!r}")


def _check_visible_verdict(reader, verdict: str) -> None:
    """The first page states the verdict with its reason, "FAIL: ..." (severity badges in tables carry no
    colon): PASS, WARN or FAIL, one of them only. A user string that imitates it shows two verdicts and fails."""
    lines = [line.strip() for line in reader.pages[0].extract_text().splitlines()]
    shown = sorted({m.group(1) for line in lines if (m := re.search(r"(?:^|\s)(PASS|WARN|FAIL):\s", line))})
    if len(shown) != 1:
        raise RecordError(f"the first page shows {'no verdict' if not shown else 'verdicts ' + ' and '.join(shown)}")
    if shown[0] != verdict.upper():
        raise RecordError(f"the first page shows the verdict {shown[0]}, the embedded findings {verdict.upper()}")


@dataclass(frozen=True)
class SignatureCheck:
    """One signature: who signed, whether the signed bytes are unchanged, whether it covers the whole file."""

    signer: str
    intact: bool              # the signed bytes are unchanged and the signature is cryptographically valid
    whole_file: bool          # nothing was appended after signing
    trusted: bool | None      # whether the signer chains to a given trust anchor; None when none was given

    def problems(self) -> list[str]:
        found = []
        if not self.intact:
            found.append(f"the signature of \"{self.signer}\" does not match the signed bytes (changed after "
                         "signing)")
        if self.trusted is False:
            found.append(f"the signer \"{self.signer}\" is not trusted by the given certificates")
        return found

    def describe(self) -> str:
        trust = {None: "trust not checked", True: "signer trusted", False: "signer NOT trusted"}
        return (f"signed by \"{self.signer}\"; {'intact' if self.intact else 'NOT intact'}; "
                f"{'covers the whole file' if self.whole_file else 'does NOT cover the whole file'}; "
                f"{trust[self.trusted]}")


def check_signatures(pdf: bytes, trust_roots: list | None = None) -> list[SignatureCheck]:
    """Every signature in the PDF, validated offline; trust_roots: asn1crypto certificates, or None."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    for name in ("pyhanko", "pyhanko_certvalidator"):   # an untrusted signer is a result here, not a log line
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        signatures = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures
        statuses = [validate_pdf_signature(s, ValidationContext(trust_roots=trust_roots or [])) for s in signatures]
    except Exception as exc:   # pyHanko's errors on damaged files are of many kinds too
        raise RecordError(f"its signature cannot be validated ({type(exc).__name__}: {' '.join(str(exc).split())})"
                          ) from None
    return [_signature_check(status, trust_roots is not None) for status in statuses]


def signature_problems(signatures: list[SignatureCheck], required: bool) -> list[str]:
    """What is wrong with the signatures: any not intact or untrusted, the last not covering the whole file."""
    if not signatures:
        return ["it is not signed, and a signature is required"] if required else []
    problems = [problem for signature in signatures for problem in signature.problems()]
    if not signatures[-1].whole_file:
        problems.append("its signature does not cover the whole file (something was added after signing)")
    return problems


def _signature_check(status, trust_checked: bool) -> SignatureCheck:
    from pyhanko.sign.validation import SignatureCoverageLevel

    return SignatureCheck(signer=status.signing_cert.subject.human_friendly,
                          intact=bool(status.intact and status.valid),
                          whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
                          trusted=bool(status.trusted) if trust_checked else None)
