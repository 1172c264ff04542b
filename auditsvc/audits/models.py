"""Organizations, their model versions and probe sets, audits (job rows), findings, schedules, API tokens.

Every row that holds user data belongs to an organization; selectors filter by the
requesting user's memberships, so a member of another organization never sees it.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    max_running_audits = models.PositiveSmallIntegerField(
        null=True, blank=True, verbose_name="concurrent audits",
        help_text="At most this many of the organization's audits run (or are sent to a worker) at once; "
                  "empty: the AUDITSVC_ORG_CONCURRENCY setting; 0: no limit of its own.")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"      # receives notifications about worse verdicts
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


def upload_path(instance, filename: str) -> str:
    """Files live under the organization and a random folder; the user's file name is kept only as a label."""
    kind = type(instance).__name__.lower()
    return f"org-{instance.organization_id}/{kind}/{uuid.uuid4().hex}/{_safe_name(filename)}"


def _safe_name(filename: str) -> str:
    keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename.rsplit("/", 1)[-1])
    return keep.lstrip(".")[:100] or "file"


class Upload(models.Model):
    """A validated upload of an organization: its file (kept private), the file's hash, who sent it, when."""

    file = models.FileField(upload_to=upload_path, max_length=300)
    sha256 = models.CharField(max_length=64)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["-created"]


class ModelVersion(Upload):
    """A model file (torch.export, TorchScript, ONNX or Keras 3) and its model.json."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=100)
    release_tag = models.CharField(max_length=200, blank=True)
    meta = models.JSONField()                  # model.json as validated
    format = models.CharField(max_length=20)   # "torch.export", "torchscript", "onnx" or "keras"

    class Meta(Upload.Meta):
        constraints = [models.UniqueConstraint(fields=["organization", "name", "version"],
                                               name="one_model_version_per_org")]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class ProbeSet(Upload):
    """A zip in ImageFolder layout (one folder per class, an optional manifest.csv)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="probe_sets")
    name = models.CharField(max_length=200)
    images = models.PositiveIntegerField()
    classes = models.JSONField()
    attributes = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"{self.name} ({self.images} images)"


class Profile(models.TextChoices):
    """How much of the battery an audit runs (services/steps.py names the sections of each)."""
    FULL = "full", "Full"
    QUICK = "quick", "Quick"


class Priority(models.TextChoices):
    """Which queued audits start first (services/dispatching.py): release gates, then audits a person waits
    for, then scheduled re-audits."""
    RELEASE = "release", "Release gate"
    INTERACTIVE = "interactive", "Interactive"
    SCHEDULED = "scheduled", "Scheduled re-audit"


class Audit(models.Model):
    """A job row: status, progress and stage, its steps (the battery's sections, then the report files),
    timestamps, the result files. Status changes only through the audit services (services/audits.py)."""

    MAX_SEED = 2**32 - 1
    Profile = Profile
    Priority = Priority

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="audits")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="audits")
    probe_set = models.ForeignKey(ProbeSet, on_delete=models.CASCADE, related_name="audits")
    reference = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    schedule = models.ForeignKey("Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="audits")
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    seed = models.BigIntegerField(default=0)   # 0..MAX_SEED (a 32-bit unsigned range, past PostgreSQL's integer)
    profile = models.CharField(max_length=10, choices=Profile.choices, default=Profile.FULL)
    priority = models.CharField(max_length=12, choices=Priority.choices, default=Priority.INTERACTIVE)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)      # why it failed, in one line
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    # Sent to the workers (while queued: its task waits in the broker); `dispatches` numbers the messages
    # sent, and a message whose number is not the audit's latest is dropped (services/dispatching.py).
    dispatched = models.DateTimeField(null=True, blank=True, db_index=True)
    dispatches = models.PositiveIntegerField(default=0)
    runs_completed = models.PositiveSmallIntegerField(default=0)   # sandboxed runs that returned a report

    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)   # last progress report from the worker
    # [{name, title, status (queued, running, ok, error, skipped, cancelled), started (ISO time or null),
    #   seconds (when finished, else null), fraction (0..1)}], in the order they run
    steps = models.JSONField(default=list, blank=True)

    verdict = models.CharField(max_length=10, blank=True)
    metrics = models.JSONField(default=dict)
    changes = models.JSONField(null=True, blank=True)        # against `previous`
    report_html = models.FileField(upload_to=upload_path, max_length=300, blank=True)
    report_pdf = models.FileField(upload_to=upload_path, max_length=300, blank=True)
    findings_json = models.FileField(upload_to=upload_path, max_length=300, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"audit {self.pk} of {self.model_version} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED)


class AuditFinding(models.Model):
    """One finding of a finished audit, as its findings.json lists it (the battery's `Finding`, stored)."""

    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="findings")
    code = models.CharField(max_length=200)
    category = models.CharField(max_length=20)
    severity = models.CharField(max_length=10)
    title = models.CharField(max_length=500)
    summary = models.TextField()
    evidence = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        verbose_name = "finding"   # the admin's label, as before the rename


class Schedule(models.Model):
    """Re-audit a model version against a probe set on a timetable (a django-celery-beat task)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="schedules")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="schedules")
    probe_set = models.ForeignKey(ProbeSet, on_delete=models.CASCADE, related_name="schedules")
    reference = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    every_hours = models.PositiveIntegerField(default=24 * 7)
    profile = models.CharField(max_length=10, choices=Profile.choices, default=Profile.FULL)
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField("django_celery_beat.PeriodicTask", null=True, blank=True,
                                         on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"every {self.every_hours} h: {self.model_version} on {self.probe_set.name}"


class ApiToken(models.Model):
    """A pipeline's credential. Only a hash of the key is stored; the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True)   # shown next to a revoked token

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"
