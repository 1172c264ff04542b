"""Files on their way in and out: scratch folders, uploads copied in with a size limit, a row stored
together with its file (or neither), stored files copied out for a sandbox, a run's results stored
(or none), a deleted row's files deleted.

Stored files are reached only through Django's storage API (the local media folder, or an S3 bucket
shared by the web service and workers on other machines); local paths are scratch only."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import FileField

from auditsvc.sandbox.folders import temporary_folder

from ..upload_limits import display_name, mib
from .columns import check_columns

log = logging.getLogger(__name__)


@contextmanager
def scratch():
    """A private temporary folder (in AUDITSVC_SCRATCH, as the sandbox's job folders), removed with everything in
    it (by the next process, if this one is killed)."""
    directory = temporary_folder("scratch", os.environ.get("AUDITSVC_SCRATCH") or None)
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
    with field.storage.open(field.name, "rb") as source, open(path, "wb") as target:
        remote = getattr(source, "obj", None)   # S3: straight from the bucket into `path`, not buffered first
        if remote is not None:
            remote.download_fileobj(target)
        else:
            shutil.copyfileobj(source, target, 1 << 20)
    return path


@contextmanager
def stored_unless_failed(instance, files: dict[str, Path]):
    """Each file saved to storage in its field of `instance` (the row is not saved here); if the block that
    follows fails, the objects stored are deleted again."""
    saved = []
    try:
        for field, path in files.items():
            with open(path, "rb") as handle:
                getattr(instance, field).save(path.name, File(handle), save=False)
            saved.append(field)
        yield
    except BaseException:
        for field in saved:
            getattr(instance, field).delete(save=False)
        raise


def delete_files_on_commit(instance) -> None:
    """The stored files of a deleted row go once the deletion commits (a rolled-back one keeps them)."""
    files = [getattr(instance, field.name) for field in instance._meta.concrete_fields if isinstance(field, FileField)]
    names = [(file.storage, file.name) for file in files if file]
    if names:
        transaction.on_commit(lambda: _delete_stored(names))


def _delete_stored(names) -> None:
    for storage, name in names:
        try:
            storage.delete(name)
        except Exception as exc:   # the row is gone already; an orphan is logged, not raised to the deleter
            log.warning("could not delete stored file %s: %s", name, exc)
