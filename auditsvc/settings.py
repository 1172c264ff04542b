"""Django settings. Everything deployment-specific comes from the environment (see README).

Defaults are for a laptop: SQLite and files under ./var, DEBUG off (`make serve` and the tests
turn it on). The web process never runs an audit: with REDIS_URL, Celery workers do; without,
audits wait until `python manage.py run_queued_audits` works them off. Production (docker/):
a real DJANGO_SECRET_KEY, DATABASE_URL for PostgreSQL, REDIS_URL for Celery, HTTPS in front.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from auditsvc import TEMPLATE_DIR

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AUDITSVC_VAR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
# With DEBUG on (make serve, tests) a development key is used when none is set. With DEBUG off the
# command line and workers need no key, but the web application refuses to start without one
# (auditsvc/wsgi.py, which runserver and gunicorn both load).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "") or (
    "development-only-key-not-for-production-use-0123456789abcdef" if DEBUG else "")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "auditsvc.audits",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",   # the admin's static files, without a separate server
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "auditsvc.audits.upload_limits.UploadLimitMiddleware",   # reads POST bodies first: 413 for oversized uploads
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "auditsvc.urls"
WSGI_APPLICATION = "auditsvc.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [TEMPLATE_DIR],
        "APP_DIRS": False,
        "OPTIONS": {"environment": "auditsvc.audits.jinja.environment", "autoescape": True},
    },
    {   # the admin's own templates
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    },
]


def database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return {"ENGINE": "django.db.backends.postgresql", "NAME": parsed.path.lstrip("/"),
                "USER": unquote(parsed.username or ""), "PASSWORD": unquote(parsed.password or ""),
                "HOST": parsed.hostname or "", "PORT": str(parsed.port or ""),
                # Persistent connections suit gunicorn's long-lived workers; runserver starts a thread per
                # request, each keeping its own connection open, so it sets AUDITSVC_DB_CONN_MAX_AGE=0.
                "CONN_MAX_AGE": int(os.environ.get("AUDITSVC_DB_CONN_MAX_AGE", "60"))}
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.path}
    raise RuntimeError(f"unsupported DATABASE_URL scheme {parsed.scheme!r}")


DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"]) if os.environ.get("DATABASE_URL") else {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": VAR_DIR / "auditsvc.sqlite3",
    "OPTIONS": {"timeout": 30},
    # A file, not memory: integration tests share the test database with worker processes.
    "TEST": {"NAME": os.environ.get("AUDITSVC_TEST_DB", str(VAR_DIR / "test-auditsvc.sqlite3"))},
}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "audit-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "auditsvc" / "static"]

# Uploaded models, probe sets and generated reports: private, served only through views that
# check the organization. Never under STATIC or a public MEDIA_URL.
PRIVATE_MEDIA_ROOT = Path(os.environ.get("AUDITSVC_MEDIA", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": PRIVATE_MEDIA_ROOT, "base_url": None}},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def s3_storage(bucket: str, endpoint: str = "", prefix: str = "") -> dict:
    """Files in an S3 bucket (django-storages, the `s3` extra) instead: what lets the web service and the
    workers run on different machines. Credentials and region come the usual way for boto3 (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or an instance role). Objects are private and never handed out
    as URLs: downloads go through the views that check the organization."""
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": bucket, "endpoint_url": endpoint or None, "location": prefix.strip("/"),
        # S3-compatible servers (MinIO, ...) are addressed as endpoint/bucket, not bucket.endpoint
        "addressing_style": "path" if endpoint else None,
        "default_acl": "private", "querystring_auth": True, "file_overwrite": False,
        # a file read through storage is buffered in memory up to this size, on disk past it
        "max_memory_size": 16 * 1024**2}}


if os.environ.get("AUDITSVC_S3_BUCKET"):
    STORAGES["default"] = s3_storage(os.environ["AUDITSVC_S3_BUCKET"], os.environ.get("AUDITSVC_S3_ENDPOINT", ""),
                                      os.environ.get("AUDITSVC_S3_PREFIX", ""))

MAX_MODEL_UPLOAD = int(os.environ.get("AUDITSVC_MAX_MODEL_MB", "1024")) * 1024**2
MAX_DATASET_UPLOAD = int(os.environ.get("AUDITSVC_MAX_DATASET_MB", "2048")) * 1024**2
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024**2
# The first handler stops a file at the largest accepted upload (the rest of the body is read and
# dropped, nothing more is written) and the request is answered 413 with the file's name.
FILE_UPLOAD_HANDLERS = [
    "auditsvc.audits.upload_limits.SizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# Celery: with REDIS_URL, audits go to workers. Without, nothing is sent anywhere: the audit stays
# queued (it says why) until `python manage.py run_queued_audits` runs it in its own process.
# Never eager: the web process does not run audits.
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("AUDITSVC_VISIBILITY_TIMEOUT", "7200"))}
CELERY_TASK_ROUTES = {"tasks.audits.execute_audit": {"queue": "gpu"}}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
AUDIT_SOFT_TIME_LIMIT = int(os.environ.get("AUDITSVC_SOFT_TIME_LIMIT", str(3 * 3600)))
AUDIT_TIME_LIMIT = AUDIT_SOFT_TIME_LIMIT + 300
AUDIT_STALE_AFTER = int(os.environ.get("AUDITSVC_STALE_AFTER", "600"))   # seconds without a heartbeat
AUDIT_MAX_ATTEMPTS = int(os.environ.get("AUDITSVC_MAX_ATTEMPTS", "2"))
# The dispatcher (audits/services/dispatching.py) sends an audit to the workers only into a free slot:
# at most AUDIT_WORKER_SLOTS audits at the workers at once (the sum of the audit workers' concurrency;
# 0: no such limit), at most AUDIT_ORG_CONCURRENCY of one organization's (its own limit when set;
# 0: none). The others wait in the database, in the dispatcher's order.
AUDIT_WORKER_SLOTS = int(os.environ.get("AUDITSVC_WORKER_SLOTS", "1"))
AUDIT_ORG_CONCURRENCY = int(os.environ.get("AUDITSVC_ORG_CONCURRENCY", "4"))
AUDIT_DEVICE = os.environ.get("AUDITSVC_DEVICE", "auto")
# Part of the battery only (names as in the report's appendix), as AUDITSVC_SECTIONS does for the CLI.
AUDIT_SECTIONS = [name.strip() for name in os.environ.get("AUDITSVC_SECTIONS", "").split(",") if name.strip()] or None
# A worker process keeps one sandboxed child waiting (torch imported) for its next audit.
AUDIT_WARM_SANDBOX = env_bool("AUDITSVC_WARM_SANDBOX", True)
# Report signing: a PKCS#12 file (key and certificate) and its password. When set, every report.pdf
# is signed (PAdES) by the process that started the sandboxed audit, never inside the sandbox.
REPORT_SIGNING_KEY = os.environ.get("AUDITSVC_SIGNING_KEY", "")
REPORT_SIGNING_PASSWORD = os.environ.get("AUDITSVC_SIGNING_PASSWORD", "")

EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = os.environ.get("DJANGO_EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "auditsvc@localhost")
EMAIL_HOST = os.environ.get("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("DJANGO_EMAIL_PORT", "25"))

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"   # no page may be framed (the report's own policy says so too)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("AUDITSVC_LOG_LEVEL", "INFO")},
    "loggers": {"weasyprint": {"level": "ERROR"}, "fontTools": {"level": "ERROR"}},
}
