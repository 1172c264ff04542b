"""The OpenAPI description of the pipeline API, served at /api/v1/openapi.json."""

from __future__ import annotations

import auditsvc

ERROR = {"$ref": "#/components/schemas/Error"}
AUDIT = {"$ref": "#/components/schemas/Audit"}
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
ID = {"name": "id", "in": "path", "required": True, "schema": ID_SCHEMA}


def _responses(ok: dict, *codes: int) -> dict:
    described = {400: "Invalid input", 401: "Missing or invalid API token",
                 404: "No such object in the token's organization, or not ready yet",
                 409: "The audit has finished: only a queued or running audit can be cancelled",
                 413: "An uploaded file or the request is larger than accepted"}
    return ok | {str(code): {"description": described[code],
                             "content": {"application/json": {"schema": ERROR}}} for code in codes}


def document(server: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "auditsvc API", "version": auditsvc.__version__,
                 "description": "Audit trained image-classification CNNs from release pipelines: upload a model "
                                "and a probe set, poll the audit, fetch findings.json and report.pdf."},
        "servers": [{"url": server}],
        "security": [{"token": []}],
        "paths": {
            "/api/v1/audits": {"post": {
                "summary": "Start an audit",
                "description": "Upload a model package and a probe set zip (or refer to stored ones by id). "
                               "A model with the same name, version and bytes as a registered one is reused; "
                               "an identical audit already queued or running is returned instead of a new one.",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {
                        "model": {"type": "string", "format": "binary",
                                  "description": "model.pt2, TorchScript, model.onnx or model.keras"},
                        "meta": {"type": "string", "format": "binary", "description": "model.json"},
                        "model_version": ID_SCHEMA | {"description": "instead of model + meta"},
                        "dataset": {"type": "string", "format": "binary", "description": "probe set .zip"},
                        "dataset_name": {"type": "string", "maxLength": 200},
                        "probe_set": ID_SCHEMA | {"description": "instead of dataset"},
                        "reference": {"type": "string", "format": "binary"},
                        "reference_meta": {"type": "string", "format": "binary"},
                        "reference_version": ID_SCHEMA,
                        "release_tag": {"type": "string", "maxLength": 200},
                        "seed": {"type": "integer", "default": 0, "minimum": 0, "maximum": 2**32 - 1},
                        "profile": {"type": "string", "enum": ["full", "quick"], "default": "full",
                                    "description": "full: the whole battery; quick: summary, performance, "
                                                   "shortcuts and looking only"},
                        "priority": {"type": "string", "enum": ["release", "interactive", "scheduled"],
                                     "default": "interactive",
                                     "description": "which queued audits start first: release gates, then "
                                                    "interactive, then scheduled re-audits (within one, each "
                                                    "organization in turn); an identical queued audit is "
                                                    "raised to it"},
                    }}}}},
                "responses": _responses({
                    "201": {"description": "Audit queued (\"existing\": false)",
                            "content": {"application/json": {"schema": AUDIT}}},
                    "200": {"description": "An identical audit (same model version, probe set, reference, seed and "
                                           "profile) is already queued or running: that audit, with \"existing\": "
                                           "true and a \"note\"; no new audit is started",
                            "content": {"application/json": {"schema": AUDIT}}}}, 400, 401, 413),
            }},
            "/api/v1/audits/{id}": {"get": {
                "summary": "Status and progress of an audit", "parameters": [ID],
                "responses": _responses({"200": {"description": "The audit",
                                                 "content": {"application/json": {"schema": AUDIT}}}}, 401, 404),
            }},
            "/api/v1/audits/{id}/cancel": {"post": {
                "summary": "Cancel a queued or running audit",
                "description": "The audit ends 'cancelled' (final); a running one is stopped and stores nothing.",
                "parameters": [ID],
                "responses": _responses({"200": {"description": "The cancelled audit",
                                                 "content": {"application/json": {"schema": AUDIT}}}}, 401, 404,
                                        409),
            }},
            "/api/v1/audits/{id}/findings.json": {"get": {
                "summary": "findings.json of a finished audit", "parameters": [ID],
                "responses": _responses({"200": {"description": "findings.json (schema 1)",
                                                 "content": {"application/json": {"schema": {"type": "object"}}}}},
                                        401, 404),
            }},
            "/api/v1/audits/{id}/report.pdf": {"get": {
                "summary": "The PDF report of a finished audit", "parameters": [ID],
                "responses": _responses({"200": {"description": "report.pdf", "content": {"application/pdf": {
                    "schema": {"type": "string", "format": "binary"}}}}}, 401, 404),
            }},
            "/api/v1/model-versions": {"get": {
                "summary": "Model versions of your organization",
                "responses": _responses({"200": {"description": "List", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"results": {"type": "array", "items": {
                        "$ref": "#/components/schemas/ModelVersion"}}}}}}}}, 401),
            }},
            "/api/v1/model-versions/{id}/audits": {"get": {
                "summary": "Audits of a model version", "parameters": [ID],
                "responses": _responses({"200": {"description": "List", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"model_version": {"type": "integer"},
                                                     "results": {"type": "array", "items": AUDIT}}}}}}}, 401, 404),
            }},
        },
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization",
                                          "description": "Token <key>; create keys on the portal's API tokens page. "
                                                         "A key acts for the organization it was made for."}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "fields"], "properties": {
                    "error": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}},
                "ModelVersion": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"}, "version": {"type": "string"},
                    "release_tag": {"type": "string"}, "sha256": {"type": "string"}, "format": {"type": "string"},
                    "created": {"type": "string", "format": "date-time"}}},
                "Audit": {"type": "object", "required": ["id", "status", "progress"], "properties": {
                    "id": {"type": "integer"},
                    "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "profile": {"type": "string", "enum": ["full", "quick"]},
                    "priority": {"type": "string", "enum": ["release", "interactive", "scheduled"]},
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "stage": {"type": "string"}, "message": {"type": "string"},
                    "verdict": {"type": ["string", "null"], "enum": ["pass", "warn", "fail", None]},
                    "attempts": {"type": "integer"},
                    "model_version": {"type": "object"}, "probe_set": {"type": "object"},
                    "release_tag": {"type": "string", "description": "the model version's release tag"},
                    "existing": {"type": "boolean", "description": "on POST: the audit was already queued or "
                                                                   "running (not started by this request)"},
                    "note": {"type": "string"},
                    "reference": {"type": ["integer", "null"]},
                    "created": {"type": "string", "format": "date-time"},
                    "started": {"type": ["string", "null"], "format": "date-time"},
                    "finished": {"type": ["string", "null"], "format": "date-time"},
                    "steps": {"type": "array", "description": "the set-up, the sections it runs, then the report files",
                              "items": {"$ref": "#/components/schemas/Step"}},
                    "step": {"type": ["object", "null"], "description": "the running step: number, count, title"},
                    "elapsed": {"type": ["number", "null"], "description": "seconds since it started"},
                    "waiting": {"type": ["number", "null"], "description": "seconds it waited (waits) in the queue"},
                    "remaining": {"type": ["number", "null"],
                                  "description": "estimated seconds left, from past audits; null without history"},
                    "queue_position": {"type": ["integer", "null"],
                                       "description": "queued audits that start before it (priority, then "
                                                      "each organization in turn, then age)"},
                    "cancellable": {"type": "boolean"},
                    "links": {"type": "object", "additionalProperties": {"type": "string", "format": "uri"},
                              "description": "self and portal; cancel until it finishes; once done, findings, "
                                             "report_pdf and report (the report on the portal)"}}},
                "Step": {"type": "object", "properties": {
                    "name": {"type": "string"}, "title": {"type": "string"},
                    "status": {"type": "string",
                               "enum": ["queued", "running", "ok", "error", "skipped", "cancelled"]},
                    "fraction": {"type": "number", "minimum": 0, "maximum": 1},
                    "seconds": {"type": ["number", "null"], "description": "its duration (a running one's so far)"}}},
            },
        },
    }
