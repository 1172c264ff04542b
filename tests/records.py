"""Report records for tests: a small audit result, a throwaway signing key made at test time (nothing
secret is committed), and report PDFs altered the ways a forger would alter them."""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pypdf import PdfReader, PdfWriter

from auditsvc.battery.results import AuditResult, Finding, SectionResult, Table, verdict_of

MODEL_SHA256 = "a1" * 32
PROBE_SHA256 = "b2" * 32


def audit_result(severity: str = "fail") -> AuditResult:
    """A small audit result with one finding of `severity` (the verdict follows it, "info" passes)."""
    finding = Finding("bias.attribute", "bias", severity, "Accuracy differs with the site",
                      "Images from the north site are classified worse.", {"attribute": "site", "gap": 0.25},
                      blocks=[Table(["site", "accuracy"], [["north", "50%"], ["south", "75%"]], title="By site")])
    sections = [SectionResult("performance", "Performance", findings=[finding])]
    return AuditResult(
        model={"name": "tiny", "version": "1.0", "sha256": MODEL_SHA256, "format": "torch.export",
               "classes": ["a", "b"], "input": [3, 32, 32], "file": "model.pt2"},
        dataset={"sha256": PROBE_SHA256, "images": 8, "classes": ["a", "b"], "source": "probe", "attributes": ["site"],
                 "boxes": False},
        reference=None, verdict=verdict_of([finding], sections), metrics={"accuracy": 0.625, "groups": {}},
        findings=[finding], sections=sections,
        environment={"auditsvc": "0.1.0", "torch": "2", "device": "cpu", "seed": 0, "python": "3.11"},
        settings={"seed": 0}, created="2025-01-01T00:00:00+00:00")


@dataclass(frozen=True)
class SigningKey:
    p12: Path          # what AUDITSVC_SIGNING_KEY names
    password: str      # AUDITSVC_SIGNING_PASSWORD
    certificate: Path  # PEM, what verify-report --trust takes


def make_signing_key(directory: Path, organization: str = "Test Org", password: str = "test-password") -> SigningKey:
    """An EC key and a self-signed certificate valid for a day, as PKCS#12 and PEM files in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} report signing")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    p12, pem = directory / "signing.p12", directory / "signing.pem"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"report signing", key, certificate, None, serialization.BestAvailableEncryption(password.encode())))
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return SigningKey(p12, password, pem)


def with_changed_byte(pdf: bytes, offset: int) -> bytes:
    changed = bytearray(pdf)
    changed[offset] ^= 0x01
    return bytes(changed)


def with_swapped_findings(pdf: bytes, findings: bytes, incremental: bool = False) -> bytes:
    """The PDF re-written by pypdf with another findings.json in place of the embedded one (in a full
    rewrite, or appended as an incremental update that leaves the signed bytes as they were)."""
    reader = PdfReader(io.BytesIO(pdf))
    writer = PdfWriter(reader, incremental=True) if incremental else PdfWriter(clone_from=reader)
    names = writer.root_object["/Names"]["/EmbeddedFiles"]["/Names"]
    stream = names[1].get_object()["/EF"]["/F"].get_object()
    stream.set_data(findings)
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()
