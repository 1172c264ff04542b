"""REST API for release pipelines: token authentication, JSON, thin views over services and selectors.

    Authorization: Token <key>      (or: Bearer <key>)

A token acts for the organization it was made for, nothing else of its user's. Errors are JSON
objects {"error": str, "fields": {field: [messages]}} with 400, 401, 404, 405, 409 (cancelling a
finished audit) or 413 (and 500, without a traceback, from the error handlers).
"""

from __future__ import annotations

from functools import wraps

from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from . import selectors, services
from .http_errors import json_error as api_error
from .http_errors import not_found_message
from .forms import ApiAuditForm
from .models import Audit
from .openapi import document
from .views import download


def allow(*methods: str):
    """Like require_http_methods, with the API's JSON error."""
    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = api_error(405, f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)
        return wrapper
    return decorator


def token_required(view):
    """Authenticates by API token only (no session cookie), so CSRF does not apply."""
    @csrf_exempt
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        token = services.api_token_authenticate(key.strip()) if scheme.lower() in ("token", "bearer") and key else None
        if token is None:
            response = api_error(401, "missing or invalid API token")
            response["WWW-Authenticate"] = 'Token realm="auditsvc"'
            return response
        request.user, request.api_token = token.user, token
        try:
            return view(request, *args, **kwargs)
        except Http404 as exc:   # JSON with DEBUG on too
            return api_error(404, not_found_message(exc))
    return wrapper


def _audit_body(request, audit: Audit, queue: list[int] | None = None) -> dict:
    body = selectors.audit_status(audit, queue=queue)
    links = {"self": reverse("api-audit", args=[audit.pk]), "portal": reverse("audit-detail", args=[audit.pk])}
    if not audit.is_finished:
        links["cancel"] = reverse("api-audit-cancel", args=[audit.pk])
    if audit.status == Audit.Status.DONE:
        links |= {"findings": reverse("api-audit-findings", args=[audit.pk]),
                  "report_pdf": reverse("api-audit-pdf", args=[audit.pk]),
                  "report": reverse("audit-read", args=[audit.pk])}   # the report on the portal, for people
    return body | {"links": {k: request.build_absolute_uri(v) for k, v in links.items()}}


def _validation_fields(error: ValidationError) -> dict:
    if hasattr(error, "error_dict"):
        return {field: [m for e in errors for m in e.messages] for field, errors in error.error_dict.items()}
    return {"__all__": error.messages}


def _organization(request):
    return request.api_token.organization


def _invalid(fields: dict):
    """400 with every field's messages; the error line repeats the first, for a pipeline's log."""
    field, messages = next(iter(fields.items()))
    where = "" if field == "__all__" else f"{field}: "
    return api_error(400, f"invalid input ({where}{messages[0]})", fields)


@token_required
@allow("POST")
def audits_create(request):
    """Create an audit from uploaded files (model, meta, dataset) or from stored ids; 200 with the existing
    audit when an identical one is queued or running."""
    form = ApiAuditForm(request.user, _organization(request), request.POST, request.FILES)
    if not form.is_valid():
        return _invalid({field: list(errors) for field, errors in form.errors.items()})
    try:
        audit, created = services.audit_get_or_create_from_upload(organization=_organization(request),
                                                                   user=request.user, **form.cleaned_data)
    except ValidationError as error:
        return _invalid(_validation_fields(error))
    body = _audit_body(request, audit) | {"existing": not created}
    if not created:
        body["note"] = f"An identical audit is already {audit.status}: this is it; no new audit was started."
    return JsonResponse(body, status=201 if created else 200)


@token_required
@allow("GET")
def audit_detail(request, pk: int):
    return JsonResponse(_audit_body(request, selectors.audit_get(request.user, pk, _organization(request))))


@token_required
@allow("POST")
def audit_cancel(request, pk: int):
    """Cancel a queued or running audit; 409 when it has finished."""
    audit = selectors.audit_get(request.user, pk, _organization(request))
    try:
        services.audit_cancel(audit, user=request.user)
    except ValidationError as error:
        return api_error(409, " ".join(error.messages))
    return JsonResponse(_audit_body(request, audit))


@token_required
@allow("GET")
def audit_findings(request, pk: int):
    audit = selectors.audit_get(request.user, pk, _organization(request))
    return download(audit.findings_json, f"audit-{audit.pk}-findings.json", "application/json")


@token_required
@allow("GET")
def audit_pdf(request, pk: int):
    audit = selectors.audit_get(request.user, pk, _organization(request))
    return download(audit.report_pdf, f"audit-{audit.pk}-report.pdf", "application/pdf")


@token_required
@allow("GET")
def model_versions(request):
    rows = [{"id": v.pk, "name": v.name, "version": v.version, "release_tag": v.release_tag, "sha256": v.sha256,
             "format": v.format, "created": v.created.isoformat()}
            for v in selectors.model_versions_for(request.user, _organization(request))]
    return JsonResponse({"results": rows})


@token_required
@allow("GET")
def model_version_audits(request, pk: int):
    version = selectors.model_version_get(request.user, pk, _organization(request))
    audits = selectors.audits_of_version(request.user, version, _organization(request))
    queue = selectors.queued_in_order()   # once for the list, not once per queued audit
    return JsonResponse({"model_version": version.pk, "results": [_audit_body(request, a, queue) for a in audits]})


def not_found(request, path: str = ""):
    """Every other path under /api/: JSON, with DEBUG on too."""
    return api_error(404, "Not found.")


@allow("GET")
def openapi(request):
    return JsonResponse(document(request.build_absolute_uri("/").rstrip("/")))
