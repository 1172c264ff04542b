"""Work off the audit queue in this process: for a single machine without Redis and Celery.

Without REDIS_URL the web process only queues audits; run this (once, from cron, or with
--watch) to run them. Audits whose runner stopped are swept back into the queue first.
"""

import os
import socket
import time

from django.core.management.base import BaseCommand, CommandError

from auditsvc.audits import services


class Command(BaseCommand):
    help = "Run queued audits one after the other in this process, then exit (--watch: keep waiting for more)."

    def add_arguments(self, parser):
        parser.add_argument("--watch", action="store_true", help="keep polling for new audits until interrupted")
        parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls with --watch")
        parser.add_argument("--limit", type=int, default=0, help="stop after this many audits (0: no limit)")

    def handle(self, *args, **options):
        if services.workers_configured():
            raise CommandError("REDIS_URL is set: Celery workers run the queued audits; running them here too "
                               "would run them twice.")
        worker = f"run_queued_audits@{socket.gethostname()}:{os.getpid()}"
        done = 0
        try:
            while not options["limit"] or done < options["limit"]:
                services.audits_sweep()
                audit = services.audit_claim_next(worker)
                if audit is None:
                    if not options["watch"]:
                        break
                    time.sleep(options["poll"])
                    continue
                self.stderr.write(f"audit {audit.pk} of {audit.model_version}: running")
                try:
                    services.audit_execute(audit.pk, worker=worker)
                except Exception:  # recorded on the audit as failed; go on with the next
                    pass
                audit.refresh_from_db()
                self.stdout.write(f"audit {audit.pk}: {audit.status}"
                                  + (f" ({audit.verdict})" if audit.verdict else f": {audit.message}"))
                done += 1
        except KeyboardInterrupt:
            pass
        self.stdout.write(f"ran {done} audit(s)")
