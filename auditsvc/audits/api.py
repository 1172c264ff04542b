"""REST API for release pipelines: token authentication, JSON, thin views over services and selectors.

    Authorization: Token <key>      (or: Bearer <key>)

Errors are JSON objects {"error": str, "fields": {field: [messages]}} with 400, 401 or 404.
"""

from __future__ import annotations

from functools import wraps

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from . import selectors, services
from .models import Audit, ModelVersion, ProbeSet
from .openapi import document
from .views import download


def api_error(status: int, message: str, fields: dict | None = None) -> JsonResponse:
    body = {"error": message}
    if fields:
        body["fields"] = fields
    return JsonResponse(body, status=status)


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
        return view(request, *args, **kwargs)
    return wrapper


def _audit_body(request, audit: Audit) -> dict:
    body = selectors.audit_status(audit)
    links = {"self": reverse("api-audit", args=[audit.pk]), "portal": reverse("audit-detail", args=[audit.pk])}
    if audit.status == Audit.Status.DONE:
        links |= {"findings": reverse("api-audit-findings", args=[audit.pk]),
                  "report_pdf": reverse("api-audit-pdf", args=[audit.pk])}
    return body | {"links": {k: request.build_absolute_uri(v) for k, v in links.items()}}


def _validation_fields(error: ValidationError) -> dict:
    if hasattr(error, "error_dict"):
        return {field: [m for e in errors for m in e.messages] for field, errors in error.error_dict.items()}
    return {"__all__": error.messages}


@token_required
@require_http_methods(["POST"])
def audits_create(request):
    """Create an audit from uploaded files (model, meta, dataset) or from stored ids."""
    organization = request.api_token.organization
    try:
        with transaction.atomic():
            version = _model_version(request, organization, "model", "meta", "model_version")
            reference = _model_version(request, organization, "reference", "reference_meta", "reference_version",
                                       required=False)
            probe = _probe_set(request, organization)
            audit = services.audit_create(organization=organization, user=request.user, model_version=version,
                                          probe_set=probe, reference=reference, seed=_int(request, "seed", 0))
    except ValidationError as error:
        return api_error(400, "invalid input", _validation_fields(error))
    return JsonResponse(_audit_body(request, audit), status=201)


def _int(request, name: str, default: int) -> int:
    try:
        return int(request.POST.get(name, default))
    except ValueError:
        raise ValidationError({name: "must be an integer"}) from None


def _model_version(request, organization, file_field: str, meta_field: str, id_field: str,
                   required: bool = True) -> ModelVersion | None:
    if request.POST.get(id_field):
        return _owned(ModelVersion, organization, request.POST[id_field], id_field)
    upload = request.FILES.get(file_field)
    if upload is None:
        if required:
            raise ValidationError({file_field: f"upload the model file as '{file_field}' or give '{id_field}'"})
        return None
    meta = request.FILES.get(meta_field) or request.POST.get(meta_field)
    if not meta:
        raise ValidationError({meta_field: "model.json is required with an uploaded model"})
    return _existing_or_new_version(request, organization, upload, meta)


def _existing_or_new_version(request, organization, upload, meta) -> ModelVersion:
    """Pipelines re-run: the same name, version and bytes reuse the registered version."""
    meta = services.parse_meta(meta)
    twin = ModelVersion.objects.filter(organization=organization, name=meta.get("name"), version=meta.get("version"),
                                       sha256=services.upload_sha256(upload)).first()
    return twin or services.model_version_create(organization=organization, user=request.user, file=upload,
                                                 meta=meta, release_tag=request.POST.get("release_tag", ""))


def _probe_set(request, organization) -> ProbeSet:
    if request.POST.get("probe_set"):
        return _owned(ProbeSet, organization, request.POST["probe_set"], "probe_set")
    upload = request.FILES.get("dataset")
    if upload is None:
        raise ValidationError({"dataset": "upload the probe set zip as 'dataset' or give 'probe_set'"})
    return services.probe_set_create(organization=organization, user=request.user,
                                     name=request.POST.get("dataset_name", ""), file=upload)


def _owned(model, organization, pk: str, field: str):
    found = model.objects.filter(organization=organization, pk=pk).first() if str(pk).isdigit() else None
    if found is None:
        raise ValidationError({field: f"no {model._meta.verbose_name} {pk} in this organization"})
    return found


@token_required
@require_GET
def audit_detail(request, pk: int):
    return JsonResponse(_audit_body(request, selectors.audit_get(request.user, pk)))


@token_required
@require_GET
def audit_findings(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    return download(audit.findings_json, f"audit-{audit.pk}-findings.json", "application/json")


@token_required
@require_GET
def audit_pdf(request, pk: int):
    audit = selectors.audit_get(request.user, pk)
    return download(audit.report_pdf, f"audit-{audit.pk}-report.pdf", "application/pdf")


@token_required
@require_GET
def model_versions(request):
    rows = [{"id": v.pk, "name": v.name, "version": v.version, "release_tag": v.release_tag, "sha256": v.sha256,
             "format": v.format, "created": v.created.isoformat()} for v in selectors.model_versions_for(request.user)]
    return JsonResponse({"results": rows})


@token_required
@require_GET
def model_version_audits(request, pk: int):
    version = selectors.model_version_get(request.user, pk)
    audits = selectors.audits_for(request.user).filter(model_version=version)
    return JsonResponse({"model_version": version.pk, "results": [_audit_body(request, a) for a in audits]})


@require_GET
def openapi(request):
    return JsonResponse(document(request.build_absolute_uri("/").rstrip("/")))
