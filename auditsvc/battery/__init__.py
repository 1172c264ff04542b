"""The audit battery: everything that knows torch and nothing that knows Django.

This module is the front door: the CLI, the sandboxed child, the service and the reports use
only the names below. Names resolve on first use, so a caller that only checks a model.json or
hashes a file does not import torch.

    from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set

    model = load_model(path, meta)
    with open_probe_set(probe_path, model.meta.classes) as probe:
        result = audit(model, probe, AuditOptions(seed=0))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    # bad input and limits
    "BadInput": "errors", "limits": None,
    # the model side
    "load_model": "model.loading", "LoadedModel": "model.loading",
    "ModelMeta": "model.meta", "InputSpec": "model.meta", "load_meta": "model.meta",
    "parse_meta_json": "model.meta", "check_release_tag": "model.meta",
    "model_kind": "model.archive", "file_sha256": "model.archive",
    # the probe set
    "open_probe_set": "dataset", "ProbeDataset": "dataset",
    # running an audit and what it gives
    "audit": "runner", "resolve_device": "runner", "AuditOptions": "context", "Progress": "context",
    "StepReport": "progress",
    "section_names": "registry",
    "AuditResult": "results", "Finding": "results", "SectionResult": "results", "Figure": "results",
    "Table": "results", "Text": "results", "Verdict": "results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _EXPORTS[name]
    value = import_module(f"{__name__}.{module or name}")
    if module is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from . import limits
    from .context import AuditOptions, Progress
    from .dataset import ProbeDataset, open_probe_set
    from .errors import BadInput
    from .model.archive import file_sha256, model_kind
    from .model.loading import LoadedModel, load_model
    from .model.meta import InputSpec, ModelMeta, check_release_tag, load_meta, parse_meta_json
    from .progress import StepReport
    from .registry import section_names
    from .results import AuditResult, Figure, Finding, SectionResult, Table, Text, Verdict
    from .runner import audit, resolve_device
