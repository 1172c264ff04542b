"""The Django admin for staff: organizations, members, schedules and tokens can be managed here.

Audits, their findings and reports are evidence: shown read-only, never added, changed or deleted
here. Model versions and probe sets are added only through the validated upload (portal or API);
their files, hashes and contents cannot be edited, only their labels.
"""

from django.contrib import admin

from .jinja import duration

from .models import ApiToken, Audit, AuditFinding, Membership, ModelVersion, Organization, ProbeSet, Schedule


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "max_running_audits", "created")
    inlines = [MembershipInline]


class ViewOnly:
    """No add, change or delete, not even by superusers: for evidence."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ViewOnly, admin.ModelAdmin):
    """View only: every field read-only."""

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.concrete_fields]


class FindingInline(ViewOnly, admin.TabularInline):
    model = AuditFinding
    extra = 0
    fields = ("severity", "code", "title", "summary", "evidence")
    readonly_fields = fields
    can_delete = False


@admin.register(Audit)
class AuditAdmin(ReadOnlyAdmin):
    list_display = ("id", "model_version", "probe_set", "profile", "priority", "status", "verdict", "progress_shown",
                    "queued_wait", "run_time", "attempts", "created")
    list_filter = ("status", "verdict", "profile", "priority", "organization")
    inlines = [FindingInline]
    SHOWN_AS = {"progress": ["progress_shown"], "finished": ["finished", "queued_wait", "run_time"],
                "steps": ["steps_shown"]}   # raw fields shown in a reviewer's units

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return [shown for name in fields for shown in self.SHOWN_AS.get(name, [name])]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    @admin.display(description="progress", ordering="progress")
    def progress_shown(self, audit: Audit) -> str:
        return f"{audit.progress:.0%}"

    @admin.display(description="queued wait")
    def queued_wait(self, audit: Audit) -> str:
        end = audit.started or audit.finished
        return duration((end - audit.created).total_seconds()) if end else "-"

    @admin.display(description="run time")
    def run_time(self, audit: Audit) -> str:
        return duration((audit.finished - audit.started).total_seconds()) if audit.started and audit.finished else "-"

    @admin.display(description="steps")
    def steps_shown(self, audit: Audit) -> str:
        return "; ".join(f"{step['title']}: {step['status']}"
                         + (f" ({duration(step['seconds'])})" if step.get("seconds") is not None else "")
                         for step in audit.steps) or "-"


@admin.register(AuditFinding)
class AuditFindingAdmin(ReadOnlyAdmin):
    list_display = ("audit", "severity", "code", "title")
    list_filter = ("severity", "category")


class UploadAdmin(admin.ModelAdmin):
    """Uploads arrive validated through the portal or the API; here only their labels may change."""

    editable = ()

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.concrete_fields if field.name not in self.editable]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(UploadAdmin):
    list_display = ("name", "version", "organization", "format", "release_tag", "created")
    list_filter = ("organization", "format")
    editable = ("release_tag",)


@admin.register(ProbeSet)
class ProbeSetAdmin(UploadAdmin):
    list_display = ("name", "organization", "images", "created")
    editable = ("name",)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("model_version", "probe_set", "every_hours", "enabled", "organization")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "organization", "created", "last_used", "revoked")
    readonly_fields = ("user", "organization", "prefix", "key_hash", "created", "last_used")

    def has_add_permission(self, request, obj=None):
        return False   # a token is made on the portal, which shows its key once
