"""Writes: uploads, audits and their life cycle, schedules, API tokens.

Views, API views and tasks parse their input and call one of these. Uploads are validated
with the battery's own loaders before anything is stored; a request that fails leaves nothing
behind, neither rows nor files (audit_submit: everything one API request stored goes together).
Text is checked against its column before it is saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import shutil
import tempfile
import time
import traceback
import unicodedata
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.mail import BadHeaderError, send_mail
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from auditsvc.battery import BadInput, ModelMeta, file_sha256, limits, model_kind, open_probe_set, parse_meta_json
from auditsvc.reports.changes import changes_since
from auditsvc.sandbox import SandboxError, SandboxUnavailable, check_model, warm
from .models import ApiToken, Audit, Finding, Membership, ModelVersion, Organization, ProbeSet, Schedule
from .uploads import display_name

log = logging.getLogger(__name__)
MODEL_SUFFIXES = {".pt2": ".pt2", ".pt": ".pt", ".ts": ".ts"}
HEARTBEAT_SECONDS = 2.0


# --- uploads -----------------------------------------------------------------------------------

@contextmanager
def _scratch():
    directory = Path(tempfile.mkdtemp(prefix="auditsvc-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _spool(upload, path: Path, limit: int, field: str) -> Path:
    """Copy an uploaded (or stored) file into `path`'s folder, refusing it past `limit` bytes. The copy
    keeps the user's file name (with `path`'s suffix), so that every error about it names their file;
    returns where it went."""
    shown = display_name(getattr(upload, "name", None) or path.name)
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise ValidationError({field: f"{shown} is {_mib(size)}; at most {_mib(limit)} are accepted."})
    path = path.with_name(_scratch_name(getattr(upload, "name", None) or path.name, path.suffix))
    written = 0
    with open(path, "wb") as out:
        for chunk in upload.chunks():
            written += len(chunk)
            if written > limit:
                raise ValidationError({field: f"{shown} is larger than the {_mib(limit)} accepted."})
            out.write(chunk)
    if written == 0:
        raise ValidationError({field: f"{shown} is empty."})
    return path


def _scratch_name(name: str, suffix: str) -> str:
    """The user's file name as a name in a scratch folder: printable, no folders, ending in `suffix`."""
    name = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable()).lstrip(".")[:120]
    return name if name.lower().endswith(suffix.lower()) else (name or "upload") + suffix


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def upload_sha256(upload) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def parse_meta(meta) -> dict:
    """model.json from an upload, a JSON string or a dict."""
    if isinstance(meta, dict):
        data = meta
    else:
        raw = meta.encode() if isinstance(meta, str) else _read_capped(meta, limits.MAX_META_BYTES + 1)
        try:
            data = parse_meta_json(raw)   # size and nesting checked before the text is parsed
        except BadInput as exc:
            raise ValidationError({"meta": str(exc)}) from None
    if not isinstance(data, dict):
        raise ValidationError({"meta": "model.json must be a JSON object."})
    _check_meta_storable(data)
    return data


def _read_capped(upload, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in upload.chunks():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    if hasattr(upload, "seek"):
        upload.seek(0)
    return b"".join(chunks)[:limit]


def _check_meta_storable(data: dict) -> None:
    """Before any work: model.json's name and version fit their columns, and PostgreSQL's jsonb takes the
    whole document (no NUL characters, NaN or infinities)."""
    _check_text(ModelVersion, **{key: data[key] for key in ("name", "version") if isinstance(data.get(key), str)})
    problem = _json_problem(data)
    if problem:
        raise ValidationError({"meta": f"model.json {problem}."})


def model_version_create(*, organization: Organization, user, file, meta, release_tag: str = "") -> ModelVersion:
    """Validate a model package (format, model.json, a forward pass) and store it."""
    suffix = MODEL_SUFFIXES.get(Path(file.name or "").suffix.lower())
    if suffix is None:
        raise ValidationError({"file": f"{display_name(file.name)}: upload a model.pt2 (torch.export) or a "
                                       "TorchScript .pt / .ts file."})
    meta_data = parse_meta(meta)
    try:
        ModelMeta.from_dict(meta_data)
    except BadInput as exc:
        raise ValidationError({"meta": str(exc)}) from None
    with _scratch() as scratch:
        path = _spool(file, scratch / f"model{suffix}", settings.MAX_MODEL_UPLOAD, "file")
        sha256 = file_sha256(path)
        kind = _checked_model(path, meta_data, sha256)
        meta = ModelMeta.from_dict(meta_data)
        if ModelVersion.objects.filter(organization=organization, name=meta.name, version=meta.version).exists():
            raise ValidationError({"meta": f"{meta.name} {meta.version} is already registered; "
                                           "bump the version in model.json."})
        version = ModelVersion(organization=organization, name=meta.name, version=meta.version,
                               release_tag=release_tag, meta=meta_data, format=kind, sha256=sha256,
                               uploaded_by=user)
        return _save_with_file(version, "file", path, f"model{suffix}")


def _checked_model(path: Path, meta: dict, sha256: str) -> str:
    """The archive read as data here; loading it and one forward pass happen in the sandbox. A model
    whose bytes and model.json passed before (a pipeline uploading its release again) is not run again."""
    key = f"{sha256}:{json.dumps(meta, sort_keys=True)}"
    try:
        kind = model_kind(path)
        if key not in _PASSED_CHECKS:
            check_model(path, meta)
    except BadInput as exc:
        raise ValidationError({"file": str(exc)}) from None
    except (SandboxError, SandboxUnavailable) as exc:
        raise ValidationError({"file": f"The model could not be checked: {exc}"}) from None
    _PASSED_CHECKS[key] = kind
    while len(_PASSED_CHECKS) > 256:
        _PASSED_CHECKS.pop(next(iter(_PASSED_CHECKS)))
    return kind


_PASSED_CHECKS: dict[str, str] = {}   # sha256 and model.json of models that loaded and ran, this process


def probe_set_create(*, organization: Organization, user, name: str, file) -> ProbeSet:
    """Validate a probe set zip (layout, images, manifest, zip bombs, traversal) and store it."""
    if not (file.name or "").lower().endswith(".zip"):
        raise ValidationError({"file": f"{display_name(file.name)}: upload the probe set as a .zip with one "
                                       "folder per class."})
    _check_text(ProbeSet, name=name)
    name = name or Path(file.name).stem[:ProbeSet._meta.get_field("name").max_length]
    with _scratch() as scratch:
        path = _spool(file, scratch / "probe.zip", settings.MAX_DATASET_UPLOAD, "file")
        try:
            with open_probe_set(path) as data:
                probe = ProbeSet(organization=organization, name=name, sha256=data.sha256,
                                 images=len(data), classes=[data.classes[i] for i in data.present_classes],
                                 attributes=data.attribute_names, uploaded_by=user)
        except BadInput as exc:
            raise ValidationError({"file": str(exc)}) from None
        return _save_with_file(probe, "file", path, "probe.zip")


def _save_with_file(instance, field: str, path: Path, name: str):
    """Store the file and the row together; if the row cannot be saved, the file goes too."""
    _check_columns(instance)
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


# Where a column's text comes from, for the error: (form field, what the user calls it).
_COLUMN_SOURCES = {
    ModelVersion: {"name": ("meta", "the name in model.json"), "version": ("meta", "the version in model.json"),
                   "release_tag": ("release_tag", "the release tag")},
    ProbeSet: {"name": ("name", "the probe set name")},
    ApiToken: {"name": ("name", "the token name")},
    Organization: {"name": ("name", "the organization name")},
}


def _text_problem(value, limit: int | None = None) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are accepted"
    return None


def _json_problem(value, depth: int = 0) -> str | None:
    """What PostgreSQL's jsonb would refuse: NUL characters, NaN and infinities."""
    if depth > 200:
        return "is nested too deeply"
    if isinstance(value, str):
        return "contains a NUL character" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "contains NaN or an infinite number"
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return None
    for item in items:
        problem = _json_problem(item, depth + 1)
        if problem:
            return problem
    return None


def _check_text(model, **values) -> None:
    """Refuse text that does not fit its column (PostgreSQL fails the insert, SQLite keeps it whole)."""
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        field = model._meta.get_field(name)
        problem = _text_problem(value, field.max_length) if isinstance(value, str) else None
        if problem:
            key, label = _COLUMN_SOURCES.get(model, {}).get(name, (name, field.verbose_name))
            errors.setdefault(key, []).append(f"{label[:1].upper()}{label[1:]} {problem}.")
    if errors:
        raise ValidationError(errors)


def _check_columns(instance) -> None:
    """Every text and JSON column of a row about to be saved."""
    model = type(instance)
    texts = {f.name: getattr(instance, f.attname) for f in model._meta.concrete_fields
             if isinstance(f, (models.CharField, models.TextField)) and not isinstance(f, models.FileField)}
    _check_text(model, **texts)
    for field in model._meta.concrete_fields:
        if isinstance(field, models.JSONField):
            problem = _json_problem(getattr(instance, field.attname))
            if problem:
                key = "meta" if field.name == "meta" else field.name
                raise ValidationError({key: f"{'model.json' if key == 'meta' else field.name} {problem}."})


def audit_submit(*, organization: Organization, user, model_version: ModelVersion | None = None, model=None,
                 meta=None, release_tag: str = "", reference: ModelVersion | None = None, reference_file=None,
                 reference_meta=None, probe_set: ProbeSet | None = None, dataset=None, dataset_name: str = "",
                 seed: int = 0) -> Audit:
    """A pipeline's one request (the API): stored objects or uploads for the model, the reference and the
    probe set, then the audit. All or nothing: if any step fails, the rows roll back and every file this
    call stored is deleted. The same model name, version and bytes reuse the registered version."""
    if model_version is None and model is None:
        raise ValidationError({"model": "Upload the model file as 'model' or give 'model_version'."})
    if probe_set is None and dataset is None:
        raise ValidationError({"dataset": "Upload the probe set zip as 'dataset' or give 'probe_set'."})
    stored: list = []
    try:
        with transaction.atomic():
            if model_version is None:
                with _fields_renamed(file="model"):
                    model_version = _version_from_upload(organization, user, model, meta, release_tag, stored)
            if reference is None and reference_file is not None:
                with _fields_renamed(file="reference", meta="reference_meta"):
                    reference = _version_from_upload(organization, user, reference_file, reference_meta, "", stored)
            if probe_set is None:
                with _fields_renamed(file="dataset", name="dataset_name"):
                    probe_set = probe_set_create(organization=organization, user=user, name=dataset_name,
                                                 file=dataset)
                stored.append(probe_set)
            return audit_create(organization=organization, user=user, model_version=model_version,
                                probe_set=probe_set, reference=reference, seed=seed)
    except BaseException:
        for instance in stored:
            instance.file.delete(save=False)
        raise


@contextmanager
def _fields_renamed(**names):
    """The upload services name their own fields ('file', 'name'); the API's request names them otherwise."""
    try:
        yield
    except ValidationError as error:
        if not hasattr(error, "error_dict"):
            raise
        raise ValidationError({names.get(field, field): errors for field, errors in error.error_dict.items()}) from None


def _version_from_upload(organization, user, file, meta, release_tag: str, stored: list) -> ModelVersion:
    if not meta:
        raise ValidationError({"meta": "model.json is required with an uploaded model."})
    meta = parse_meta(meta)   # name and version checked against their columns before they are queried
    twin = ModelVersion.objects.filter(organization=organization, name=str(meta.get("name")),
                                       version=str(meta.get("version")), sha256=upload_sha256(file)).first()
    if twin is not None:
        return twin
    version = model_version_create(organization=organization, user=user, file=file, meta=meta,
                                   release_tag=release_tag)
    stored.append(version)
    return version


# --- audits ------------------------------------------------------------------------------------

def audit_create(*, organization: Organization, user, model_version: ModelVersion, probe_set: ProbeSet,
                 reference: ModelVersion | None = None, seed: int = 0, schedule: Schedule | None = None) -> Audit:
    for item in (model_version, probe_set, reference):
        if item is not None and item.organization_id != organization.id:
            raise ValidationError("Everything an audit uses must belong to the same organization.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= Audit.MAX_SEED:
        raise ValidationError({"seed": f"The seed must be between 0 and {Audit.MAX_SEED}."})
    # Probe sets name their classes in NFC (a zip made on a Mac decomposes accents); compare them so.
    unknown = sorted({unicodedata.normalize("NFC", c) for c in probe_set.classes}
                     - {unicodedata.normalize("NFC", c) for c in model_version.meta["classes"]})
    if unknown:
        raise ValidationError({"probe_set": f"Class folder(s) {', '.join(map(repr, unknown[:5]))} are not among "
                                            f"the classes of {model_version}."})
    previous = (Audit.objects.filter(model_version=model_version, probe_set=probe_set, status=Audit.Status.DONE)
                .order_by("-finished").first())
    audit = Audit.objects.create(organization=organization, model_version=model_version, probe_set=probe_set,
                                 reference=reference, seed=seed, schedule=schedule, previous=previous,
                                 requested_by=user, stage="" if workers_configured() else NO_WORKER)
    transaction.on_commit(lambda: _enqueue(audit.pk))
    return audit


NO_WORKER = ("waiting: no worker is configured (set REDIS_URL and start a worker, "
             "or run `python manage.py run_queued_audits`)")


def workers_configured() -> bool:
    """Audits go to Celery workers only with a broker; the web process never runs one itself."""
    return bool(settings.REDIS_URL)


def _enqueue(audit_id: int) -> None:
    if not workers_configured():
        return   # stays queued for `manage.py run_queued_audits`
    from tasks.audits import run_audit

    run_audit.delay(audit_id)


def audit_claim_next(worker: str) -> Audit | None:
    """The oldest queued audit, marked running for `worker` so that no other runner takes it (the
    conditional update is the claim, on SQLite as on PostgreSQL); None when the queue is empty."""
    for audit_id in Audit.objects.filter(status=Audit.Status.QUEUED).order_by("created", "pk").values_list(
            "pk", flat=True)[:50]:
        now = timezone.now()
        if Audit.objects.filter(pk=audit_id, status=Audit.Status.QUEUED).update(
                status=Audit.Status.RUNNING, heartbeat=now, worker=worker[:200], stage="starting"):
            return Audit.objects.get(pk=audit_id)
    return None


def audit_transition(audit: Audit, status: str, **fields) -> Audit:
    """The one place an audit's status changes; `fields` are saved with it."""
    allowed = {
        Audit.Status.QUEUED: {Audit.Status.RUNNING, Audit.Status.FAILED},
        Audit.Status.RUNNING: {Audit.Status.RUNNING, Audit.Status.QUEUED, Audit.Status.DONE, Audit.Status.FAILED},
        Audit.Status.DONE: set(),
        Audit.Status.FAILED: set(),
    }
    if status not in allowed[audit.status]:
        raise ValueError(f"audit {audit.pk}: {audit.status} -> {status} is not allowed")
    now = timezone.now()
    fields = {"status": status, "heartbeat": now, **fields}
    if status in (Audit.Status.DONE, Audit.Status.FAILED):
        fields.setdefault("finished", now)
    Audit.objects.filter(pk=audit.pk).update(**fields)
    for key, value in fields.items():
        setattr(audit, key, value)
    return audit


def audit_fail(audit: Audit, reason: str) -> Audit:
    return audit_transition(audit, Audit.Status.FAILED, message=_one_line(reason)[:1000])


def audit_run(audit_id: int, worker: str = "") -> None:
    """Run one audit to the end (the Celery task's body). Safe to call again for the same audit:
    a finished audit is left alone, a redelivered one starts over."""
    audit = Audit.objects.select_related("model_version", "probe_set", "reference", "previous").get(pk=audit_id)
    if audit.is_finished:
        return
    if audit.attempts >= settings.AUDIT_MAX_ATTEMPTS:
        audit_fail(audit, f"The audit was interrupted {audit.attempts} times (worker lost or restarted); "
                          "giving up. Start it again.")
        return
    audit_transition(audit, Audit.Status.RUNNING, attempts=audit.attempts + 1, started=timezone.now(),
                     worker=worker[:200], progress=0.0, stage="starting", message="")
    try:
        _execute(audit)
    except (BadInput, SandboxError, SandboxUnavailable) as exc:
        audit_fail(audit, str(exc))
    except Exception as exc:
        if type(exc).__name__ == "SoftTimeLimitExceeded":
            audit_fail(audit, f"The audit took longer than the {settings.AUDIT_SOFT_TIME_LIMIT // 60} minute limit.")
        else:
            log.error("audit %s failed:\n%s", audit.pk, traceback.format_exc())
            audit_fail(audit, f"Internal error while auditing: {type(exc).__name__}: {exc}")
        raise
    finally:
        sandbox_prepare_next()


def sandbox_prepare_next() -> None:
    """A process that runs audits (a worker, run_queued_audits) keeps a sandboxed child ready, torch
    imported, for its next one; each child serves one audit only."""
    if settings.AUDIT_WARM_SANDBOX:
        try:
            warm.prepare(settings.AUDIT_DEVICE)
        except SandboxUnavailable as exc:  # the next audit fails with this reason
            log.warning("%s", exc)


def _execute(audit: Audit) -> None:
    """The audit runs in a sandboxed child; this process only copies files and stores what came back."""
    previous = audit_summary(audit.previous) if audit.previous else None
    with _scratch() as scratch, warm.take(settings.AUDIT_DEVICE) as sandbox:
        _give_inputs(sandbox, audit)
        outcome = sandbox.run(scratch / "out", {"seed": audit.seed, "device": settings.AUDIT_DEVICE,
                                                "sections": settings.AUDIT_SECTIONS},
                              previous=previous, progress=_progress_writer(audit))
        changes = changes_since(previous, outcome.findings_json) if previous else None
        _store_results(audit, outcome, changes)
    if changes and changes["worse"]:
        notify_worse_verdict(audit)


def _give_inputs(sandbox, audit: Audit) -> None:
    for role, version in (("model", audit.model_version), ("reference", audit.reference)):
        if version is not None:
            path = _copy_stored(version.file, sandbox.input_path(role, Path(version.file.name).name))
            sandbox.add_model(path, version.meta, role=role)
    probe = _copy_stored(audit.probe_set.file, sandbox.input_path("dataset", "probe.zip"))
    sandbox.add_dataset(probe, label=audit.probe_set.name)


def _copy_stored(field, path: Path) -> Path:
    with field.open("rb") as source, open(path, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return path


def _progress_writer(audit: Audit):
    last = {"time": 0.0, "stage": None}

    def report(fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage == last["stage"] and now - last["time"] < HEARTBEAT_SECONDS:
            return
        last.update(time=now, stage=stage)
        Audit.objects.filter(pk=audit.pk).update(progress=min(fraction, 0.99), stage=stage[:200],
                                                 heartbeat=timezone.now())
    return report


def _store_results(audit: Audit, outcome, changes: dict | None) -> None:
    report = outcome.findings_json
    with transaction.atomic():
        for field, path in (("report_html", outcome.html), ("report_pdf", outcome.pdf),
                            ("findings_json", outcome.findings)):
            with open(path, "rb") as handle:
                getattr(audit, field).save(path.name, File(handle), save=False)
        audit.findings.all().delete()
        Finding.objects.bulk_create([
            Finding(audit=audit, code=f["code"][:200], category=f["category"][:20], severity=f["severity"],
                    title=f["title"][:500], summary=f["summary"], evidence=_finite(f.get("evidence", {})))
            for f in report["findings"]])
        audit_transition(audit, Audit.Status.DONE, progress=1.0, stage="done", verdict=report["verdict"],
                         metrics=_finite(report["metrics"]), changes=_finite(changes), report_html=audit.report_html.name,
                         report_pdf=audit.report_pdf.name, findings_json=audit.findings_json.name)


def _finite(value):
    """JSON that PostgreSQL's jsonb takes too: NaN and infinities (which findings.json may hold) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def audits_sweep(now=None) -> list[int]:
    """Audits whose worker went silent: queue them again (the task is idempotent) or, after the
    last attempt, mark them failed with the reason. Nothing stays 'running' forever."""
    now = now or timezone.now()
    stale = Audit.objects.filter(status=Audit.Status.RUNNING,
                                 heartbeat__lt=now - timedelta(seconds=settings.AUDIT_STALE_AFTER))
    handled = []
    for audit in stale:
        if audit.attempts >= settings.AUDIT_MAX_ATTEMPTS:
            audit_fail(audit, f"The worker running this audit stopped responding ({audit.worker or 'unknown'}); "
                              f"gave up after {audit.attempts} attempts.")
        else:
            audit_transition(audit, Audit.Status.QUEUED, stage="queued again: the worker stopped responding")
            transaction.on_commit(lambda pk=audit.pk: _enqueue(pk))
        handled.append(audit.pk)
    return handled


# --- comparing audits --------------------------------------------------------------------------

def audit_summary(audit: Audit) -> dict:
    """A finished audit as `changes_since` compares it."""
    return {"audit": audit.pk, "created": audit.created.isoformat(timespec="seconds"), "verdict": audit.verdict,
            "metrics": audit.metrics, "findings": [{"code": f.code, "title": f.title} for f in audit.findings.all()]}


def notify_worse_verdict(audit: Audit) -> int:
    owners = Membership.objects.filter(organization=audit.organization, role=Membership.Role.OWNER,
                                       user__email__gt="").values_list("user__email", flat=True)
    if not owners:
        return 0
    previous = audit.previous.verdict.upper() if audit.previous else "none"
    subject = _one_line(f"[auditsvc] {audit.model_version}: verdict {previous} -> {audit.verdict.upper()}")
    lines = [f"The re-audit of {audit.model_version} on probe set '{audit.probe_set.name}' got a worse verdict: "
             f"{previous} -> {audit.verdict.upper()}.", ""]
    lines += [f"new: {item}" for item in (audit.changes or {}).get("new", [])]
    lines += ["", f"Report: audit {audit.pk} in the auditsvc portal."]
    try:
        return send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, list(owners))
    except (BadHeaderError, OSError) as exc:  # SMTP errors are OSErrors; a lost mail must not undo a finished audit
        log.error("audit %s: the worse-verdict mail was not sent: %s", audit.pk, exc)
        return 0


def _one_line(text: str) -> str:
    """A mail header from user strings (model names): no line breaks, so no injected headers."""
    return " ".join(text.split())


# --- schedules ---------------------------------------------------------------------------------

def schedule_create(*, organization: Organization, user, model_version: ModelVersion, probe_set: ProbeSet,
                    every_hours: int, reference: ModelVersion | None = None) -> Schedule:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if every_hours < 1:
        raise ValidationError({"every_hours": "Re-audit at most once an hour."})
    for item in (model_version, probe_set, reference):
        if item is not None and item.organization_id != organization.id:
            raise ValidationError("Everything a schedule uses must belong to the same organization.")
    with transaction.atomic():
        schedule = Schedule.objects.create(organization=organization, model_version=model_version,
                                           probe_set=probe_set, reference=reference, every_hours=every_hours,
                                           created_by=user)
        interval, _ = IntervalSchedule.objects.get_or_create(every=every_hours, period=IntervalSchedule.HOURS)
        schedule.periodic_task = PeriodicTask.objects.create(
            name=f"re-audit schedule {schedule.pk}", task="tasks.audits.run_schedule", interval=interval,
            args=json.dumps([schedule.pk]))
        schedule.save(update_fields=["periodic_task"])
    return schedule


def schedule_set_enabled(schedule: Schedule, enabled: bool) -> Schedule:
    with transaction.atomic():
        schedule.enabled = enabled
        schedule.save(update_fields=["enabled"])
        if schedule.periodic_task:
            schedule.periodic_task.enabled = enabled
            schedule.periodic_task.save(update_fields=["enabled"])
    return schedule


def schedule_delete(schedule: Schedule) -> None:
    with transaction.atomic():
        if schedule.periodic_task:
            schedule.periodic_task.delete()
        schedule.delete()


def schedule_run(schedule_id: int) -> Audit | None:
    """A beat tick: a new audit of the schedule's model version on its probe set."""
    schedule = Schedule.objects.select_related("organization", "model_version", "probe_set").filter(
        pk=schedule_id, enabled=True).first()
    if schedule is None:
        return None
    with transaction.atomic():
        return audit_create(organization=schedule.organization, user=schedule.created_by,
                            model_version=schedule.model_version, probe_set=schedule.probe_set,
                            reference=schedule.reference, schedule=schedule)


# --- API tokens --------------------------------------------------------------------------------

def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user, organization: Organization, name: str) -> tuple[ApiToken, str]:
    """Returns the token and its key; the key is not stored and cannot be shown again."""
    if not Membership.objects.filter(user=user, organization=organization).exists():
        raise ValidationError("A token can only be made for an organization the user belongs to.")
    _check_text(ApiToken, name=name)
    key = "asv_" + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, organization=organization, name=name, prefix=key[:12],
                                    key_hash=_hash_key(key))
    return token, key


def api_token_authenticate(key: str) -> ApiToken | None:
    """The token acts for its own organization only, and only while its user is a member of it."""
    token = ApiToken.objects.select_related("user", "organization").filter(
        key_hash=_hash_key(key), revoked=False, user__is_active=True,
        user__memberships__organization=models.F("organization")).first()
    if token is not None:
        ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    return token


def api_token_revoke(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk).update(revoked=True)


def organization_create(*, name: str, owner) -> Organization:
    _check_text(Organization, name=name)
    if not name.strip():
        raise ValidationError({"name": "The organization needs a name."})
    if Organization.objects.filter(name=name).exists():
        raise ValidationError({"name": f"An organization named {name!r} already exists."})
    with transaction.atomic():
        organization = Organization.objects.create(name=name)
        Membership.objects.create(user=owner, organization=organization, role=Membership.Role.OWNER)
    return organization

