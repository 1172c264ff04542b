"""Number formats shared by the report and the portal (both Jinja environments use these filters)."""

from __future__ import annotations

from ..battery.metrics import pct


def duration(seconds: float | None) -> str:
    """'0.4 s', '14 s', '2 min 14 s', '1 h 5 min'; '-' for None. (portal/poller.html writes the same.)"""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    whole = round(seconds)
    hours, minutes, rest = whole // 3600, whole % 3600 // 60, whole % 60
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


FILTERS = {"pct": pct, "duration": duration}
