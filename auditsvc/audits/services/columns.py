"""Text and JSON checked against their columns before a row is saved: PostgreSQL fails an insert
whose text is too long or holds a NUL character (SQLite keeps it whole), and its jsonb takes
neither NaN nor infinities. Errors name the field the user filled in."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError
from django.db import models

from ..models import ApiToken, ModelVersion, Organization, ProbeSet

# Where a column's text comes from, for the error: (form field, what the user calls it).
_COLUMN_SOURCES = {
    ModelVersion: {"name": ("meta", "the name in model.json"), "version": ("meta", "the version in model.json"),
                   "release_tag": ("release_tag", "the release tag")},
    ProbeSet: {"name": ("name", "the probe set name")},
    ApiToken: {"name": ("name", "the token name")},
    Organization: {"name": ("name", "the organization name")},
}


def check_text(model, **values) -> None:
    """Refuse text that does not fit its column."""
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        field = model._meta.get_field(name)
        problem = _text_problem(value, field.max_length) if isinstance(value, str) else None
        if problem:
            key, label = _COLUMN_SOURCES.get(model, {}).get(name, (name, field.verbose_name))
            errors.setdefault(key, []).append(f"{label[:1].upper()}{label[1:]} {problem}.")
    if errors:
        raise ValidationError(errors)


def check_columns(instance) -> None:
    """Every text and JSON column of a row about to be saved."""
    model = type(instance)
    texts = {f.name: getattr(instance, f.attname) for f in model._meta.concrete_fields
             if isinstance(f, (models.CharField, models.TextField)) and not isinstance(f, models.FileField)}
    check_text(model, **texts)
    for field in model._meta.concrete_fields:
        if isinstance(field, models.JSONField):
            problem = json_problem(getattr(instance, field.attname))
            if problem:
                key = "meta" if field.name == "meta" else field.name
                raise ValidationError({key: f"{'model.json' if key == 'meta' else field.name} {problem}."})


def json_problem(value, depth: int = 0) -> str | None:
    """What PostgreSQL's jsonb would refuse: NUL characters, NaN and infinities."""
    if depth > 200:
        return "is nested too deeply"
    if isinstance(value, str):
        return "contains a NUL character" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "contains NaN or an infinite number"
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return None
    for item in items:
        problem = json_problem(item, depth + 1)
        if problem:
            return problem
    return None


def one_line(text: str) -> str:
    """User strings (model names) on one line: a failure message, a mail header without injected headers."""
    return " ".join(text.split())


def _text_problem(value: str, limit: int | None = None) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are accepted"
    return None
