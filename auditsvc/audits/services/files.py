"""Files on their way in and out: scratch folders, uploads copied in with a size limit, a row stored
together with its file (or neither), stored files copied out for a sandbox."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction

from ..upload_limits import display_name, mib
from .columns import check_columns


@contextmanager
def scratch():
    """A private temporary folder, removed with everything in it."""
    directory = Path(tempfile.mkdtemp(prefix="auditsvc-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def spool(upload, path: Path, limit: int, field: str) -> Path:
    """Copy an uploaded (or stored) file into `path`'s folder, refusing it past `limit` bytes. The copy
    keeps the user's file name (with `path`'s suffix), so that every error about it names their file;
    returns where it went."""
    shown = display_name(getattr(upload, "name", None) or path.name)
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise ValidationError({field: f"{shown} is {mib(size)}; at most {mib(limit)} are accepted."})
    path = path.with_name(_scratch_name(getattr(upload, "name", None) or path.name, path.suffix))
    written = 0
    with open(path, "wb") as out:
        for chunk in upload.chunks():
            written += len(chunk)
            if written > limit:
                raise ValidationError({field: f"{shown} is larger than the {mib(limit)} accepted."})
            out.write(chunk)
    if written == 0:
        raise ValidationError({field: f"{shown} is empty."})
    return path


def _scratch_name(name: str, suffix: str) -> str:
    """The user's file name as a name in a scratch folder: printable, no folders, ending in `suffix`."""
    name = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable()).lstrip(".")[:120]
    return name if name.lower().endswith(suffix.lower()) else (name or "upload") + suffix


def upload_sha256(upload) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def read_capped(upload, limit: int) -> bytes:
    """At most `limit` bytes of an upload, which is rewound for the next reader."""
    chunks, size = [], 0
    for chunk in upload.chunks():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    if hasattr(upload, "seek"):
        upload.seek(0)
    return b"".join(chunks)[:limit]


def save_with_file(instance, field: str, path: Path, name: str):
    """Store the file and the row together; if the row cannot be saved, the file goes too."""
    check_columns(instance)
    with open(path, "rb") as handle:
        getattr(instance, field).save(name, File(handle), save=False)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError:
        getattr(instance, field).delete(save=False)
        raise ValidationError(f"{instance} was stored by another request at the same time; "
                              "reload and use that one.") from None
    except BaseException:
        getattr(instance, field).delete(save=False)
        raise
    return instance


def copy_stored(field, path: Path) -> Path:
    """A stored file (local or S3) copied to `path`."""
    with field.open("rb") as source, open(path, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return path
