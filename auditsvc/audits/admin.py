"""The Django admin for staff: organizations, members, schedules and tokens can be managed here.

Audits, their findings and reports are evidence: shown read-only, never added, changed or deleted
here. Model versions and probe sets are added only through the validated upload (portal or API);
their files, hashes and contents cannot be edited, only their labels.
"""

from django.contrib import admin

from .models import ApiToken, Audit, AuditFinding, Membership, ModelVersion, Organization, ProbeSet, Schedule


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "created")
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
    list_display = ("id", "model_version", "probe_set", "status", "verdict", "progress", "attempts", "created")
    list_filter = ("status", "verdict", "organization")
    inlines = [FindingInline]


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
