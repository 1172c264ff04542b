"""The web application (gunicorn in docker/, and what `manage.py runserver` loads)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditsvc.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (configured by get_wsgi_application)

if not settings.DEBUG and not os.environ.get("DJANGO_SECRET_KEY"):
    # Sessions and CSRF tokens are signed with it: the web process does not start without one.
    raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0")
