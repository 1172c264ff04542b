"""Finished audits for portal and selector tests, made in milliseconds: created and moved along their
life cycle by the services, with the findings and metrics a run would have stored (no sandbox run;
tests/audits/test_isolation.py and the browser tests run real ones)."""

from __future__ import annotations

from auditsvc.audits import services
from auditsvc.audits.models import Audit, AuditFinding, ModelVersion


def another_version(version: ModelVersion, version_name: str, release_tag: str = "", **meta) -> ModelVersion:
    """A second version of `version`'s model (a row only: the pages that show it read no file)."""
    return ModelVersion.objects.create(organization=version.organization, name=version.name,
                                       version=version_name, release_tag=release_tag, meta=version.meta | meta,
                                       format="torchscript", sha256="9" * 64, file=f"other/{version_name}.pt",
                                       uploaded_by=version.uploaded_by)


def finding(code: str, severity: str = "warn") -> dict:
    return {"code": code, "category": "shortcut", "severity": severity, "title": f"Title of {code}",
            "summary": f"Summary of {code}."}


def finished_audit(version, probe, *, verdict: str = "pass", findings=(), metrics=None, seed: int = 0,
                   reference=None) -> Audit:
    audit = services.audit_create(organization=version.organization, user=version.uploaded_by,
                                  model_version=version, probe_set=probe, seed=seed, reference=reference)
    services.audit_transition(audit, Audit.Status.RUNNING)
    AuditFinding.objects.bulk_create([AuditFinding(audit=audit, **f) for f in findings])
    return services.audit_transition(audit, Audit.Status.DONE, verdict=verdict, progress=1.0,
                                     metrics=metrics or {"accuracy": 0.5, "groups": {}})
