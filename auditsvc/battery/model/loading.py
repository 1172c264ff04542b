"""Model package loading: model.pt2 (torch.export), TorchScript, model.onnx or model.keras, plus model.json.

Every format ends as one `torch.export.ExportedProgram`, so every method has a single
code path. Pickled modules are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import pickle
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .archive import EXPORT_CALL, EXPORT_HOWTO, file_sha256, inspect_pt2, model_kind, write_loadable_copy
from ..errors import BadInput
from .keras_import import KerasOrigin, load_keras
from .meta import ModelMeta, load_meta
from .onnx_import import OnnxOrigin, load_onnx
from .ops import refuse_unsafe_ops, refuse_unsafe_script_ops



@dataclass
class LoadedModel:
    meta: ModelMeta
    program: torch.export.ExportedProgram
    format: str  # "torch.export", "torchscript", "onnx" or "keras"
    sha256: str
    path: Path
    module_types: dict[str, str] = field(default_factory=dict)  # TorchScript keeps them; export has them in the graph
    # A model converted from ONNX or Keras: the original's runtime beside it, for the checks (runner.py).
    origin: OnnxOrigin | KerasOrigin | None = None


def load_model(path: Path, meta: ModelMeta | Path | None = None) -> LoadedModel:
    """Load, convert to an ExportedProgram and check one forward pass on the declared input.

    `meta` is the parsed model.json, its path, or None for model.json beside the model."""
    path = Path(path)
    kind = model_kind(path)
    if not isinstance(meta, ModelMeta):
        meta = load_meta(Path(meta) if meta else path.with_name("model.json"))
    example = torch.zeros(2, *meta.input.size)
    module_types: dict[str, str] = {}
    origin = None
    if kind == "torch.export":
        program = _load_export(path)
    elif kind == "onnx":
        program, origin = load_onnx(path, meta)
    elif kind == "keras":
        program, origin = load_keras(path, meta)
    else:
        program, module_types = _load_torchscript(path, example)
    refuse_unsafe_ops(program, path.name)
    check_forward(program, meta, example)
    return LoadedModel(meta, program, kind, file_sha256(path), path, module_types, origin)


def _load_export(path: Path) -> torch.export.ExportedProgram:
    """Read the archive's checked copy without its sample inputs; any attempt to unpickle is an error."""
    archive = inspect_pt2(path)
    with tempfile.TemporaryDirectory(prefix="auditsvc-model-") as scratch:
        loadable = write_loadable_copy(archive, Path(scratch) / "model.pt2")
        try:
            with _unpickling_refused(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.export.load(str(loadable))
        except BadInput:
            raise
        except Exception as exc:  # corrupt archives raise many kinds of errors
            raise BadInput(f"{path.name}: cannot read the torch.export archive ({_first_line(exc)})") from None


@contextmanager
def _unpickling_refused():
    """A tripwire: the archive was checked so that torch never unpickles; if it tries, refuse."""
    def refuse(*args, **kwargs):
        raise BadInput("the model archive asks to unpickle data, which can run code; refused")

    saved = torch.load, pickle.loads, pickle.load
    torch.load = pickle.loads = pickle.load = refuse
    try:
        yield
    finally:
        torch.load, pickle.loads, pickle.load = saved


def _load_torchscript(path: Path, example: torch.Tensor) -> tuple[torch.export.ExportedProgram, dict[str, str]]:
    from torch._export.converter import TS2EPConverter

    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise BadInput(f"{path.name}: cannot read the TorchScript archive ({_first_line(exc)})") from None
    refuse_unsafe_script_ops(scripted, path.name)
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
    _check_input_shape(program, meta)
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


def _check_input_shape(program: torch.export.ExportedProgram, meta: ModelMeta) -> None:
    """A shape fixed at export time that the audit cannot give is refused in words, before a forward pass."""
    shape = _exported_input_shape(program)
    if shape is None:
        return
    if len(shape) != 4:
        raise BadInput(f"the model takes a {len(shape)}-dimensional input; an image classifier takes (N, C, H, W)")
    if isinstance(shape[0], int):
        raise BadInput(f"the model was exported with a fixed batch size of {shape[0]}; the audit runs batches of many "
                       f"sizes, so export it with a dynamic batch dimension: {EXPORT_CALL}")
    fixed = [(axis, declared, given) for axis, declared, given in zip("CHW", meta.input.size, shape[1:])
             if isinstance(given, int) and given != declared]
    if fixed:
        exported = "x".join(str(v) if isinstance(v, int) else "?" for v in shape[1:])
        declared = "x".join(map(str, meta.input.size))
        raise BadInput(f"the model was exported for input {exported} but model.json declares {declared}")


def _exported_input_shape(program: torch.export.ExportedProgram) -> tuple | None:
    """(N, C, H, W) of the first user input: ints where fixed, None where symbolic; None if unknown."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if not isinstance(value, torch.Tensor):
                return None
            return tuple(int(v) if isinstance(v, int) else None for v in value.shape)
    return None


def _forward(program: torch.export.ExportedProgram, batch: torch.Tensor):
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return program.module()(batch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
