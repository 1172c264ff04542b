"""auditsvc.client: its errors carry the server's status and message, waiting on an audit that ends badly
raises, and the command exits as contrib/release/audit-release.sh does. The command's whole run, beside the
script on one audit, is in tests/contrib/test_audit_release.py."""

from __future__ import annotations

import pytest

from auditsvc import client
from auditsvc.battery import Verdict
from auditsvc.client import AuditClient, AuditFailed, AuthenticationError, BadInput, RequestRefused
from auditsvc.stack import free_port


def command(url: str, gate_models, model: str, out, *more) -> list[str]:
    return ["audit", "--url", url, "--model", str(gate_models[model]), "--dataset", str(gate_models["probe"]),
            "--profile", "quick", "--poll-max", "2", "--out", str(out), *more]


@pytest.mark.integration
def test_the_servers_refusals_arrive_typed_with_its_message(service_stack, gate_models, tmp_path, monkeypatch,
                                                           capsys):
    stack = service_stack
    with pytest.raises(AuthenticationError) as refused:
        AuditClient(stack.url, "asv_" + "x" * 43).submit(gate_models["pass"], probes=gate_models["probe"])
    assert (refused.value.status, refused.value.message) == (401, "missing or invalid API token")
    broken = tmp_path / "model.json"
    broken.write_text('{"name": ')
    alice = AuditClient(stack.url, stack.tokens["alice"])
    with pytest.raises(RequestRefused) as invalid:
        alice.submit(gate_models["pass"], broken, gate_models["probe"])
    assert invalid.value.status == 400 and invalid.value.message.startswith("invalid input (meta: ")
    assert "not valid JSON" in " ".join(invalid.value.fields["meta"])
    with pytest.raises(RequestRefused) as unknown:
        alice.status(10**12)
    assert unknown.value.status == 404
    monkeypatch.setenv("AUDITSVC_TOKEN", "asv_" + "x" * 43)
    assert client.main(command(stack.url, gate_models, "pass", tmp_path / "out")) == 2
    assert capsys.readouterr().err == ("error: the server refused the token (401: missing or invalid API token); "
                                       "check AUDITSVC_TOKEN\n")


@pytest.mark.integration
def test_waiting_on_a_cancelled_audit_raises_audit_failed(service_stack, gate_models):
    alice = AuditClient(service_stack.url, service_stack.tokens["alice"])
    created = alice.submit(gate_models["pass"], probes=gate_models["probe"], profile="quick", seed=7)
    alice.cancel(created["id"])
    with pytest.raises(AuditFailed) as failed:
        alice.wait(created["id"], timeout=60, poll_max=1)
    assert failed.value.audit["status"] == "cancelled" and failed.value.exit_code == 1


def exit_code(argv: list[str]) -> int:
    try:
        return client.main(argv)
    except SystemExit as exited:   # argparse refuses the arguments (usage and a line, exit 2)
        return exited.code


def test_bad_input_and_an_unreachable_server_exit_like_the_script(gate_models, tmp_path, monkeypatch, capsys):
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AUDITSVC_TOKEN", "asv_" + "t" * 43)
    with pytest.raises(BadInput):
        AuditClient("ftp://example.com", "asv_t")
    assert exit_code(command(closed, gate_models, "pass", tmp_path / "o", "--fail-on", "maybe")) == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
    cases = [
        (["audit", "--url", closed, "--model", str(tmp_path / "absent.pt2"), "--dataset", str(gate_models["probe"]),
          "--out", str(tmp_path / "o")], 2, "absent.pt2 not found"),
        (command(closed, gate_models, "pass", tmp_path / "o"), 1, f"cannot reach {closed}"),
    ]
    for argv, code, text in cases:
        assert exit_code(argv) == code
        error = capsys.readouterr().err
        assert error.startswith("error: ") and text in error and error.count("\n") == 1, error
    monkeypatch.delenv("AUDITSVC_TOKEN")
    assert exit_code(command(closed, gate_models, "pass", tmp_path / "o")) == 2
    assert "AUDITSVC_TOKEN" in capsys.readouterr().err


def test_the_gate_orders_verdicts_as_the_audit_command_does():
    for verdict in ("pass", "warn", "fail", "", None, "unknown"):
        for level in ("warn", "fail"):
            assert client.verdict_reaches(verdict, level) == (Verdict.of(verdict) >= Verdict(level)), (verdict, level)
