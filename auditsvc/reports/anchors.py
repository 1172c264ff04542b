"""The report's anchors, so that the portal can link into a stored report: each finding in detail, and
each section where it starts (in the body, or in the appendix for an appendix section)."""

from __future__ import annotations


def finding_anchor(index: int) -> str:
    """The finding at `index` (0-based) of findings.json's findings, in the report's findings in detail."""
    return f"finding-{index + 1}"


def section_anchor(name: str) -> str:
    """The section `name` (its key in findings.json's sections)."""
    return f"section-{name}"


def section_detail_anchor(name: str) -> str:
    """The full tables a body section keeps for the appendix."""
    return f"appendix-{name}"
