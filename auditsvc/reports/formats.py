"""Number formats shared by the report and the portal (both Jinja environments use these filters)."""

from __future__ import annotations


def pct(value, decimals: int = 1) -> str:
    """A fraction as a percentage (one decimal unless told); n/a when there is none."""
    return "n/a" if value is None else f"{value:.{decimals}%}"


FILTERS = {"pct": pct}
