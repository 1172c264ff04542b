"""A real service stack for the integration tests and bench/soak.py: redis-server, the Django web
server, Celery workers (and beat) as separate processes on loopback, sharing a PostgreSQL database
(DATABASE_URL; SQLite in the stack's folder without one) and a media folder; or (SplitStack) each in a
folder of its own, sharing a bucket of an S3 server instead. `workers` Celery workers of one process
each (the dispatcher is told as many slots); `env` overrides the stack's environment; `persistent_redis`
keeps the broker's data over a restart, as production does (docker/compose.yaml runs Redis with an
append-only file)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    first_workers = 1

    def __init__(self, directory: Path, database_url: str | None = None, env: dict[str, str] | None = None,
                 persistent_redis: bool = False, workers: int | None = None):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (.ci/run does)")
        self.directory = directory
        self.redis_port, self.web_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "auditsvc.settings", "DJANGO_DEBUG": "1",
                    # long enough to be caught mid-way by the tests that kill a worker, short enough to be quick
                    "AUDITSVC_SECTIONS": "summary,performance,shortcuts,looking,saliency",
                    "AUDITSVC_VAR": str(directory), "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                    "AUDITSVC_STALE_AFTER": "5", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "AUDITSVC_MAX_MODEL_MB": "64",   # test models are small; an oversized one stays cheap to send
                    "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                    "DJANGO_EMAIL_FILE_PATH": str(directory / "mail"),
                    "AUDITSVC_DB_CONN_MAX_AGE": "0"}   # runserver: a thread per request, see settings
        self.worker_count = workers or self.first_workers
        self.env["AUDITSVC_WORKER_SLOTS"] = str(self.worker_count)
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.persistent_redis = persistent_redis
        self.processes: dict[str, subprocess.Popen] = {}
        self.workers = 0

    def process_env(self, name: str) -> dict[str, str]:
        """The environment of the process `name` ("web", "worker1", ...; "manage" for manage.py commands)."""
        return self.env

    def process_cwd(self, name: str) -> Path:
        return ROOT

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=self.process_cwd("manage"),
                              env=self.process_env("manage"), capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout.strip()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.directory / f"{name}.log", "a")   # a restarted process's log goes on
        process = subprocess.Popen(command, cwd=self.process_cwd(name), env=self.process_env(name), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def start(self) -> "Stack":
        self.start_redis()
        self.manage("migrate", "--noinput")
        self.tokens = {
            "alice": self.manage("bootstrap", "--organization", "Acme", "--username", "alice",
                                 "--password", "alice-password-1", "--email", "alice@example.com", "--token"),
            "bob": self.manage("bootstrap", "--organization", "Globex", "--username", "bob",
                               "--password", "bob-password-1", "--token"),
        }
        self._spawn("web", [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{self.web_port}", "--noreload"])
        wait_for(lambda: _port_open(self.web_port), 60, "the web server")
        self.start_workers(self.worker_count)
        return self

    def start_redis(self) -> subprocess.Popen:
        persistence = (["--appendonly", "yes", "--dir", str(self.directory)]
                       if self.persistent_redis else ["--appendonly", "no"])
        process = self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                        "--save", "", *persistence])
        wait_for(lambda: _port_open(self.redis_port), 20, "redis-server")
        return process

    def restart_redis(self) -> None:
        """Stop redis-server as an operator would (SIGTERM: it writes what it holds, when persistent), start it
        again."""
        process = self.processes.pop("redis")
        process.terminate()
        process.wait(30)
        self.start_redis()

    def start_beat(self) -> subprocess.Popen:
        """Celery beat with the database scheduler: the sweeper (and dispatcher's safety net) and the schedules."""
        return self._spawn("beat", [sys.executable, "-m", "celery", "-A", "auditsvc.celery", "beat", "-l", "info"])

    def start_worker(self, name: str | None = None) -> subprocess.Popen:
        """One more worker, or the worker `name` again (after it was killed)."""
        return self.start_workers(1, [name] if name else None)[0]

    def start_workers(self, count: int, names: list[str] | None = None) -> list[subprocess.Popen]:
        """`count` more workers (or those named), started side by side."""
        if names is None:
            names = [f"worker{self.workers + number}" for number in range(1, count + 1)]
            self.workers += count
        logs = {name: self.directory / f"{name}.log" for name in names}
        ready_before = {name: log.read_text().count("ready.") if log.exists() else 0 for name, log in logs.items()}
        started = [self._spawn(name, [sys.executable, "-m", "celery", "-A", "auditsvc.celery", "worker",
                                      "-Q", "gpu,default", "-c", "1", "-P", "prefork", "-n", f"{name}@%h",
                                      "--without-gossip", "--without-mingle", "-l", "info"]) for name in names]
        for name, log in logs.items():
            wait_for(lambda: log.read_text().count("ready.") > ready_before[name], 120, f"{name} to start")
        return started

    def worker_children(self, name: str) -> list[int]:
        pid = self.processes[name].pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        """Workers and the web server first, Redis last: a worker without its broker takes long to shut down."""
        for process in sorted(reversed(self.processes.values()), key=lambda p: p is self.processes.get("redis")):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()

    # --- the API as a pipeline uses it ---------------------------------------------------------

    def api(self, user: str = "alice"):
        """A requests session with the user's API token."""
        import requests   # a test dependency: the service itself never imports this module

        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.tokens[user]}"
        return session

    def create_audit(self, model: Path, dataset: Path, user: str = "alice", **fields: str) -> dict:
        """fields: the request's other form fields (profile, seed, ...)."""
        with open(model, "rb") as m, open(model.with_name("model.json"), "rb") as meta, open(dataset, "rb") as d:
            response = self.api(user).post(f"{self.url}/api/v1/audits", data=fields, files={
                "model": (model.name, m), "meta": ("model.json", meta), "dataset": (dataset.name, d)}, timeout=120)
        response.raise_for_status()
        return response.json()

    def status(self, audit_id: int, user: str = "alice") -> dict:
        return self.api(user).get(f"{self.url}/api/v1/audits/{audit_id}", timeout=30).json()

    def wait_until(self, audit_id: int, condition, timeout: float = 300, user: str = "alice") -> dict:
        return wait_for(lambda: (lambda s: s if condition(s) else None)(self.status(audit_id, user)), timeout,
                        f"audit {audit_id}", interval=0.1)

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text()


class SplitStack(Stack):
    """Workers as on other machines: the web service and each worker run in a folder of their own (their
    working directory, AUDITSVC_VAR and AUDITSVC_SCRATCH), and share nothing but Redis, PostgreSQL and a
    bucket of an S3 server. The logs stay beside those folders, in the stack's own."""

    first_workers = 2

    def __init__(self, directory: Path, database_url: str, s3_endpoint: str, bucket: str, credentials: dict):
        super().__init__(directory, database_url)
        self.env.update({"AUDITSVC_S3_BUCKET": bucket, "AUDITSVC_S3_ENDPOINT": s3_endpoint, **credentials,
                         # no sandboxed child kept waiting (priming one costs a worker half a minute of CPU)
                         "AUDITSVC_WARM_SANDBOX": "0", "AUDITSVC_SECTIONS": "summary,performance"})

    def home(self, name: str) -> Path:
        """The folder of the process `name`; manage.py commands run as the web service."""
        folder = self.directory / ("web" if name == "manage" else name)
        (folder / "scratch").mkdir(parents=True, exist_ok=True)
        return folder

    def process_env(self, name: str) -> dict[str, str]:
        home = self.home(name)
        return {**self.env, "AUDITSVC_VAR": str(home), "AUDITSVC_SCRATCH": str(home / "scratch")}

    def process_cwd(self, name: str) -> Path:
        return self.home(name)
