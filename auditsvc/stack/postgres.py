"""A throwaway PostgreSQL server for the service tests: its own cluster in a temporary directory,
listening on a free loopback port with a random password, ended (and deleted) with the test session.

Production runs PostgreSQL (docker/compose.yaml); the tests run the service on it too. The server
is Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`, installed by `.ci/run`).
PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user (or `nobody`).
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .stack import free_port, wait_for

SUPERUSER = "auditsvc"


def find_binaries() -> Path:
    """The newest installed server's bin directory (pg_config or PATH as a fallback)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    if shutil.which("initdb") and shutil.which("postgres"):
        return Path(shutil.which("initdb")).parent
    raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                       "apt-get install postgresql (.ci/run does)")


def _account() -> pwd.struct_passwd | None:
    """Who runs the server: ourselves, or an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' account to run PostgreSQL as")


def _die_with_parent() -> None:
    """In the child: end the server (immediate shutdown) if the test process dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGQUIT)   # PR_SET_PDEATHSIG


class PostgresServer:
    def __init__(self, directory: Path | None = None):
        self.bin = find_binaries()
        self.account = _account()
        # As root the server's account must reach the folder: /tmp, not a private TMPDIR.
        self.directory = Path(directory or tempfile.mkdtemp(prefix="auditsvc-pg-", dir="/tmp" if self.account else None))
        self.data = self.directory / "data"
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None

    def _as_account(self) -> dict:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def start(self) -> "PostgresServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        if self.account is not None:
            for path in (self.directory, password_file):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        os.chmod(self.directory, 0o700)
        done = subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                               f"--pwfile={password_file}", "--auth=scram-sha-256", "-E", "UTF8",
                               "--locale=C", "--no-sync"],
                              capture_output=True, text=True, timeout=120, **self._as_account())
        password_file.unlink()
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
        log = open(self.directory / "postgres.log", "w")
        if self.account is not None:
            os.chown(self.directory / "postgres.log", self.account.pw_uid, self.account.pw_gid)
        # Durability is worth nothing in a throwaway cluster: no fsync, no full-page writes.
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.directory), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            **self._as_account())
        wait_for(self._ready, 60, "the PostgreSQL server")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited:\n{(self.directory / 'postgres.log').read_text()[-2000:]}")
        return subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                              timeout=10).returncode == 0

    def url(self, database: str = "auditsvc") -> str:
        return f"postgres://{SUPERUSER}:{quote(self.password)}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server; returns its DATABASE_URL."""
        import psycopg

        with psycopg.connect(self.url("postgres").replace("postgres://", "postgresql://", 1),
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)   # fast shutdown: disconnects clients
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


if __name__ == "__main__":   # python -m auditsvc.stack.postgres: start one by hand and print its URL
    server = PostgresServer().start()
    print(server.url(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
