"""The Jinja2 environment for portal pages: url(), static(), messages; autoescaped."""

from django.contrib.messages import get_messages
from django.templatetags.static import static
from django.urls import reverse
from jinja2 import Environment


def environment(**options) -> Environment:
    env = Environment(**options)
    env.globals.update(url=lambda name, *args, **kwargs: reverse(name, args=args or None, kwargs=kwargs or None),
                       static=static, get_messages=get_messages)
    env.filters["pct"] = lambda value: "-" if value is None else f"{value:.0%}"
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"
    return env
