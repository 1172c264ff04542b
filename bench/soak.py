"""Soak: audits through the API while the workers are killed and Redis restarts. Does every audit end?

The service runs as real processes (auditsvc/stack: a throwaway PostgreSQL server, redis-server with an
append-only file as in production, the web server, two Celery workers of one process each, beat with the
sweeper every few seconds). Twenty uploads (each its own model version and probe set, quick profile, two
organizations, a mix of priorities) are sent at once; meanwhile a worker process is SIGKILLed at random
moments (20 times: the pool process running the task, or the whole worker with its pool) and Redis is
restarted once (--redis-loses-data: without its append-only file, every message in it lost). A
supervisor starts every killed worker again. Then the invariants:

  accounted   every audit the API accepted is a row, and no other row exists
  finished    every audit ends done, or failed with its reason; lost = still queued or running
  once        no audit ran to completion twice (`Audit.runs_completed`: sandboxed runs that returned a report)
  files       every stored file belongs to a row (no orphans) and every row's file exists; a done audit
              has its three report files, its findings rows match findings.json
  scratch     job and scratch folders of killed processes still there at the end (the next process
              to start on the machine removes them: auditsvc/sandbox/folders.py)

It prints the counts, the messages, deliveries and attempts behind them, and the audits per hour (done
audits over the time from the first upload to the last audit's end).

    .venv/bin/python bench/soak.py [--audits 20] [--kills 20] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditsvc.demo.nets import PlainNet, export  # noqa: E402
from auditsvc.demo.training import model_meta, write_model  # noqa: E402
from auditsvc.sandbox.folders import left_behind  # noqa: E402
from auditsvc.stack import PostgresServer, Stack, wait_for  # noqa: E402

WORKERS = 2
CLASSES = ["cat", "dog"]
PRIORITIES = ["interactive", "interactive", "scheduled", "release"]   # cycled over the uploads
RECEIVED = re.compile(r"Task tasks\.audits\.execute_audit\[audit-(\d+)\] received")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=20)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for every audit to end")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, media)")
    parser.add_argument("--redis-loses-data", action="store_true",
                        help="run Redis without its append-only file: the restart loses every message")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="auditsvc-soak-"))
    postgres = PostgresServer().start()
    for folder in ("stack", "scratch"):
        (directory / folder).mkdir()
    stack = Stack(directory / "stack", database_url=postgres.create_database("soak"), workers=WORKERS,
                  persistent_redis=not args.redis_loses_data, env=_soak_env(directory))
    try:
        stack.start()
        stack.start_beat()
        _use_the_stacks_database(stack)
        inputs = _inputs(directory / "inputs", args.audits)
        soak = Soak(stack, random.Random(args.seed), args.kills)
        report = soak.run(inputs, args.timeout)
        report |= check(stack, soak.accepted, directory / "scratch")
        print_report(report, args)
    finally:
        stack.stop()
        postgres.stop()
        if args.keep:
            print(f"\nthe stack's folder (logs, media): {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _soak_env(directory: Path) -> dict[str, str]:
    return {
        "AUDITSVC_SECTIONS": "",               # the quick profile's own sections
        "AUDITSVC_STALE_AFTER": "20",          # a worker silent this long is swept (it was killed)
        "AUDITSVC_SWEEP_SECONDS": "5",         # beat runs the sweeper (and the dispatcher's safety net) this often
        "AUDITSVC_SCRATCH": str(directory / "scratch"), "TMPDIR": str(directory / "scratch"),
        "AUDITSVC_ORG_CONCURRENCY": "2",
    }


def _use_the_stacks_database(stack: Stack) -> None:
    """This process reads the stack's rows and media through Django, as the service does."""
    for name in ("DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "DATABASE_URL", "AUDITSVC_VAR"):
        os.environ[name] = stack.env[name]
    import django

    django.setup()


def _inputs(directory: Path, count: int) -> list[tuple[Path, Path]]:
    """`count` model packages (one model, each its own version) and probe zips (12 images, 32x32)."""
    torch.manual_seed(0)
    program = export(PlainNet(len(CLASSES), widths=(4, 8)), (3, 32, 32))
    rng = np.random.default_rng(0)
    made = []
    for index in range(count):
        package = directory / f"model-{index}"
        write_model(package, program, model_meta("soak-model", CLASSES, (3, 32, 32), 0.5, 0.25,
                                                 version=f"1.{index}"))
        probe = directory / f"probe-{index}.zip"
        with zipfile.ZipFile(probe, "w") as archive:
            for label in CLASSES:
                for number in range(6):
                    image = directory / "image.png"
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
                    archive.write(image, f"{label}/{number:03d}.png")
        made.append((package / "model.pt2", probe))
    return made


class Soak:
    """The uploads, the chaos (kills, one Redis restart) and the supervisor, until every audit has ended."""

    def __init__(self, stack: Stack, rng: random.Random, kills: int):
        self.stack, self.rng, self.kills_planned = stack, rng, kills
        self.lock = threading.Lock()   # the stack's process table is shared by the chaos and the supervisor
        self.finished = threading.Event()
        self.kills: Counter[str] = Counter()
        self.redis_restarts = 0
        self.accepted: list[int] = []
        self.refused: list[str] = []

    def run(self, inputs: list[tuple[Path, Path]], timeout: float) -> dict:
        threads = [threading.Thread(target=self._chaos, daemon=True),
                   threading.Thread(target=self._supervise, daemon=True)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        with ThreadPoolExecutor(len(inputs)) as pool:
            for outcome in pool.map(self._upload, range(len(inputs)), inputs):
                (self.accepted if isinstance(outcome, int) else self.refused).append(outcome)
        uploaded = time.monotonic() - started
        try:
            wait_for(self._all_ended, timeout, "every audit to end", interval=2)
        except TimeoutError:
            pass
        elapsed = time.monotonic() - started
        self.finished.set()
        for thread in threads:
            thread.join(120)
        return {"uploads_seconds": uploaded, "seconds": elapsed, "kills": dict(self.kills),
                "redis_restarts": self.redis_restarts, "refused": self.refused}

    def _upload(self, index: int, files: tuple[Path, Path]) -> int | str:
        user = ("alice", "bob")[index % 2]
        try:
            return self.stack.create_audit(*files, user=user, profile="quick",
                                           priority=PRIORITIES[index % len(PRIORITIES)])["id"]
        except Exception as exc:   # counted: an upload the service refused or failed
            return f"upload {index}: {type(exc).__name__}: {exc}"

    @staticmethod
    def _all_ended() -> bool:
        from auditsvc.audits.models import Audit

        return not Audit.objects.filter(status__in=(Audit.Status.QUEUED, Audit.Status.RUNNING)).exists()

    def _chaos(self) -> None:
        """A SIGKILL every few seconds, at random: the pool process running a task or a whole worker; Redis
        restarted once, between the fifth and the tenth kill."""
        restart_at = self.rng.randint(5, 10)
        while sum(self.kills.values()) < self.kills_planned and not self.finished.wait(self.rng.uniform(4, 10)):
            with self.lock:
                alive = [name for name in self._worker_names() if name in self.stack.processes]
                if not alive:
                    continue
                name = self.rng.choice(alive)
                pool = self.stack.worker_children(name)
                if pool and self.rng.random() < 0.5:
                    os.kill(self.rng.choice(pool), signal.SIGKILL)
                    self.kills["pool process"] += 1
                else:
                    self.stack.kill(name)
                    self.kills["whole worker"] += 1
                if sum(self.kills.values()) == restart_at:
                    self.stack.restart_redis()
                    self.redis_restarts += 1

    def _supervise(self) -> None:
        """Start every worker that is gone again, as systemd or Kubernetes would."""
        while not self.finished.wait(1):
            for name in self._worker_names():
                with self.lock:
                    process = self.stack.processes.get(name)
                    if process is None or process.poll() is not None:
                        self.stack.processes.pop(name, None)
                        self.stack.start_worker(name)

    @staticmethod
    def _worker_names() -> list[str]:
        return [f"worker{number}" for number in range(1, WORKERS + 1)]


def check(stack: Stack, accepted: list[int], scratch: Path) -> dict:
    """The invariants, from the rows, the media folder, the worker logs and the scratch folder."""
    from django.conf import settings

    from auditsvc.audits.models import Audit, ModelVersion, ProbeSet

    audits = {audit.pk: audit for audit in Audit.objects.all()}
    status = Counter(audit.status for audit in audits.values())
    failed = Counter(audits[pk].message or "(no reason)" for pk in audits if audits[pk].status == "failed")
    media = Path(settings.PRIVATE_MEDIA_ROOT)
    on_disk = {path.relative_to(media).as_posix() for path in media.rglob("*") if path.is_file()}
    referenced = {name for name in [*ModelVersion.objects.values_list("file", flat=True),
                                    *ProbeSet.objects.values_list("file", flat=True),
                                    *(f for a in audits.values() for f in (a.report_html.name, a.report_pdf.name,
                                                                           a.findings_json.name))] if name}
    done = [a for a in audits.values() if a.status == "done"]
    incomplete = [a.pk for a in done if not (a.report_html and a.report_pdf and a.findings_json)
                  or a.findings.count() != len(json.loads(a.findings_json.read())["findings"])]
    deliveries = Counter(int(match) for name in ("worker1", "worker2")
                         for match in RECEIVED.findall(stack.log(name)))
    return {
        "accepted": len(accepted), "rows": len(audits), "unknown_rows": len(set(audits) - set(accepted)),
        "missing_rows": len(set(accepted) - set(audits)),
        "status": dict(status), "failed": dict(failed),
        "lost": [pk for pk, a in audits.items() if a.status in ("queued", "running")],
        "twice": [pk for pk, a in audits.items() if a.runs_completed > 1],
        "messages": sum(a.dispatches for a in audits.values()),
        "deliveries": sum(deliveries.values()),
        "attempts": sum(a.attempts for a in audits.values()),
        "restarted": sum(1 for a in audits.values() if a.attempts > 1),
        "orphans": sorted(on_disk - referenced), "missing_files": sorted(referenced - on_disk),
        "incomplete": incomplete,
        "scratch_left": [folder.name for folder in left_behind(str(scratch)) if folder.parent == scratch],
    }


def print_report(report: dict, args) -> None:
    kills = report["kills"]
    done = report["status"].get("done", 0)
    rows = [
        ("audits accounted for", f"{report['rows'] - report['unknown_rows']}/{args.audits}"
                                 + (f" ({len(report['refused'])} uploads refused)" if report["refused"] else "")),
        ("  done", done),
        ("  failed, with its reason", report["status"].get("failed", 0)),
        ("  lost (still queued or running)", len(report["lost"])),
        ("  rows nobody asked for", report["unknown_rows"]),
        ("run twice to completion", len(report["twice"])),
        ("messages sent (sent again)", f"{report['messages']} ({report['messages'] - report['rows']})"),
        ("deliveries to a worker", report["deliveries"]),
        ("attempts (audits restarted)", f"{report['attempts']} ({report['restarted']})"),
        ("orphan files / missing files", f"{len(report['orphans'])} / {len(report['missing_files'])}"),
        ("done audits missing a report file or finding", len(report["incomplete"])),
        ("scratch folders left by killed processes", len(report["scratch_left"])),
        ("SIGKILLs (pool process, whole worker)", f"{sum(kills.values())} ({kills.get('pool process', 0)}, "
                                                  f"{kills.get('whole worker', 0)})"),
        ("Redis restarts", report["redis_restarts"]),
        ("uploads took", f"{report['uploads_seconds']:.0f} s"),
        ("wall time", f"{report['seconds']:.0f} s"),
        ("audits per hour", f"{done * 3600 / report['seconds']:.0f}"),
    ]
    width = max(len(label) for label, _ in rows)
    redis = "without its data" if args.redis_loses_data else "with its data (append-only file)"
    print(f"\nsoak: {args.audits} uploads and quick audits, {WORKERS} workers, {args.kills} SIGKILLs planned, "
          f"Redis restarted once {redis}\n")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for reason, count in report["failed"].items():
        print(f"\nfailed x{count}: {reason}")
    for problem in ("lost", "twice", "orphans", "missing_files", "incomplete", "refused"):
        if report.get(problem):
            print(f"{problem}: {report[problem]}")


if __name__ == "__main__":
    main()
