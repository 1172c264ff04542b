"""Run the battery: model + probe set + options -> AuditResult (plain data and figures)."""

from __future__ import annotations

import logging
import platform
import time
import traceback
from datetime import datetime, timezone

import numpy as np
import torch

import auditsvc

from . import registry
from .context import AuditContext, AuditOptions, Progress
from .progress import SectionSteps, StepReport, no_progress, no_steps
from .dataset import ProbeDataset
from .errors import BadInput
from .memory import fix_mmap_threshold
from .metrics import with_cue_cells
from .model.graph import ModelGraph
from .model.loading import LoadedModel
from .model.onnx_import import PROBE_IMAGES
from .results import CATEGORIES, SEVERITY_RANK, AuditResult, Finding, SectionResult, incomplete_finding, verdict_of
from .sampling import stratified_subsample

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for, but no CUDA device is available")
    return device


def audit(model: LoadedModel, probe: ProbeDataset, options: AuditOptions | None = None,
          reference: LoadedModel | None = None, progress: Progress | None = None,
          steps: StepReport | None = None) -> AuditResult:
    """progress: the audit's fraction done and stage; steps: each section's status and fraction done as it runs."""
    options = options or AuditOptions()
    options.device = resolve_device(options.device)
    fix_mmap_threshold()
    torch.manual_seed(options.seed)
    np.random.seed(options.seed % 2**32)
    report = progress or (lambda fraction, stage: None)
    report(0.0, "loading model graph")
    _check_conversions(probe, options.seed, model, reference)
    graph = ModelGraph(model.program, model.meta.input.size, options.device, model.module_types)
    context = AuditContext(model, graph, probe, options, reference, report)
    sections = registry.sections(options.sections)
    tracker = SectionSteps(len(sections), report, steps or no_steps)
    done: dict[str, SectionResult] = {}
    for section in _run_order(sections):
        context.section_progress = tracker.started(section)
        done[section.name] = _run_section(section, context)
        tracker.finished(section, done[section.name].status)
    context.section_progress = no_progress
    report(1.0, "done")
    results = [done[section.name] for section in sections]   # the report's order, whatever the run order
    findings = _findings(results)
    return AuditResult(
        model=_model_info(model),
        dataset=_dataset_info(probe),
        reference=_model_info(reference) if reference else None,
        verdict=verdict_of(findings, results),
        metrics=with_cue_cells(_metrics(context), findings),
        findings=findings,
        sections=results,
        environment={"auditsvc": auditsvc.__version__, "torch": torch.__version__, "device": options.device,
                     "seed": options.seed, "python": platform.python_version()},
        settings=_settings(options, done),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _check_conversions(probe: ProbeDataset, seed: int, *models: LoadedModel | None) -> None:
    """A model converted from ONNX or Keras must give the original's logits (onnxruntime's, Keras's) on the
    probe images before any section audits it; the report's model summary gives the difference."""
    for model in models:
        if model is not None and model.origin is not None:
            indices = stratified_subsample(probe.labels, PROBE_IMAGES, seed)
            model.origin.check(model.program, probe.tensors(indices, model.meta.input), f"{len(indices)} probe images")


def _settings(options: AuditOptions, done: dict[str, SectionResult]) -> dict:
    """The options as used: where one was left to the battery, the value the section chose."""
    settings = options.as_dict()
    occlusion = done.get("occlusion")
    for key in ("window", "stride"):
        if settings[f"occlusion_{key}"] is None and occlusion and occlusion.status == "ok":
            settings[f"occlusion_{key}"] = f"{occlusion.data[key]} (automatic)"
    if occlusion and occlusion.status == "ok":
        settings["occlusion_mode"] = occlusion.data["occlusion_mode"]
        if occlusion.data.get("approximation_error"):
            error = occlusion.data["approximation_error"]
            settings["occlusion_error"] = (f"rank correlation {error['rank_correlation']:.3f} with the exact map, "
                                           f"largest difference {error['max_abs_difference']:.4f} (first sample image)")
    if settings["sections"] is None:
        settings["sections"] = "all"
    return {key: "automatic" if value is None else value for key, value in settings.items()}


def _run_order(sections: list[registry.Section]) -> list[registry.Section]:
    """The order sections run in: the registry's. Sections share data only through the context, so any
    order gives the same results; a test runs them backwards to show it."""
    return sections


def _metrics(context: AuditContext) -> dict:
    """findings.json's metrics; when they cannot be computed, the audit still completes without them."""
    try:
        return context.metrics
    except BadInput:
        raise
    except Exception:
        log.error("metrics failed:\n%s", traceback.format_exc())
        return {"accuracy": None, "per_class": {}, "groups": {}}


def _findings(results: list[SectionResult]) -> list[Finding]:
    """Worst first; an incomplete audit says so before anything else."""
    findings = sorted((f for r in results for f in r.findings),
                      key=lambda f: (-SEVERITY_RANK[f.severity], CATEGORIES.index(f.category)))
    incomplete = incomplete_finding(results)
    return [incomplete, *findings] if incomplete else findings


def _run_section(section: registry.Section, context: AuditContext) -> SectionResult:
    started = time.perf_counter()
    try:
        result = section.run(context)
    except BadInput:
        raise
    except Exception as exc:  # one failing method must not sink the audit; the report says what failed
        log.error("section %s failed:\n%s", section.name, traceback.format_exc())
        result = section.result(status="error", reason=_error_reason(exc))
    result.seconds = time.perf_counter() - started
    return result


def _error_reason(exc: Exception) -> str:
    """One line naming the exception, short enough for a report table."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _model_info(model: LoadedModel) -> dict:
    meta = model.meta
    return {"name": meta.name, "version": meta.version, "sha256": model.sha256, "format": model.format,
            "classes": list(meta.classes), "input": list(meta.input.size), "file": model.path.name}


def _dataset_info(probe: ProbeDataset) -> dict:
    return {"sha256": probe.sha256, "images": len(probe),
            "classes": [probe.classes[i] for i in probe.present_classes],
            "source": probe.label, "attributes": probe.attribute_names, "boxes": probe.has_boxes}
