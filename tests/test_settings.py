"""Production settings come from the environment and pass Django's deployment checks; DEBUG is off
unless asked for; the web application does not start without a secret key, the command line does."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    """A fresh process on the service's own settings (not the test session's), DJANGO_DEBUG unset."""
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DATABASE_URL")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**base, "DJANGO_SETTINGS_MODULE": "auditsvc.settings", **env})


def run_manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run(env, "manage.py", *args)


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    env = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
           "DJANGO_ALLOWED_HOSTS": "audit.example.com", "AUDITSVC_VAR": str(tmp_path)}
    done = run_manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


def test_debug_is_off_unless_turned_on(tmp_path):
    show = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.DEBUG, settings.CELERY_TASK_ALWAYS_EAGER)")
    done = run({"AUDITSVC_VAR": str(tmp_path)}, "-c", show)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
    done = run({"AUDITSVC_VAR": str(tmp_path), "DJANGO_DEBUG": "1"}, "-c", show)
    assert done.stdout.split() == ["True", "False"]


def test_the_web_application_refuses_to_start_without_a_secret_key(tmp_path):
    done = run({"AUDITSVC_VAR": str(tmp_path)}, "-c", "import auditsvc.wsgi")
    assert done.returncode != 0 and "DJANGO_SECRET_KEY must be set" in done.stderr
    started = run({"AUDITSVC_VAR": str(tmp_path), "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)},
                  "-c", "import auditsvc.wsgi")
    assert started.returncode == 0, started.stderr


def test_the_command_line_needs_no_secret_key(tmp_path):
    done = run_manage({"AUDITSVC_VAR": str(tmp_path)}, "audit", "--help")
    assert done.returncode == 0 and "--fail-on" in done.stdout, done.stderr
