"""Model package loading: model.pt2 (torch.export) or TorchScript, plus model.json.

Both formats end as one `torch.export.ExportedProgram`, so every method has a single
code path. Pickled modules are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import BadInput
from .limits import MAX_MODEL_BYTES
from .meta import ModelMeta, load_meta

EXPORT_HOWTO = (
    "export it instead: ep = torch.export.export(model.eval(), (torch.randn(1, C, H, W),), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)); torch.export.save(ep, 'model.pt2')"
)


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
