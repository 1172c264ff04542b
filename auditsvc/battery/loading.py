"""Model package loading: model.pt2 (torch.export) or TorchScript, plus model.json.

Both formats end as one `torch.export.ExportedProgram`, so every method has a single
code path. Pickled modules are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import BadInput

EXPORT_HOWTO = (
    "export it instead: ep = torch.export.export(model.eval(), (torch.randn(1, C, H, W),), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)); torch.export.save(ep, 'model.pt2')"
)
MAX_MODEL_BYTES = 2 * 1024**3


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


@dataclass
class LoadedModel:
    meta: ModelMeta
    program: torch.export.ExportedProgram
    format: str  # "torch.export" or "torchscript"
    sha256: str
    path: Path
    module_types: dict[str, str] = field(default_factory=dict)  # TorchScript keeps them; export has them in the graph


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sniff_format(path: Path) -> str:
    """'torch.export', 'torchscript', 'pickle' or 'unknown', from the archive's members only."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return "pickle"
    if not zipfile.is_zipfile(path):
        return "unknown"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "unknown"
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "torch.export"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "data.pkl" in tails:
        return "pickle"
    return "unknown"


def load_model(path: Path, meta_path: Path | None = None) -> LoadedModel:
    """Load, convert to an ExportedProgram and check one forward pass on the declared input."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model file {path} not found")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise BadInput(f"model file {path.name} is larger than {MAX_MODEL_BYTES / 2**30:.3g} GiB, the most an audit accepts")
    meta = load_meta(Path(meta_path) if meta_path else path.with_name("model.json"))
    kind = sniff_format(path)
    if kind == "pickle":
        raise BadInput(
            f"{path.name} is a pickled PyTorch file (torch.save); loading it would run arbitrary code, "
            f"so it is refused. {EXPORT_HOWTO}"
        )
    if kind == "unknown":
        raise BadInput(f"{path.name} is not a torch.export (.pt2) or TorchScript (.pt/.ts) model archive")
    example = torch.zeros(2, *meta.input.size)
    module_types: dict[str, str] = {}
    if kind == "torch.export":
        program = _load_export(path)
    else:
        program, module_types = _load_torchscript(path, example)
    check_forward(program, meta, example)
    return LoadedModel(meta, program, kind, file_sha256(path), path, module_types)


def _load_export(path: Path) -> torch.export.ExportedProgram:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path))
    except Exception as exc:  # corrupt archives raise many kinds of errors
        raise BadInput(f"{path.name}: cannot read the torch.export archive ({_first_line(exc)})") from None


def _load_torchscript(path: Path, example: torch.Tensor) -> tuple[torch.export.ExportedProgram, dict[str, str]]:
    from torch._export.converter import TS2EPConverter

    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise BadInput(f"{path.name}: cannot read the TorchScript archive ({_first_line(exc)})") from None
    scripted.eval()
    module_types = {name: module.original_name for name, module in scripted.named_modules() if name}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TS2EPConverter(scripted, (example,)).convert(), module_types
    except Exception as exc:
        raise BadInput(
            f"{path.name}: this TorchScript model cannot be converted to an exported program "
            f"({_first_line(exc)}); {EXPORT_HOWTO}"
        ) from None


def check_forward(program: torch.export.ExportedProgram, meta: ModelMeta, example: torch.Tensor) -> None:
    """The model must map (N, C, H, W) to finite logits of shape (N, len(classes))."""
    size = "x".join(map(str, meta.input.size))
    try:
        output = _forward(program, example)
    except Exception as exc:
        try:
            _forward(program, example[:1])
        except Exception:
            raise BadInput(f"model forward pass fails on the declared input {size} from model.json "
                           f"({_first_line(exc)})") from None
        raise BadInput(f"model runs on a batch of 1 but not of {example.shape[0]}: the batch dimension must be "
                       f"dynamic; {EXPORT_HOWTO}") from None
    if isinstance(output, (tuple, list)) and len(output) == 1:
        output = output[0]
    expected = (example.shape[0], len(meta.classes))
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise BadInput(
            f"model output has shape {got} for a batch of {expected[0]}, expected {expected}: "
            f"model.json lists {len(meta.classes)} classes"
        )
    if not torch.isfinite(output).all():
        raise BadInput("model outputs NaN or infinite logits on the declared input")


def _forward(program: torch.export.ExportedProgram, batch: torch.Tensor):
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return program.module()(batch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
