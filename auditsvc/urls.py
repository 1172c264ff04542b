from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.urls import path, re_path

from auditsvc.audits import api, views

urlpatterns = [
    path("", lambda request: redirect("audit-list")),
    path("login/", auth_views.LoginView.as_view(template_name="portal/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organization/", views.organization_switch, name="organization-switch"),
    path("audits/", views.audit_list, name="audit-list"),
    path("audits/new/", views.audit_new, name="audit-new"),
    path("audits/compare/", views.audit_compare, name="audit-compare"),
    path("audits/<int:pk>/", views.audit_detail, name="audit-detail"),
    path("audits/<int:pk>/status", views.audit_status, name="audit-status"),
    path("audits/<int:pk>/cancel", views.audit_cancel, name="audit-cancel"),
    path("audits/<int:pk>/report/", views.audit_read, name="audit-read"),
    path("audits/<int:pk>/report.html", views.audit_report, name="audit-report"),
    path("audits/<int:pk>/report.pdf", views.audit_pdf, name="audit-pdf"),
    path("audits/<int:pk>/findings.json", views.audit_findings, name="audit-findings"),
    path("models/", views.model_list, name="model-list"),
    path("models/<int:pk>/", views.model_detail, name="model-detail"),
    path("probe-sets/", views.probe_set_list, name="probe-set-list"),
    path("probe-sets/<int:pk>/", views.probe_set_detail, name="probe-set-detail"),
    path("schedules/", views.schedule_list, name="schedule-list"),
    path("schedules/<int:pk>/", views.schedule_action, name="schedule-action"),
    path("schedules/<int:pk>/delete", views.schedule_delete, name="schedule-delete"),
    path("tokens/", views.token_list, name="token-list"),
    path("tokens/<int:pk>/revoke", views.token_revoke, name="token-revoke"),
    path("api/v1/openapi.json", api.openapi, name="api-openapi"),
    path("api/v1/audits", api.audits_create, name="api-audits"),
    path("api/v1/audits/<int:pk>", api.audit_detail, name="api-audit"),
    path("api/v1/audits/<int:pk>/cancel", api.audit_cancel, name="api-audit-cancel"),
    path("api/v1/audits/<int:pk>/findings.json", api.audit_findings, name="api-audit-findings"),
    path("api/v1/audits/<int:pk>/report.pdf", api.audit_pdf, name="api-audit-pdf"),
    path("api/v1/model-versions", api.model_versions, name="api-model-versions"),
    path("api/v1/model-versions/<int:pk>/audits", api.model_version_audits, name="api-model-version-audits"),
    re_path(r"^api/", api.not_found),
    path("admin/", admin.site.urls),
]

# No traceback ever reaches a client: JSON under /api/, a plain page elsewhere.
handler400 = "auditsvc.audits.http_errors.bad_request"
handler403 = "auditsvc.audits.http_errors.permission_denied"
handler404 = "auditsvc.audits.http_errors.page_not_found"
handler500 = "auditsvc.audits.http_errors.server_error"
