from django.contrib import admin

from .models import ApiToken, Audit, Finding, Membership, ModelVersion, Organization, ProbeSet, Schedule


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "created")
    inlines = [MembershipInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "organization", "format", "release_tag", "created")
    list_filter = ("organization", "format")
    readonly_fields = ("sha256", "meta", "format")


@admin.register(ProbeSet)
class ProbeSetAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "images", "created")
    readonly_fields = ("sha256", "images", "classes", "attributes")


class FindingInline(admin.TabularInline):
    model = Finding
    extra = 0
    fields = ("severity", "code", "title")
    readonly_fields = fields


@admin.register(Audit)
class AuditAdmin(admin.ModelAdmin):
    list_display = ("id", "model_version", "probe_set", "status", "verdict", "progress", "attempts", "created")
    list_filter = ("status", "verdict", "organization")
    readonly_fields = ("status", "progress", "stage", "message", "attempts", "worker", "started", "finished",
                       "heartbeat", "verdict", "metrics", "changes")
    inlines = [FindingInline]


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("model_version", "probe_set", "every_hours", "enabled", "organization")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "organization", "created", "last_used", "revoked")
    readonly_fields = ("prefix", "key_hash", "last_used")
