"""Error answers: JSON `{"error": ..., "fields": {...}}` under /api/, a plain page elsewhere.

The 400, 403, 404 and 500 handlers (auditsvc/urls.py) never show a traceback; Django logs it.
The API answers its 404s and unreadable bodies itself (api.py, upload_limits.py), so that it speaks
JSON with DEBUG on too. Nothing here touches the database or templates.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.html import escape

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · auditsvc</title>
<style>body{{font-family:"DejaVu Sans",system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1.5rem;color:#1d2329}}
h1{{font-size:1.4rem}}a{{color:#0b57d0}}</style></head>
<body><h1>{title}</h1><p>{message}</p><p><a href="/">Back to auditsvc</a></p></body></html>
"""
TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 413: "Upload too large", 500: "Server error"}


class NotReady(Http404):
    """A 404 whose message is shown: the object exists for this user but the file is not made yet."""


def is_api(request) -> bool:
    return request.path.startswith("/api/")


def json_error(status: int, message: str, fields: dict | None = None) -> JsonResponse:
    """The API's one error shape."""
    return JsonResponse({"error": message, "fields": fields or {}}, status=status)


def error_response(request, status: int, message: str, fields: dict | None = None):
    if is_api(request):
        return json_error(status, message, fields)
    title = TITLES.get(status, "Error")
    return HttpResponse(PAGE.format(title=escape(title), message=escape(message)), status=status,
                        content_type="text/html; charset=utf-8")


UNREADABLE_BODY = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent, MultiPartParserError)


def bad_request_message(exception) -> str:
    cause = (exception.__cause__ or exception.__context__) if exception is not None else None
    for candidate in (exception, cause):
        if isinstance(candidate, RequestDataTooBig):
            return (f"The form fields are larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 2**20} MiB "
                    "accepted; send files as file uploads.")
        if isinstance(candidate, (TooManyFieldsSent, TooManyFilesSent)):
            return "The request has too many fields or files."
        if isinstance(candidate, MultiPartParserError):
            return "The upload could not be read (malformed multipart body)."
    return "The request could not be understood."


def bad_request(request, exception=None):
    return error_response(request, 400, bad_request_message(exception))


def permission_denied(request, exception=None):
    return error_response(request, 403, "You may not do this.")


def not_found_message(exception) -> str:
    return str(exception) if isinstance(exception, NotReady) else "Not found."


def page_not_found(request, exception=None):
    return error_response(request, 404, not_found_message(exception))


def server_error(request):
    # Django has logged the traceback (django.request); the answer never shows it.
    return error_response(request, 500, "Something went wrong on our side; the error was logged. Try again later.")
