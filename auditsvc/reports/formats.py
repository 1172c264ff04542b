"""Number formats shared by the report and the portal (both Jinja environments use these filters)."""

from __future__ import annotations


def pct(value) -> str:
    """A fraction as a percentage with one decimal; n/a when there is none."""
    return "n/a" if value is None else f"{value:.1%}"


FILTERS = {"pct": pct}
