"""The Jinja2 environment for portal pages: url(), static(), messages, the report's number filters; autoescaped."""

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
    return env
