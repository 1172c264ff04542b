"""model.json: the model's name, version, classes and input specification, parsed and checked."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput


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
        if not isinstance(data, dict):
            raise BadInput(f"{source}: expected a JSON object with name, version, classes and input")
        for key in ("name", "version", "classes", "input"):
            if key not in data:
                raise BadInput(f"{source}: missing required key '{key}'")
        name, version, classes, spec = data["name"], data["version"], data["classes"], data["input"]
        if not isinstance(name, str) or not name.strip():
            raise BadInput(f"{source}: 'name' must be a non-empty string")
        if not isinstance(version, str) or not version.strip():
            raise BadInput(f"{source}: 'version' must be a non-empty string")
        if not isinstance(classes, list) or len(classes) < 2:
            raise BadInput(f"{source}: 'classes' must be a list of at least 2 class names")
        if not all(isinstance(c, str) and c.strip() for c in classes):
            raise BadInput(f"{source}: every entry of 'classes' must be a non-empty string")
        if len(set(classes)) != len(classes):
            duplicate = next(c for c in classes if classes.count(c) > 1)
            raise BadInput(f"{source}: class name {duplicate!r} appears more than once in 'classes'")
        return cls(name, version, tuple(classes), _input_spec(spec, source))

    def as_dict(self) -> dict:
        """model.json as plain data, as a sandboxed child is given it."""
        spec = self.input
        return {"name": self.name, "version": self.version, "classes": list(self.classes),
                "input": {"size": list(spec.size), "mean": list(spec.mean), "std": list(spec.std)}}


def _input_spec(spec: object, source: str) -> InputSpec:
    if not isinstance(spec, dict) or not {"size", "mean", "std"} <= spec.keys():
        raise BadInput(f"{source}: 'input' must be an object with 'size', 'mean' and 'std'")
    size, mean, std = spec["size"], spec["mean"], spec["std"]
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        raise BadInput(f"{source}: input.size must be [C, H, W] with positive integers, got {size!r}")
    channels, height, width = size
    if channels not in (1, 3):
        raise BadInput(f"{source}: input.size must have 1 (grey) or 3 (RGB) channels, got {channels}")
    if not 8 <= height <= 1024 or not 8 <= width <= 1024:
        raise BadInput(f"{source}: input height and width must be between 8 and 1024 pixels, got {height}x{width}")
    for key, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) == channels
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            raise BadInput(f"{source}: input.{key} must be a list of {channels} numbers, one per channel")
    if any(v <= 0 for v in std):
        raise BadInput(f"{source}: input.std values must be positive")
    return InputSpec(channels, height, width, tuple(map(float, mean)), tuple(map(float, std)))


def load_meta(path: Path) -> ModelMeta:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model metadata {path} not found: put model.json beside the model or pass --meta")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path.name}: not valid JSON ({exc})") from None
    return ModelMeta.from_dict(data, path.name)
