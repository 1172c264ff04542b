"""python manage.py verify-report report.pdf [--trust cert.pem] [--require-signature]: check a report record.

Prints what the record states (the model's and the probe set's sha256, the verdict, the sha256 of the
embedded findings.json) and its signature. Checks that the metadata, the embedded findings.json and the
verdict on the first page agree; if the PDF is signed, that the signature is intact and covers the
whole file; with --trust, that the signer chains to one of the given certificates. Exit 0 when all of
that holds, 1 with one line when verification failed, 2 with one line for bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from auditsvc.battery import BadInput
from auditsvc.reports import record

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class Command(BaseCommand):
    help = "Verify a report.pdf: its embedded findings.json, metadata, visible verdict and signature."

    def add_arguments(self, parser):
        parser.add_argument("pdf", type=Path, help="the report.pdf to verify")
        parser.add_argument("--trust", type=Path, action="append", default=[],
                            help="certificate (PEM or DER) of the signer or its CA; may be repeated")
        parser.add_argument("--require-signature", action="store_true", help="fail when the PDF is not signed")

    def handle(self, *args, **options):
        try:
            pdf = read_pdf(options["pdf"])
            trust_roots = load_trust_roots(options["trust"]) if options["trust"] else None
        except BadInput as exc:
            self._exit(EXIT_BAD_INPUT, str(exc))
        check = record.check_record(pdf)
        try:
            signatures = record.check_signatures(pdf, trust_roots)
            problems = record.signature_problems(signatures, options["require_signature"])
        except record.RecordError as exc:
            signatures, problems = [], [str(exc)]
        self._show(options["pdf"], check, signatures)
        problems += check.problems
        if problems:
            self._exit(EXIT_FAILED, f"verification failed: {'; '.join(problems)}")
        self.stdout.write("verified")

    def _show(self, path: Path, check: record.RecordCheck, signatures: list[record.SignatureCheck]) -> None:
        self.stdout.write(f"report:           {path}" + (f" (PDF/A-{check.pdfa})" if check.pdfa else ""))
        if check.facts is not None:
            self.stdout.write(f"model sha256:     {check.facts.model_sha256}")
            self.stdout.write(f"probe set sha256: {check.facts.probe_set_sha256}")
            self.stdout.write(f"verdict:          {check.facts.verdict.upper()}")
            self.stdout.write(f"findings sha256:  {check.facts.findings_sha256}")
        for signature in signatures:
            self.stdout.write(f"signature:        {signature.describe()}")
        if not signatures:
            self.stdout.write("signature:        not signed")

    def _exit(self, code: int, message: str) -> None:
        sys.stderr.write(f"error: {' '.join(message.split())}\n")
        sys.exit(code)


def read_pdf(path: Path) -> bytes:
    if not path.exists():
        raise BadInput(f"{path} not found")
    if not path.is_file():
        raise BadInput(f"{path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not data.startswith(b"%PDF-"):
        raise BadInput(f"{path} is not a PDF")
    return data


def load_trust_roots(paths: list[Path]) -> list:
    from pyhanko.keys import load_certs_from_pemder

    roots = []
    for path in paths:
        if not path.is_file():
            raise BadInput(f"--trust {path} not found")
        try:
            roots += list(load_certs_from_pemder([str(path)]))
        except Exception:   # asn1crypto and the PEM reader raise several kinds on a file that is no certificate
            raise BadInput(f"--trust {path} is not a PEM or DER certificate") from None
        if not roots:
            raise BadInput(f"--trust {path} holds no certificate")
    return roots
