"""The Celery app: configuration from Django settings (CELERY_*), tasks from the top-level `tasks` package."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")

app = Celery("auditsvc")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("tasks.audits",)
app.conf.beat_schedule = {
    "sweep-stale-audits": {"task": "tasks.audits.sweep_stale_audits",
                           "schedule": float(os.environ.get("AUDITSVC_SWEEP_SECONDS", "60"))},
}
