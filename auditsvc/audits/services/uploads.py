"""Model versions and probe sets: checked with the battery's own loaders before anything is stored.

A model is read as data here; loading it and one forward pass happen in the sandbox. A request
that fails leaves nothing behind, neither the row nor the file.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from auditsvc.battery import BadInput, ModelMeta, file_sha256, limits, model_kind, open_probe_set, parse_meta_json
from auditsvc.sandbox import SandboxError, SandboxUnavailable, check_model

from ..models import ModelVersion, Organization, ProbeSet
from ..upload_limits import display_name
from .columns import check_text, json_problem
from .files import read_capped, save_with_file, scratch, spool, upload_sha256

MODEL_SUFFIXES = {".pt2": ".pt2", ".pt": ".pt", ".ts": ".ts", ".onnx": ".onnx", ".keras": ".keras"}
_PASSED_CHECKS: dict[str, str] = {}   # sha256 and model.json of models that loaded and ran, this process


def parse_meta(meta) -> dict:
    """model.json from an upload, a JSON string or a dict."""
    if isinstance(meta, dict):
        data = meta
    else:
        raw = meta.encode() if isinstance(meta, str) else read_capped(meta, limits.MAX_META_BYTES + 1)
        try:
            data = parse_meta_json(raw)   # size and nesting checked before the text is parsed
        except BadInput as exc:
            raise ValidationError({"meta": str(exc)}) from None
    if not isinstance(data, dict):
        raise ValidationError({"meta": "model.json must be a JSON object."})
    _check_meta_storable(data)
    return data


def _check_meta_storable(data: dict) -> None:
    """Before any work: model.json's name and version fit their columns, and PostgreSQL's jsonb takes the
    whole document (no NUL characters, NaN or infinities)."""
    check_text(ModelVersion, **{key: data[key] for key in ("name", "version") if isinstance(data.get(key), str)})
    problem = json_problem(data)
    if problem:
        raise ValidationError({"meta": f"model.json {problem}."})


def model_version_create(*, organization: Organization, user, file, meta, release_tag: str = "") -> ModelVersion:
    """Validate a model package (format, model.json, a forward pass) and store it."""
    suffix = MODEL_SUFFIXES.get(Path(file.name or "").suffix.lower())
    if suffix is None:
        raise ValidationError({"file": f"{display_name(file.name)}: upload a model.pt2 (torch.export), a "
                                       "TorchScript .pt / .ts file, a model.onnx or a model.keras (Keras 3)."})
    with _named_as_uploaded(meta):
        return _model_version_stored(organization, user, file, parse_meta(meta), release_tag, suffix)


def _model_version_stored(organization: Organization, user, file, meta_data: dict, release_tag: str,
                          suffix: str) -> ModelVersion:
    model_meta = _model_meta(meta_data)
    with scratch() as folder:
        path = spool(file, folder / f"model{suffix}", settings.MAX_MODEL_UPLOAD, "file")
        sha256 = file_sha256(path)
        kind = checked_model(path, model_meta, sha256)
        if ModelVersion.objects.filter(organization=organization, name=model_meta.name,
                                       version=model_meta.version).exists():
            raise ValidationError({"meta": f"{model_meta.name} {model_meta.version} is already registered; "
                                           "bump the version in model.json."})
        version = ModelVersion(organization=organization, name=model_meta.name, version=model_meta.version,
                               release_tag=release_tag, meta=meta_data, format=kind, sha256=sha256,
                               uploaded_by=user)
        return save_with_file(version, "file", path, f"model{suffix}")


def model_version_from_upload(*, organization: Organization, user, file, meta, release_tag: str = "",
                              stored: list) -> ModelVersion:
    """The registered version with this model.json's name and version and these bytes, else a new one
    (appended to `stored`, so that a caller whose later step fails can delete its file)."""
    if not meta:
        raise ValidationError({"meta": "model.json is required with an uploaded model."})
    with _named_as_uploaded(meta):
        parsed = parse_meta(meta)   # name and version checked against their columns before they are queried
        twin = ModelVersion.objects.filter(organization=organization, name=str(parsed.get("name")),
                                           version=str(parsed.get("version")), sha256=upload_sha256(file)).first()
        if twin is not None:
            return twin
        version = model_version_create(organization=organization, user=user, file=file, meta=parsed,
                                       release_tag=release_tag)
    stored.append(version)
    return version


@contextmanager
def _named_as_uploaded(meta):
    """Errors about model.json name the file the user chose ("detector-meta.json: missing required key...")."""
    try:
        yield
    except ValidationError as error:
        name = getattr(meta, "name", None)
        if not name or not hasattr(error, "error_dict") or display_name(name) == "model.json":
            raise
        shown = display_name(name)
        raise ValidationError({field: [message.replace("model.json", shown) for e in errors for message in e.messages]
                               for field, errors in error.error_dict.items()}) from None


def _model_meta(meta_data: dict) -> ModelMeta:
    try:
        return ModelMeta.from_dict(meta_data)
    except BadInput as exc:
        raise ValidationError({"meta": str(exc)}) from None


def checked_model(path: Path, meta: ModelMeta, sha256: str) -> str:
    """The archive read as data here; loading it and one forward pass happen in the sandbox. A model
    whose bytes and model.json passed before (a pipeline uploading its release again) is not run again.
    Returns the model's format."""
    key = f"{sha256}:{json.dumps(meta.as_dict(), sort_keys=True)}"
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


def probe_set_create(*, organization: Organization, user, name: str, file) -> ProbeSet:
    """Validate a probe set zip (layout, images, manifest, zip bombs, traversal) and store it."""
    if not (file.name or "").lower().endswith(".zip"):
        raise ValidationError({"file": f"{display_name(file.name)}: upload the probe set as a .zip with one "
                                       "folder per class."})
    check_text(ProbeSet, name=name)
    name = name or Path(file.name).stem[:ProbeSet._meta.get_field("name").max_length]
    with scratch() as folder:
        path = spool(file, folder / "probe.zip", settings.MAX_DATASET_UPLOAD, "file")
        try:
            with open_probe_set(path) as data:
                probe = ProbeSet(organization=organization, name=name, sha256=data.sha256,
                                 images=len(data), classes=[data.classes[i] for i in data.present_classes],
                                 attributes=data.attribute_names, uploaded_by=user)
        except BadInput as exc:
            raise ValidationError({"file": str(exc)}) from None
        return save_with_file(probe, "file", path, "probe.zip")
