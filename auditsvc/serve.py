"""`make serve`: the whole service on this machine: redis-server, web, a Celery worker and beat.

SQLite and files under ./var; the first run creates an organization and a reviewer login.
Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--username", default="reviewer")
    parser.add_argument("--password", default="reviewer-password")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    # DEBUG on for this development server (the settings default it to off); the development key goes with it.
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0", "DJANGO_SETTINGS_MODULE": "auditsvc.settings",
           "DJANGO_DEBUG": "1", "AUDITSVC_DB_CONN_MAX_AGE": "0"}
    manage = [sys.executable, "manage.py"]
    processes = [subprocess.Popen(["redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], cwd=ROOT)]
    try:
        time.sleep(0.5)
        subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "bootstrap", "--organization", "Demo", "--username", args.username,
                        "--password", args.password, "--staff"], cwd=ROOT, env=env, check=True)
        celery = [sys.executable, "-m", "celery", "-A", "auditsvc.celery"]
        processes += [
            subprocess.Popen([*manage, "runserver", f"127.0.0.1:{args.port}"], cwd=ROOT, env=env),
            subprocess.Popen([*celery, "worker", "-Q", "gpu,default", "-c", "1", "-l", "info"], cwd=ROOT, env=env),
            subprocess.Popen([*celery, "beat", "-l", "info"], cwd=ROOT, env=env),
        ]
        print(f"\nauditsvc on http://127.0.0.1:{args.port}/  log in as {args.username} / {args.password}\n",
              flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
