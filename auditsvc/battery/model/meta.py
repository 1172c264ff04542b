"""model.json: the model's name, version, classes and input specification, parsed and checked.

Every check is linear in the size of the input and bounded by the limits in limits.py; anything
wrong is a BadInput with one line. Keys other than name, version, classes and input (at the top
level, and other than size, mean and std in input) are ignored: teams keep notes such as
"license" or "framework" there. They are still held to the size and depth caps and must be plain
JSON (no NaN, no NUL characters, no integers past 64 bits), since the service stores the whole
document in its database.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from ..limits import (MAX_ABS_MEAN, MAX_CLASS_NAME_CHARS, MAX_CLASSES, MAX_INPUT_SIDE, MAX_META_BYTES,
                     MAX_META_DEPTH, MAX_META_INT_BITS, MAX_NAME_CHARS, MAX_RELEASE_TAG_CHARS, MAX_STD,
                     MAX_VERSION_CHARS, MIN_CLASSES, MIN_INPUT_SIDE, MIN_STD)


@dataclass(frozen=True)
class InputSpec:
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def size(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


@dataclass(frozen=True)
class ModelMeta:
    name: str
    version: str
    classes: tuple[str, ...]
    input: InputSpec

    @classmethod
    def from_dict(cls, data: object, source: str = "model.json") -> "ModelMeta":
        if isinstance(data, dict):
            _check_class_count(data.get("classes"), source)   # the clearer message, before walking them
        _check_plain_json(data, source)
        if not isinstance(data, dict):
            raise BadInput(f"{source}: expected a JSON object with name, version, classes and input")
        for key in ("name", "version", "classes", "input"):
            if key not in data:
                raise BadInput(f"{source}: missing required key '{key}'")
        name = _label(data["name"], f"{source}: 'name'", MAX_NAME_CHARS)
        version = _label(data["version"], f"{source}: 'version'", MAX_VERSION_CHARS)
        classes = _classes(data["classes"], source)
        return cls(name, version, classes, _input_spec(data["input"], source))

    def as_dict(self) -> dict:
        """model.json as plain data, as a sandboxed child is given it."""
        spec = self.input
        return {"name": self.name, "version": self.version, "classes": list(self.classes),
                "input": {"size": list(spec.size), "mean": list(spec.mean), "std": list(spec.std)}}


def load_meta(path: Path) -> ModelMeta:
    path = Path(path)
    try:
        exists, is_file = path.exists(), path.is_file()
        if is_file:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_META_BYTES + 1)
    except (OSError, ValueError) as exc:  # a name too long, a NUL in it, no permission
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BadInput(f"model metadata {_shown(str(path))} cannot be read ({reason})") from None
    if not exists:
        raise BadInput(f"model metadata {path} not found: put model.json beside the model or pass --meta")
    if not is_file:
        raise BadInput(f"model metadata {path} is not a regular file")
    return ModelMeta.from_dict(parse_meta_json(raw, path.name), path.name)


def parse_meta_json(raw: bytes, source: str = "model.json") -> object:
    """The JSON value of a model.json's bytes, with its size and depth checked before parsing."""
    if len(raw) > MAX_META_BYTES:
        raise BadInput(f"{source} is larger than {MAX_META_BYTES // 1024} KiB (the limit for model.json)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{source}: not valid JSON (the file is not UTF-8 text)") from None
    if _nesting_depth(text) > MAX_META_DEPTH:
        raise BadInput(f"{source} is nested more than {MAX_META_DEPTH} levels deep; refused")
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicate_keys(source),
                          parse_constant=_refuse_constant(source))
    except RecursionError:
        raise BadInput(f"{source} is nested too deep; refused") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{source}: not valid JSON ({exc})") from None
    except ValueError:  # an integer past Python's digit limit (4300 digits)
        raise BadInput(f"{source}: a number has too many digits; refused") from None


def check_release_tag(tag: str) -> str:
    """A release tag (not part of model.json) held to the same rules as the name; '' is allowed."""
    if tag == "":
        return tag
    return _label(tag, "the release tag", MAX_RELEASE_TAG_CHARS)


def forbidden_character(text: str) -> str | None:
    """The first character that may not appear in a name drawn in reports, as 'U+XXXX', or None.

    Control characters (newlines and tabs included), lone surrogates, line and paragraph
    separators and the bidirectional overrides that make text read differently than it is stored.
    """
    match = _FORBIDDEN.search(text)
    return f"U+{ord(match.group()):04X}" if match else None


_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# One token per match and no backtracking, so the scan is linear (a pattern for whole strings is
# quadratic on '"\\"\\"\\"...').
_JSON_STRUCTURE = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def _nesting_depth(text: str) -> int:
    """Deepest nesting of arrays and objects, counted without recursion and skipping strings."""
    depth = deepest = 0
    in_string = False
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_META_DEPTH:
                break
        else:
            depth -= 1
    return deepest


def _object_without_duplicate_keys(source: str):
    def build(pairs: list[tuple[str, object]]) -> dict:
        data = dict(pairs)
        if len(data) != len(pairs):
            seen: set[str] = set()
            duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise BadInput(f"{source}: key {_shown(duplicate)} appears twice in one object; keep one")
        return data
    return build


def _refuse_constant(source: str):
    def refuse(name: str) -> float:
        raise BadInput(f"{source}: {name} is not a JSON number; write a finite number")
    return refuse


def _check_plain_json(data: object, source: str) -> None:
    """The value is plain JSON a database can store, within the size and depth caps; no recursion.

    model.json may come as a dict (the service parses uploads itself), so this is checked here
    and not only when parsing text. The size is a lower bound of the JSON text's.
    """
    size = 0
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_META_DEPTH:
            raise BadInput(f"{source} is nested more than {MAX_META_DEPTH} levels deep; refused")
        size += _own_size(value, source)
        if size > MAX_META_BYTES:
            raise BadInput(f"{source} is larger than {MAX_META_BYTES // 1024} KiB (the limit for model.json)")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _own_size(value: object, source: str) -> int:
    """Characters a JSON value takes without its children (a lower bound); refuses what is not plain JSON."""
    if isinstance(value, dict):
        if len(value) > MAX_META_BYTES:
            return len(value)   # too large already; the caller refuses it without looking at the keys
        for key in value:
            if not isinstance(key, str):
                raise BadInput(f"{source}: object keys must be strings, got {type(key).__name__}")
        return 2 + len(value) + sum(_string_size(key, source) for key in value)
    if isinstance(value, list):
        return 2 + len(value)
    if isinstance(value, str):
        return _string_size(value, source)
    if isinstance(value, bool) or value is None:
        return 4
    if isinstance(value, int):
        if value.bit_length() > MAX_META_INT_BITS:
            raise BadInput(f"{source}: an integer is too large (more than {MAX_META_INT_BITS} bits)")
        return 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadInput(f"{source}: {value} is not a JSON number; write a finite number")
        return 1
    raise BadInput(f"{source}: a value of type {type(value).__name__} is not JSON")


def _string_size(text: str, source: str) -> int:
    if len(text) > MAX_META_BYTES:
        raise BadInput(f"{source} is larger than {MAX_META_BYTES // 1024} KiB (the limit for model.json)")
    if "\x00" in text:
        raise BadInput(f"{source}: a string holds a NUL character (U+0000); remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{source}: a string holds a lone surrogate (an invalid \\ud800-\\udfff escape)") from None
    return len(text) + 2


def _label(value: object, what: str, limit: int) -> str:
    """A non-blank one-line string of at most `limit` characters: a name, version or class name."""
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise BadInput(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    bad = forbidden_character(value)
    if bad:
        raise BadInput(f"{what} {_shown(value)} holds the control or layout character {bad}; "
                       "use plain one-line text")
    return value


def _check_class_count(classes: object, source: str) -> None:
    if isinstance(classes, list) and len(classes) > MAX_CLASSES:
        raise BadInput(f"{source}: 'classes' has {len(classes)} entries; at most {MAX_CLASSES} are allowed")


def _classes(classes: object, source: str) -> tuple[str, ...]:
    if not isinstance(classes, list) or len(classes) < MIN_CLASSES:
        raise BadInput(f"{source}: 'classes' must be a list of at least {MIN_CLASSES} class names")
    _check_class_count(classes, source)
    first_seen: dict[str, int] = {}
    for index, name in enumerate(classes):
        _label(name, f"{source}: classes[{index}]", MAX_CLASS_NAME_CHARS)
        # Two spellings of the same text (composed or decomposed accents) look the same in a report.
        key = unicodedata.normalize("NFC", name)
        if key in first_seen:
            earlier = first_seen[key]
            form = "" if classes[earlier] == name else ", the same text in another Unicode form"
            raise BadInput(f"{source}: class name {_shown(name)} appears more than once in 'classes' "
                           f"(entries {earlier} and {index}{form})")
        first_seen[key] = index
    return tuple(classes)


def _input_spec(spec: object, source: str) -> InputSpec:
    if not isinstance(spec, dict) or not {"size", "mean", "std"} <= spec.keys():
        raise BadInput(f"{source}: 'input' must be an object with 'size', 'mean' and 'std'")
    size, mean, std = spec["size"], spec["mean"], spec["std"]
    if not (isinstance(size, list) and len(size) == 3 and all(_is_int(v) and v > 0 for v in size)):
        raise BadInput(f"{source}: input.size must be [C, H, W] with positive integers, got {_shown(size)}")
    channels, height, width = size
    if channels not in (1, 3):
        raise BadInput(f"{source}: input.size must have 1 (grey) or 3 (RGB) channels, got {channels}")
    if not (MIN_INPUT_SIDE <= height <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= width <= MAX_INPUT_SIDE):
        raise BadInput(f"{source}: input height and width must be between {MIN_INPUT_SIDE} and {MAX_INPUT_SIDE} "
                       f"pixels, got {height}x{width}")
    for key, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) == channels
                and all(_is_number(v) and math.isfinite(v) for v in values)):
            raise BadInput(f"{source}: input.{key} must be a list of {channels} numbers, one per channel")
    if any(v <= 0 for v in std):
        raise BadInput(f"{source}: input.std values must be positive")
    if not all(MIN_STD <= v <= MAX_STD for v in std):
        raise BadInput(f"{source}: input.std must lie between {MIN_STD:g} and {MAX_STD:g} (pixels are scaled to "
                       f"[0, 1] first), got {_shown(std)}")
    if not all(abs(v) <= MAX_ABS_MEAN for v in mean):
        raise BadInput(f"{source}: input.mean must lie between {-MAX_ABS_MEAN:g} and {MAX_ABS_MEAN:g} (pixels are "
                       f"scaled to [0, 1] first), got {_shown(mean)}")
    return InputSpec(channels, height, width, tuple(map(float, mean)), tuple(map(float, std)))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)   # JSON true is not 1


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: object, limit: int = 60) -> str:
    """A value as it appears in a message: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

