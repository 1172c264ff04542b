"""Writes, one module per entity: uploads (model versions, probe sets), audits (their life cycle),
dispatching (which queued audits go to the workers, and when), schedules, tokens, organizations,
notifications. Views, API views, commands and tasks parse their input and call one of the functions
below (`from auditsvc.audits import services`).

Text is checked against its column before it is saved; a request that fails leaves nothing behind,
neither rows nor files.
"""

from .audits import (NO_WORKER, audit_cancel, audit_claim_next, audit_create, audit_create_from_upload,
                     audit_execute, audit_fail, audit_get_or_create_from_upload, audit_raise_priority,
                     audit_transition, audits_sweep)
from .dispatching import audits_dispatch, workers_configured
from .notifications import notify_worse_verdict
from .organizations import organization_create
from .running import sandbox_prepare_next
from .schedules import audit_create_for_schedule, schedule_create, schedule_delete, schedule_set_enabled
from .steps import planned_steps, profile_sections
from .tokens import api_token_authenticate, api_token_create, api_token_revoke
from .uploads import model_version_create, parse_meta, probe_set_create

__all__ = [
    "NO_WORKER", "api_token_authenticate", "api_token_create", "api_token_revoke", "audit_cancel", "audit_claim_next",
    "audit_create", "audit_create_for_schedule", "audit_create_from_upload", "audit_execute", "audit_fail",
    "audit_get_or_create_from_upload", "audit_raise_priority", "audit_transition", "audits_dispatch", "audits_sweep",
    "model_version_create",
    "notify_worse_verdict", "organization_create", "parse_meta", "planned_steps", "probe_set_create",
    "profile_sections", "sandbox_prepare_next",
    "schedule_create", "schedule_delete", "schedule_set_enabled", "workers_configured",
]
