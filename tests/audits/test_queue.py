"""Without a broker the web process runs no audit: it stays queued, says why, and
`manage.py run_queued_audits` works the queue off in its own process, one runner per audit."""

import pytest
from django.core.management import CommandError, call_command

from auditsvc.audits import services
from auditsvc.audits.models import Audit

pytestmark = pytest.mark.django_db


def test_queued_audits_are_run_by_the_command(users, stored, settings, django_capture_on_commit_callbacks, capsys):
    version, probe = stored
    settings.REDIS_URL = ""
    with django_capture_on_commit_callbacks(execute=True):
        audit = services.audit_create(organization=users["acme"], user=users["alice"], model_version=version,
                                      probe_set=probe, seed=7)
    audit.refresh_from_db()
    assert (audit.status, audit.attempts) == ("queued", 0) and "run_queued_audits" in audit.stage
    call_command("run_queued_audits")
    audit.refresh_from_db()
    assert audit.status == "done" and audit.attempts == 1 and audit.worker.startswith("run_queued_audits@")
    assert f"audit {audit.pk}: done" in capsys.readouterr().out


def test_an_audit_is_claimed_by_one_runner_only(users, stored):
    version, probe = stored
    audit = Audit.objects.create(organization=users["acme"], model_version=version, probe_set=probe)
    claimed = services.audit_claim_next("runner-1")
    assert claimed.pk == audit.pk and claimed.status == "running" and claimed.worker == "runner-1"
    assert services.audit_claim_next("runner-2") is None


def test_the_command_refuses_to_run_beside_celery_workers(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(CommandError, match="run them twice"):
        call_command("run_queued_audits")
