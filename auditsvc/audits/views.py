"""Portal views: parse the request, call a service or a selector, render. No queries in templates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import selectors, services
from .http_errors import NotReady
from .forms import AuditFilterForm, AuditForm, ModelVersionForm, ProbeSetForm, ScheduleForm, TokenForm, parse_id
from .models import Audit
from .upload_limits import display_name

# The report is made in the sandbox from an upload's strings: whatever it holds, no script runs, nothing is
# fetched but its own data: images, and no page frames it.
REPORT_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                 "form-action 'none'; frame-ancestors 'none'")
# The report read in the portal: the same, but the portal's header may post its forms (log out) to the portal.
READ_POLICY = REPORT_POLICY.replace("form-action 'none'", "form-action 'self'")
NEW_TOKEN_KEY = "new-api-token-key"   # in the session from the POST that made it to the one page that shows it


def current_organization(request):
    return selectors.organization_chosen(request.user, request.session.get("organization"))


def _context(request, **context) -> dict:
    """A portal page's context: `context` and what the header shows."""
    context.setdefault("organization", current_organization(request))
    context.setdefault("organizations", list(selectors.organizations_for(request.user)))
    return context


def _page(request, template: str, http_status: int = 200, **context):
    return render(request, template, _context(request, **context), status=http_status)


def _confirm(request, *, question: str, consequence: str, action: str, cancel: str):
    """The confirmation step of a destructive action: a page whose button POSTs it (no JavaScript needed)."""
    return _page(request, "portal/confirm.html", question=question, consequence=consequence, action=action,
                 cancel=cancel)


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
    filters = AuditFilterForm(request.user, request.GET or None)
    audits = list(selectors.audits_filtered(request.user, **filters.filters())[:200])
    return _page(request, "portal/audit_list.html", audits=audits, filters=filters)


@login_required
@require_http_methods(["GET", "POST"])
def audit_new(request):
    organization = current_organization(request)
    if organization is None:
        return _no_organization(request)
    form = AuditForm(request.user, request.POST or None, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        identical = selectors.audit_find_identical(organization=form.cleaned_data["model_version"].organization,
                                                   **form.identity())
        if identical:
            messages.info(request, f"An identical audit is already {identical.status}: showing it.")
            return redirect("audit-detail", identical.pk)
    audit = _submitted(request, form, lambda data: services.audit_create(
        organization=data["model_version"].organization, user=request.user, **data))
    if audit:
        return redirect("audit-detail", audit.pk)
    return _page(request, "portal/audit_new.html", form=form)


@login_required
@require_GET
def audit_detail(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    return _page(request, "portal/audit_detail.html", audit=audit, page=selectors.audit_page(audit),
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


@login_required
@require_GET
def audit_report(request, pk: int):
    """The report as it was made (to open in a tab of its own, save or print)."""
    return _report_response(_report_html(selectors.audit_get(request.user, pk)), REPORT_POLICY)


@login_required
@require_GET
def audit_read(request, pk: int):
    """The report as a page of the portal: the portal's header, then the report, whole (the browser reads the
    report's own head as part of the page's body)."""
    audit = selectors.audit_get(request.user, pk)
    report = _report_html(audit)
    top = render_to_string("portal/report_top.html", _context(request, audit=audit), request)
    return _report_response(top.encode("utf-8") + report, READ_POLICY)


def _report_html(audit) -> bytes:
    if not audit.report_html:
        raise NotReady("The report is not ready: the audit has not finished.")
    with audit.report_html.open("rb") as handle:
        return handle.read()


def _report_response(html: bytes, policy: str) -> HttpResponse:
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = policy
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
    """Two audits side by side; without two comparable ones, a page that says why, with a picker."""
    raw = [v for v in request.GET.getlist("audit") or (request.GET.get("a"), request.GET.get("b")) if v]
    audits, problem, unknown = selectors.audit_pair(request.user, [parse_id(value) for value in raw])
    if not audits:
        chosen = {parse_id(value) for value in raw}
        return _page(request, "portal/audit_compare_choose.html", http_status=404 if unknown else 200,
                     problem=problem, chosen=chosen,
                     candidates=selectors.comparable_audits(request.user, current_organization(request)))
    return _page(request, "portal/audit_compare.html", comparison=selectors.audit_comparison(*audits))


# --- uploads -----------------------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "POST"])
def model_list(request):
    return _upload_page(request, ModelVersionForm, services.model_version_create, "model-list",
                        lambda version: f"{version} registered.",
                        versions=list(selectors.model_versions_for(request.user)))


@login_required
@require_GET
def model_detail(request, pk: int):
    version = selectors.model_version_get(request.user, pk)
    return _page(request, "portal/model_detail.html", version=version,
                 history=selectors.model_history(request.user, version))


@login_required
@require_http_methods(["GET", "POST"])
def probe_set_list(request):
    return _upload_page(request, ProbeSetForm, services.probe_set_create, "probe-set-list",
                        lambda probe: f"Probe set {probe.name} stored: {probe.images} images.",
                        probe_sets=list(selectors.probe_sets_for(request.user)))


@login_required
@require_GET
def probe_set_detail(request, pk: int):
    probe_set = selectors.probe_set_get(request.user, pk)
    counts = selectors.probe_set_images_per_class(probe_set)
    classes = [{"name": name, "images": counts.get(name) if counts is not None else None}
               for name in probe_set.classes]
    return _page(request, "portal/probe_set_detail.html", probe_set=probe_set, classes=classes,
                 audits=selectors.audits_of_probe_set(request.user, probe_set))


def _upload_page(request, form_class, create, page: str, stored: Callable[[Any], str], **listing):
    """The list of one kind of upload with its form; a stored upload is announced and the list shown again.
    After an error, the page names the files that were chosen: browsers cannot put them back in the form."""
    form = form_class(request.POST or None, request.FILES or None)
    upload = _created_here(request, form, create)
    if upload:
        messages.success(request, stored(upload))
        return redirect(page)
    chosen = [display_name(file.name) for file in request.FILES.values()] if form.errors else []
    return _page(request, f"portal/{page.replace('-', '_')}.html", form=form, chosen_files=chosen, **listing)


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
        return redirect("schedule-delete", schedule.pk)   # asks first
    if action in ("enable", "disable"):
        services.schedule_set_enabled(schedule, action == "enable")
        messages.success(request, f"Schedule {'resumed' if action == 'enable' else 'paused'}: {schedule}.")
    elif action == "run":
        audit = services.audit_create_for_schedule(schedule.pk, priority=Audit.Priority.INTERACTIVE)   # someone waits
        if audit:
            return redirect("audit-detail", audit.pk)
        messages.error(request, "The schedule is paused: resume it to run it.")
    return redirect("schedule-list")


@login_required
@require_http_methods(["GET", "POST"])
def schedule_delete(request, pk: int):
    schedule = selectors.schedule_get(request.user, pk)
    if request.method == "POST":
        services.schedule_delete(schedule)
        messages.success(request, f"Schedule deleted: {schedule}. Its audits are kept.")
        return redirect("schedule-list")
    return _confirm(request, question=f"Delete the schedule “{schedule}”?",
                    consequence="No more re-audits will be started by it. The audits it already made are kept.",
                    action="Delete schedule", cancel=reverse("schedule-list"))


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request):
    form = TokenForm(request.POST or None)
    created = _created_here(request, form, services.api_token_create)
    if created:
        token, key = created
        request.session[NEW_TOKEN_KEY] = key   # shown once, by the page this redirects to
        messages.success(request, f"Token “{token.name}” created.")
        return redirect("token-list")
    return _page(request, "portal/token_list.html", form=form, key=request.session.pop(NEW_TOKEN_KEY, None),
                 tokens=list(selectors.tokens_for(request.user)))


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request, pk: int):
    token = selectors.token_get(request.user, pk)
    if token.revoked:
        messages.info(request, f"Token “{token.name}” was already revoked.")
        return redirect("token-list")
    if request.method == "POST":
        services.api_token_revoke(token)
        messages.success(request, f"Token “{token.name}” revoked: requests with its key are now refused (401).")
        return redirect("token-list")
    return _confirm(request, question=f"Revoke the token “{token.name}” ({token.prefix}…)?",
                    consequence=f"Pipelines using it can no longer reach {token.organization.name}'s audits; this "
                                "cannot be undone. It stays listed as revoked.",
                    action="Revoke token", cancel=reverse("token-list"))
