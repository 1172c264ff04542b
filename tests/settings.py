"""The test session's settings: the service's own, with DEBUG on as `make serve` has it (so the
development key applies and no HTTPS redirect). pytest-django still runs each test with DEBUG off,
so requests are answered by the real error handlers. The database is a throwaway PostgreSQL server
that the `postgres` fixture starts (tests/service_fixtures.py)."""

import os

os.environ["DJANGO_DEBUG"] = "1"

from auditsvc.settings import *  # noqa: E402,F403

# Test users log in often; a fast hash keeps that cheap (never in production settings).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Service tests check the job, the files and who sees them, not the battery (tests/battery does):
# their audits run the quick sections only.
AUDIT_SECTIONS = ["summary", "performance"]

# No waiting sandbox child after each in-process audit: priming one costs half a minute of CPU that
# no later test uses. The real worker processes of auditsvc/stack/stack.py keep the production setting.
AUDIT_WARM_SANDBOX = False
