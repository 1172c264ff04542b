"""Queue again, or fail, audits whose worker stopped reporting (what the beat task does every minute)."""

from django.core.management.base import BaseCommand

from auditsvc.audits import services


class Command(BaseCommand):
    help = "Re-queue or fail audits stuck in 'running' without a heartbeat."

    def handle(self, *args, **options):
        handled = services.audits_sweep()
        self.stdout.write(f"swept {len(handled)} audit(s): {handled}")
