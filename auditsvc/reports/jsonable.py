"""Results as plain JSON: the one conversion for findings.json and for what the service stores of it.

numpy (and torch) scalars and arrays become Python numbers and lists, NaN and infinities become
null (PostgreSQL's jsonb and strict JSON readers take neither), tuples become lists. Anything else
that JSON has no value for is an error, never a string that merely looks like one.
"""

from __future__ import annotations

import math
from typing import Any

_KEYS = (str, int, float, bool, type(None))   # what json.dumps turns into an object key


def to_jsonable(value: Any) -> Any:
    """`value` as dicts, lists, str, int, float (finite), bool and None; TypeError for what has no JSON value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)   # a str subclass (an enum) as its plain value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, type):   # numpy and torch scalars and arrays
        plain = value.tolist()
        if type(plain) is not type(value):
            return to_jsonable(plain)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _key(key: Any) -> Any:
    key = to_jsonable(key)
    if not isinstance(key, _KEYS):
        raise TypeError(f"not a JSON object key: {type(key).__name__}")
    return key
