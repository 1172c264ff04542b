"""Number formats shared by the report and the portal (both Jinja environments use these filters)."""

from __future__ import annotations

from ..battery.metrics import pct

FILTERS = {"pct": pct}
