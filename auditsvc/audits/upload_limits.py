"""Upload sizes enforced while the request body is read, before anything reaches a view or a service.

A file past the largest upload its field accepts stops being written: the rest of the body is read
and dropped (the client still gets an answer, not a broken connection) and the request is answered
413 naming the user's file. A body whose declared length is past every limit together is refused
without reading it. The services check each file's own limit again (400 naming the file).
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from .http_errors import UNREADABLE_BODY, bad_request_message, error_response

BODY_MARGIN = 16 * 1024**2   # form fields and multipart framing on top of the files
MAX_META_UPLOAD = 16 * 1024**2   # model.json (battery/meta.py holds it to its own, finer limits)


def field_limit(field_name: str) -> int:
    """The most bytes one uploaded file may have, by its form field."""
    if field_name in ("model", "reference"):
        return settings.MAX_MODEL_UPLOAD
    if field_name == "dataset":
        return settings.MAX_DATASET_UPLOAD
    if field_name in ("meta", "reference_meta"):
        return MAX_META_UPLOAD
    return max(settings.MAX_MODEL_UPLOAD, settings.MAX_DATASET_UPLOAD)   # the portal's "file" is either


def body_limit() -> int:
    """A model, a reference model and a probe set in one request."""
    return 2 * settings.MAX_MODEL_UPLOAD + settings.MAX_DATASET_UPLOAD + 2 * MAX_META_UPLOAD + BODY_MARGIN


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def display_name(name: str | None) -> str:
    """The user's file name as one short, printable line for an error message."""
    name = "".join(c if c.isprintable() else "?" for c in (name or "the file").rsplit("/", 1)[-1])
    return name if len(name) <= 120 else name[:117] + "..."


class SizeLimitUploadHandler(FileUploadHandler):
    """First in FILE_UPLOAD_HANDLERS: counts each file's bytes and passes them on to the usual handlers."""

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        self.received, self.limit = 0, field_limit(field_name)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.request.upload_refusal = (self.field_name, f"{display_name(self.file_name)} is larger than the "
                                                            f"{mib(self.limit)} accepted for '{self.field_name}'.")
            raise StopUpload(connection_reset=False)   # read and drop the rest, write nothing more
        return raw_data

    def file_complete(self, file_size):
        return None   # the next handler stores the file


class UploadLimitMiddleware:
    """Reads a POST body before the view (and CSRF) does: 413 for a body or a file past its limit, 400
    for a body that cannot be read (JSON under /api/)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.method != "POST":
            return None
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > body_limit():
            return error_response(request, 413, f"The request is {mib(declared)}; at most {mib(body_limit())} "
                                                "are accepted in one upload.")
        try:
            request.POST, request.FILES   # noqa: B018  (parse now, files through SizeLimitUploadHandler)
        except UNREADABLE_BODY as exc:   # answered here as with DEBUG off, in the API's JSON under /api/
            return error_response(request, 400, bad_request_message(exc))
        refusal = getattr(request, "upload_refusal", None)
        if refusal:
            field, message = refusal
            return error_response(request, 413, message, {field: [message]})
        return None
