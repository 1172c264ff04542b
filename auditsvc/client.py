"""A client of auditsvc's REST API for release pipelines: submit a model, wait for the verdict, download the
report, gate on the verdict. Standard library only and self-contained: import it from the installed package,
or copy this one file into a pipeline that does not install auditsvc.

    client = AuditClient("https://audits.example.com", os.environ["AUDITSVC_TOKEN"])
    audit = client.submit("model.pt2", "model.json", "probe.zip", profile="quick", release_tag="v1.4.0")
    audit = client.wait(audit["id"], timeout=3600)            # the finished audit; AuditFailed otherwise
    client.download(audit["id"], "report.pdf", "out/")

    AUDITSVC_TOKEN=asv_... python -m auditsvc.client audit --url URL --model model.pt2 --dataset probe.zip \\
        --out out/ --fail-on fail

The command's exit codes are those of `manage.py audit` and contrib/release/audit-release.sh: 0; 3 when the
verdict is at or above --fail-on; 2 for bad input (arguments, files, the token, a request the server refused);
1 when the audit could not run or finish (server unreachable or failing, the audit failed or was cancelled,
the timeout passed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_VERDICT = 3
VERDICTS = ("pass", "warn", "fail")          # in order; an unknown verdict counts as pass, as in the service
FINISHED = ("done", "failed", "cancelled")
DOWNLOADS = ("report.pdf", "findings.json")
RETRIED_STATUSES = (502, 503, 504)           # a restarting server or proxy
RETRIES = 4


class ClientError(Exception):
    """Anything that stops a pipeline step; `exit_code` is what the command exits with."""

    exit_code = EXIT_FAILED


class BadInput(ClientError):
    """Refused before anything was sent: an argument, a file, the token."""

    exit_code = EXIT_BAD_INPUT


class ApiError(ClientError):
    """The server answered with an error: its HTTP status, its message and its per-field messages."""

    def __init__(self, status: int, message: str, fields: dict | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.fields = status, message, fields or {}


class AuthenticationError(ApiError):
    """401: the token is missing, wrong or revoked."""

    exit_code = EXIT_BAD_INPUT


class RequestRefused(ApiError):
    """400, 404, 409, 413...: the request itself was refused (an invalid upload, an unknown id)."""

    exit_code = EXIT_BAD_INPUT


class ServerError(ApiError):
    """5xx: the server failed."""


class Unreachable(ClientError):
    """No answer from the API: the connection failed or timed out, or the answer was not the API's."""


class AuditFailed(ClientError):
    """The audit ended as failed or cancelled; `audit` is its last status."""

    def __init__(self, audit: dict):
        message = f": {audit['message']}" if audit.get("message") else ""
        super().__init__(f"audit {audit['id']} {audit['status']}{message}")
        self.audit = audit


class WaitTimeout(ClientError):
    """The audit did not finish in time; it goes on on the server."""

    def __init__(self, audit: dict, timeout: float):
        super().__init__(f"audit {audit['id']} has not finished after {timeout:.0f} s "
                         f"(it goes on: {audit.get('links', {}).get('portal', '')})")
        self.audit = audit


def verdict_reaches(verdict: str | None, level: str) -> bool:
    """Whether `verdict` is at or above `level` (pass < warn < fail)."""
    rank = {name: index for index, name in enumerate(VERDICTS)}
    return rank.get(verdict or "", 0) >= rank[level]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token elsewhere (urllib keeps Authorization): it stays an error answer."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class AuditClient:
    def __init__(self, url: str, token: str, request_timeout: float = 600):
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"the server's address must start with http:// or https://, not {url[:60]!r}")
        if not token:
            raise BadInput("no API token: set AUDITSVC_TOKEN (create one on the portal's API tokens page)")
        if not token.isprintable() or " " in token:
            raise BadInput("the API token holds characters no token has")
        self.url, self.request_timeout = url.rstrip("/"), request_timeout
        self._authorization = f"Token {token}"
        self._opener = urllib.request.build_opener(_NoRedirects)

    # --- the steps of a pipeline ---------------------------------------------------------------

    def submit(self, model: str | Path, meta: str | Path | None = None, probes: str | Path | None = None, *,
               probe_set: int | None = None, profile: str | None = None, release_tag: str | None = None,
               seed: int | None = None, priority: str | None = None) -> dict:
        """Upload a model (its model.json beside it unless given) and a probe set zip, or name a stored probe set
        by id, and start an audit (`priority`: release, interactive or scheduled; the server's default is
        interactive). Returns the audit's status; `existing` is true when an identical audit was already queued
        or running (that one is returned)."""
        model = Path(model)
        files = {"model": model, "meta": Path(meta) if meta else model.with_name("model.json")}
        if probes is not None:
            files["dataset"] = Path(probes)
        for name, path in files.items():
            if not path.is_file():
                raise BadInput(f"{name} file {path} not found")
        fields = {"probe_set": probe_set, "profile": profile, "release_tag": release_tag, "seed": seed,
                  "priority": priority}
        content_type, length, body = _multipart({k: str(v) for k, v in fields.items() if v is not None}, files)
        with self._send("POST", "/api/v1/audits", body=body,
                        headers={"Content-Type": content_type, "Content-Length": str(length)}) as response:
            return _json(response)

    def status(self, audit_id: int) -> dict:
        with self._send("GET", f"/api/v1/audits/{int(audit_id)}", retries=RETRIES) as response:
            return _json(response)

    def wait(self, audit_id: int, timeout: float = 3600, poll_max: float = 30,
             progress: Callable[[dict], None] | None = None) -> dict:
        """Polls, with the pause doubling from 1 s up to `poll_max`, until the audit is done; returns its status.
        Raises AuditFailed when it failed or was cancelled, WaitTimeout after `timeout` seconds."""
        deadline, delay = time.monotonic() + timeout, 1.0
        while True:
            audit = self.status(audit_id)
            if audit["status"] == "done":
                return audit
            if audit["status"] in FINISHED:
                raise AuditFailed(audit)
            if progress:
                progress(audit)
            if time.monotonic() + delay > deadline:
                raise WaitTimeout(audit, timeout)
            time.sleep(delay)
            delay = min(delay * 2, poll_max)

    def download(self, audit_id: int, name: str, dest: str | Path) -> Path:
        """Saves report.pdf or findings.json of a finished audit to `dest` (a file, or a folder to put `name` in);
        a failed download leaves no partial file."""
        if name not in DOWNLOADS:
            raise ValueError(f"name must be one of {', '.join(DOWNLOADS)}")
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / name
        with self._send("GET", f"/api/v1/audits/{int(audit_id)}/{name}", retries=RETRIES) as response, \
                tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as partial:
            try:
                while chunk := response.read(1 << 20):
                    partial.write(chunk)
            except (OSError, http.client.HTTPException) as error:
                partial.close()
                os.unlink(partial.name)
                raise Unreachable(f"the download of {name} broke off: {error}") from None
        os.replace(partial.name, dest)
        return dest

    def cancel(self, audit_id: int) -> dict:
        with self._send("POST", f"/api/v1/audits/{int(audit_id)}/cancel") as response:
            return _json(response)

    # --- HTTP ------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, body=None, headers: dict | None = None, retries: int = 0):
        """The open response of a 2xx answer; otherwise the error the answer calls for. GETs are retried when
        the server cannot be reached or answers 502/503/504."""
        for attempt in range(retries + 1):
            request = urllib.request.Request(self.url + path, data=body, method=method,
                                             headers={"Authorization": self._authorization, **(headers or {})})
            try:
                response = self._opener.open(request, timeout=self.request_timeout)
            except urllib.error.HTTPError as answer:
                if 300 <= answer.code < 400:   # not followed: a redirect would carry the token elsewhere
                    raise Unreachable(f"unexpected answer from {self.url} (HTTP {answer.code}): is it the "
                                      "service's address?") from None
                with answer:
                    error = _api_error(answer)
                if not (isinstance(error, ServerError) and error.status in RETRIED_STATUSES and attempt < retries):
                    raise error from None
            except (urllib.error.URLError, OSError) as failure:
                reason = getattr(failure, "reason", failure)
                if attempt == retries:
                    raise Unreachable(f"cannot reach {self.url}: {reason}") from None
            else:
                return response
            time.sleep(2 ** attempt)
        raise AssertionError("unreachable")


def _api_error(answer: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(answer.read(1 << 20))
        message, fields = body["error"], body.get("fields") or {}
        if not isinstance(message, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, OSError):
        message, fields = f"HTTP {answer.code}, an answer that is not the API's JSON", {}
    if answer.code == 401:
        return AuthenticationError(401, message, fields)
    if answer.code < 500:
        return RequestRefused(answer.code, message, fields)
    return ServerError(answer.code, message, fields)


def _json(response) -> dict:
    with response:
        try:
            body = json.loads(response.read())
        except ValueError:
            raise Unreachable(f"the answer from {response.url} is not the API's JSON") from None
    if not isinstance(body, dict):
        raise Unreachable(f"the answer from {response.url} is not the API's JSON")
    return body


def _multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[str, int, Iterator[bytes]]:
    """multipart/form-data streamed from the files (a model can be large): content type, length, chunks."""
    boundary = f"auditsvc-{secrets.token_hex(16)}"
    parts: list[bytes | Path] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                     + value.encode() + b"\r\n")
    for name, path in files.items():
        filename = path.name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode(), path, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    length = sum(part.stat().st_size if isinstance(part, Path) else len(part) for part in parts)

    def chunks() -> Iterator[bytes]:
        for part in parts:
            if isinstance(part, bytes):
                yield part
                continue
            with part.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    yield chunk

    return f"multipart/form-data; boundary={boundary}", length, chunks()


# --- the command ---------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m auditsvc.client",
                                     description="auditsvc's REST API for release pipelines. The token comes "
                                                 "from AUDITSVC_TOKEN only.")
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="upload a model, wait for the verdict, download the report, gate")
    audit.add_argument("--url", default=os.environ.get("AUDITSVC_URL"), help="the service (default: $AUDITSVC_URL)")
    audit.add_argument("--model", required=True, type=Path, help="model.pt2 (torch.export) or TorchScript .pt/.ts")
    audit.add_argument("--meta", type=Path, help="model.json (default: beside the model)")
    probes = audit.add_mutually_exclusive_group(required=True)
    probes.add_argument("--dataset", type=Path, help="the probe set as a zip, uploaded")
    probes.add_argument("--probe-set", type=int, help="or the id of a probe set stored on the server")
    audit.add_argument("--out", required=True, type=Path, help="directory for report.pdf and findings.json")
    audit.add_argument("--profile", choices=["full", "quick"])
    audit.add_argument("--release-tag", help="the release the model ships in, e.g. the git tag")
    audit.add_argument("--priority", choices=["release", "interactive", "scheduled"], default="release",
                       help="release (default: a release gate starts before interactive audits and scheduled "
                            "re-audits), interactive or scheduled")
    audit.add_argument("--fail-on", choices=["warn", "fail"], help="exit 3 when the verdict is at or above this")
    audit.add_argument("--seed", type=int)
    audit.add_argument("--timeout", type=float, default=3600,
                       help="stop waiting for the verdict after this many seconds (exit 1); the audit goes on")
    audit.add_argument("--poll-max", type=float, default=30, help="longest wait between two status requests")
    return parser


def _progress_printer() -> Callable[[dict], None]:
    shown = None

    def show(audit: dict) -> None:
        nonlocal shown
        line = f"{audit['status']}: {audit.get('stage') or ''}"
        if audit["status"] == "queued" and audit.get("queue_position"):
            line = f"queued, {audit['queue_position']} ahead"
        if line != shown:
            print(f"[{int(audit['progress'] * 100):3d}%] {line}", file=sys.stderr)
            shown = line

    return show


def _github(audit: dict, verdict: str, report_url: str) -> None:
    """In GitHub Actions: step outputs for later steps, and the verdict on the run's summary page."""
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as out:
            out.write(f"audit-id={audit['id']}\nverdict={verdict}\nreport-url={report_url}\n")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
            summary.write(f"### Model audit: {verdict.upper()}\n\n[Audit {audit['id']}]({report_url})\n")


def audit_command(options: argparse.Namespace) -> int:
    if not options.url:
        raise BadInput("no server: give --url or set AUDITSVC_URL")
    try:
        options.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"--out {options.out} cannot be created ({error.strerror or error})") from None
    client = AuditClient(options.url, os.environ.get("AUDITSVC_TOKEN", ""))
    created = client.submit(options.model, options.meta, options.dataset, probe_set=options.probe_set,
                            profile=options.profile, release_tag=options.release_tag, seed=options.seed,
                            priority=options.priority)
    following = "an identical audit was already queued or running; following it" if created.get("existing") \
        else "queued"
    print(f"audit {created['id']}: {following} ({created['links']['portal']})", file=sys.stderr)
    audit = client.wait(created["id"], options.timeout, options.poll_max, progress=_progress_printer())
    paths = [client.download(audit["id"], name, options.out) for name in DOWNLOADS]
    findings = json.loads(paths[1].read_text())
    verdict = audit.get("verdict") or "pass"
    report_url = audit["links"].get("report", audit["links"]["portal"])
    print(f"verdict: {verdict.upper()} ({len(findings['findings'])} findings)")
    for line in (report_url, *paths):
        print(f"  {line}")
    _github(audit, verdict, report_url)
    return EXIT_VERDICT if options.fail_on and verdict_reaches(verdict, options.fail_on) else 0


def _message(error: ClientError) -> str:
    if isinstance(error, AuthenticationError):
        return f"the server refused the token ({error}); check AUDITSVC_TOKEN"
    if isinstance(error, RequestRefused) and error.status in (400, 413):
        return f"the server refused the upload ({error})"
    if isinstance(error, RequestRefused):
        return f"the server refused the request ({error})"
    if isinstance(error, ServerError):
        return f"the server failed ({error})"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        return audit_command(options)
    except ClientError as error:
        print(f"error: {' '.join(_message(error).split())}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
