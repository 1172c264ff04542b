"""The Jinja2 environment for portal pages: url(), static(), messages, the report's number filters, dates and
durations; autoescaped."""

from django.contrib.messages import get_messages
from django.templatetags.static import static
from django.urls import reverse
from jinja2 import Environment

from auditsvc.reports.formats import FILTERS


def environment(**options) -> Environment:
    env = Environment(**options)
    env.globals.update(url=lambda name, *args, **kwargs: reverse(name, args=args or None, kwargs=kwargs or None),
                       static=static, get_messages=get_messages)
    env.filters.update(FILTERS)
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"
    env.filters["duration"] = duration
    return env


def duration(seconds: float | None) -> str:
    """'under 1 s', '41 s', '3 min 20 s', '4 min', '2 h 5 min'; '-' for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return "under 1 s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    return f"{seconds} s"
