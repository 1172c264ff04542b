"""Portal views: parse the request, call a service or a selector, render. No queries in templates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import selectors, services
from .http_errors import NotReady
from .forms import AuditForm, ModelVersionForm, ProbeSetForm, ScheduleForm, TokenForm, parse_id

REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"


def current_organization(request):
    return selectors.organization_chosen(request.user, request.session.get("organization"))


def _page(request, template: str, **context):
    context.setdefault("organization", current_organization(request))
    context.setdefault("organizations", list(selectors.organizations_for(request.user)))
    return render(request, template, context)


def _submitted(request, form, call):
    """`call(form.cleaned_data)` (a service) for a valid POST of `form`; None for a GET, or when the form or
    the service refused the input (the errors are then on the form)."""
    if request.method != "POST" or not form.is_valid():
        return None
    try:
        return call(form.cleaned_data)
    except ValidationError as error:
        _apply_errors(form, error)
        return None


def _apply_errors(form, error: ValidationError) -> None:
    """Put a service's validation errors next to the form fields they belong to."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


def _created_here(request, form, service):
    """`service(organization=<the current one>, user=..., **form.cleaned_data)` as `_submitted` calls it;
    None when the user belongs to no organization."""
    organization = current_organization(request)
    return organization and _submitted(request, form, lambda data: service(organization=organization,
                                                                           user=request.user, **data))


def _no_organization(request):
    return _page(request, "portal/no_organization.html")


def safe_next(request, fallback: str) -> str:
    """The request's `next` when it stays on this site, else `fallback` (a URL name)."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse(fallback)


@login_required
@require_POST
def organization_switch(request):
    chosen = selectors.organization_of(request.user, parse_id(request.POST.get("organization")))
    if chosen:
        request.session["organization"] = chosen.pk
    return HttpResponseRedirect(safe_next(request, "audit-list"))


# --- audits ------------------------------------------------------------------------------------

@login_required
@require_GET
def audit_list(request):
    audits = list(selectors.audits_for(request.user)[:200])
    return _page(request, "portal/audit_list.html", audits=audits)


@login_required
@require_http_methods(["GET", "POST"])
def audit_new(request):
    organization = current_organization(request)
    if organization is None:
        return _no_organization(request)
    form = AuditForm(request.user, request.POST or None, initial=request.GET.dict())
    audit = _submitted(request, form, lambda data: services.audit_create(
        organization=data["model_version"].organization, user=request.user, **data))
    if audit:
        return redirect("audit-detail", audit.pk)
    return _page(request, "portal/audit_new.html", form=form)


@login_required
@require_GET
def audit_detail(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    return _page(request, "portal/audit_detail.html", audit=audit, findings=list(audit.findings.all()),
                 others=selectors.audits_to_compare_with(request.user, audit),
                 progress=selectors.audit_progress(audit))


@login_required
@require_POST
def audit_cancel(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    try:
        services.audit_cancel(audit, user=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Audit {audit.pk} cancelled.")
    return redirect("audit-detail", audit.pk)


@login_required
@require_GET
def audit_status(request, pk: int):
    return JsonResponse(selectors.audit_status(selectors.audit_get(request.user, pk)))


@xframe_options_sameorigin  # the audit page shows the report in an iframe
@login_required
@require_GET
def audit_report(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    if not audit.report_html:
        raise NotReady("The report is not ready: the audit has not finished.")
    response = HttpResponse(audit.report_html.open("rb").read(), content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = REPORT_POLICY
    return response


def download(field, filename: str, content_type: str):
    if not field:
        raise NotReady("Not ready: the audit has not finished.")
    return FileResponse(field.open("rb"), as_attachment=True, filename=filename, content_type=content_type)


@login_required
@require_GET
def audit_pdf(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    return download(audit.report_pdf, f"audit-{audit.pk}-report.pdf", "application/pdf")


@login_required
@require_GET
def audit_findings(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    return download(audit.findings_json, f"audit-{audit.pk}-findings.json", "application/json")


@login_required
@require_GET
def audit_compare(request):
    first, second = parse_id(request.GET.get("a")), parse_id(request.GET.get("b"))
    if first is None or second is None:
        raise Http404("choose two audits")
    older = selectors.audit_get(request.user, first)
    newer = selectors.audit_get(request.user, second)
    if older.model_version_id != newer.model_version_id:
        messages.error(request, "Only audits of the same model version can be compared.")
        return redirect("audit-detail", newer.pk)
    if older.created > newer.created:
        older, newer = newer, older
    return _page(request, "portal/audit_compare.html", comparison=selectors.audit_comparison(older, newer))


# --- uploads -----------------------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "POST"])
def model_list(request):
    return _upload_page(request, ModelVersionForm, services.model_version_create, "model-list",
                        lambda version: f"{version} registered.",
                        versions=list(selectors.model_versions_for(request.user)))


@login_required
@require_http_methods(["GET", "POST"])
def probe_set_list(request):
    return _upload_page(request, ProbeSetForm, services.probe_set_create, "probe-set-list",
                        lambda probe: f"Probe set {probe.name} stored: {probe.images} images.",
                        probe_sets=list(selectors.probe_sets_for(request.user)))


def _upload_page(request, form_class, create, page: str, stored: Callable[[Any], str], **listing):
    """The list of one kind of upload with its form; a stored upload is announced and the list shown again."""
    form = form_class(request.POST or None, request.FILES or None)
    upload = _created_here(request, form, create)
    if upload:
        messages.success(request, stored(upload))
        return redirect(page)
    return _page(request, f"portal/{page.replace('-', '_')}.html", form=form, **listing)


# --- schedules and tokens ----------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "POST"])
def schedule_list(request):
    form = ScheduleForm(request.user, request.POST or None)
    if _submitted(request, form, lambda data: services.schedule_create(
            organization=data["model_version"].organization, user=request.user, **data)):
        messages.success(request, "Schedule created.")
        return redirect("schedule-list")
    return _page(request, "portal/schedule_list.html", form=form,
                 schedules=list(selectors.schedules_for(request.user)))


@login_required
@require_POST
def schedule_action(request, pk: int):
    schedule = selectors.schedule_get(request.user, pk)
    action = request.POST.get("action")
    if action == "delete":
        services.schedule_delete(schedule)
    elif action in ("enable", "disable"):
        services.schedule_set_enabled(schedule, action == "enable")
    elif action == "run":
        audit = services.audit_create_for_schedule(schedule.pk)
        if audit:
            return redirect("audit-detail", audit.pk)
    return redirect("schedule-list")


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request):
    form = TokenForm(request.POST or None)
    created = _created_here(request, form, services.api_token_create)
    key = created[1] if created else None   # shown once
    if key:
        form = TokenForm()
    return _page(request, "portal/token_list.html", form=form, key=key, tokens=list(selectors.tokens_for(request.user)))


@login_required
@require_POST
def token_revoke(request, pk: int):
    services.api_token_revoke(selectors.token_get(request.user, pk))
    return redirect("token-list")
