"""`python manage.py verify-report`: an untouched record verifies (exit 0) and its hashes are printed; a
changed or forged one fails with one line (exit 1); bad input is refused with one line (exit 2)."""

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from auditsvc.battery.results import Verdict
from auditsvc.reports import record
from auditsvc.reports.render import render_html, render_pdf, report_data, write_report
from tests.records import audit_result, make_signing_key, with_changed_byte, with_swapped_findings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("verify")
    result = audit_result("warn")
    paths = write_report(result, folder / "out")
    pdf, findings = paths["pdf"].read_bytes(), paths["json"].read_bytes()
    key, stranger = make_signing_key(folder / "key"), make_signing_key(folder / "stranger", "Someone Else")
    signed = record.seal(pdf, findings, record.load_signer(key.p12, key.password))
    other = findings.replace(b'"verdict": "warn"', b'"verdict": "pass"')
    files = {
        "unsigned": pdf,
        "signed": signed,
        "changed byte": with_changed_byte(signed, len(pdf) // 2),
        "swapped": with_swapped_findings(signed, other),
        "swapped unsigned": with_swapped_findings(pdf, other),
        "appended": with_swapped_findings(signed, other, incremental=True),
        "other verdict shown": render_pdf(render_html(report_data(dataclasses.replace(result, verdict=Verdict.PASS))),
                                          findings),
    }
    for name, data in files.items():
        (folder / f"{name.replace(' ', '-')}.pdf").write_bytes(data)
    return {"pdf": {name: folder / f"{name.replace(' ', '-')}.pdf" for name in files}, "key": key,
            "stranger": stranger, "findings": findings, "folder": folder}


def verify(capsys, *args) -> tuple[int, str, str]:
    try:
        call_command("verify-report", *map(str, args))
        code = 0
    except SystemExit as exited:
        code = exited.code
    out, err = capsys.readouterr()
    return code, out, err


def test_an_untouched_signed_record_verifies_and_shows_what_it_states(records, capsys):
    code, out, err = verify(capsys, records["pdf"]["signed"], "--trust", records["key"].certificate,
                            "--require-signature")
    assert (code, err) == (0, "")
    findings = json.loads(records["findings"])
    assert f"model sha256:     {findings['model']['sha256']}\n" in out
    assert f"probe set sha256: {findings['dataset']['sha256']}\n" in out
    assert "verdict:          WARN\n" in out
    assert f"findings sha256:  {hashlib.sha256(records['findings']).hexdigest()}\n" in out
    assert '; intact; covers the whole file; signer trusted\n' in out and "Test Org report signing" in out
    assert "(PDF/A-3B)" in out and out.endswith("verified\n")


def test_an_unsigned_record_verifies_unless_a_signature_is_required(records, capsys):
    code, out, _ = verify(capsys, records["pdf"]["unsigned"])
    assert code == 0 and "signature:        not signed\n" in out and out.endswith("verified\n")
    code, _, err = verify(capsys, records["pdf"]["unsigned"], "--require-signature")
    assert code == 1 and err == "error: verification failed: it is not signed, and a signature is required\n"


@pytest.mark.parametrize("name, reason", [
    ("changed byte", "does not match the signed bytes (changed after signing)"),
    ("swapped", "is not the one its metadata names"),
    ("swapped unsigned", "is not the one its metadata names"),
    ("appended", "its signature does not cover the whole file"),
    ("other verdict shown", "the first page shows the verdict PASS, the embedded findings WARN"),
])
def test_a_changed_or_forged_record_fails_in_one_line(records, capsys, name, reason):
    code, out, err = verify(capsys, records["pdf"][name])
    assert code == 1
    assert err.startswith("error: verification failed: ") and err.count("\n") == 1 and reason in err
    assert "verified" not in out


def test_a_signer_the_given_certificates_do_not_trust_fails(records, capsys):
    code, out, err = verify(capsys, records["pdf"]["signed"], "--trust", records["stranger"].certificate)
    assert code == 1 and "signer NOT trusted" in out and "is not trusted by the given certificates" in err


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"), ("folder", "is not a file"), ("text", "is not a PDF"),
    ("bad trust", "is not a PEM or DER certificate"), ("missing trust", "--trust"),
])
def test_bad_input_is_refused_in_one_line(records, capsys, case, message):
    folder = records["folder"]
    (folder / "notes.txt").write_text("not a pdf")
    args = {"missing": [folder / "none.pdf"], "folder": [folder], "text": [folder / "notes.txt"],
            "bad trust": [records["pdf"]["signed"], "--trust", folder / "notes.txt"],
            "missing trust": [records["pdf"]["signed"], "--trust", folder / "none.pem"]}[case]
    code, _, err = verify(capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_verify_report_runs_as_a_command(records):
    done = subprocess.run([sys.executable, "manage.py", "verify-report", str(records["pdf"]["signed"]), "--trust",
                           str(records["key"].certificate)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("verified\n") and done.stderr == ""
