"""Mail to an organization's owners when a re-audit got a worse verdict."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import BadHeaderError, send_mail

from ..models import Audit, Membership
from .columns import one_line

log = logging.getLogger(__name__)


def notify_worse_verdict(audit: Audit) -> int:
    """Returns how many mails went out; a mail that cannot be sent is logged, never raised."""
    owners = Membership.objects.filter(organization=audit.organization, role=Membership.Role.OWNER,
                                       user__email__gt="").values_list("user__email", flat=True)
    if not owners:
        return 0
    previous = audit.previous.verdict.upper() if audit.previous else "none"
    subject = one_line(f"[auditsvc] {audit.model_version}: verdict {previous} -> {audit.verdict.upper()}")
    lines = [f"The re-audit of {audit.model_version} on probe set '{audit.probe_set.name}' got a worse verdict: "
             f"{previous} -> {audit.verdict.upper()}.", ""]
    lines += [f"new: {item}" for item in (audit.changes or {}).get("new", [])]
    lines += ["", f"Report: audit {audit.pk} in the auditsvc portal."]
    try:
        return send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, list(owners))
    except (BadHeaderError, OSError) as exc:  # SMTP errors are OSErrors; a lost mail must not undo a finished audit
        log.error("audit %s: the worse-verdict mail was not sent: %s", audit.pk, exc)
        return 0
