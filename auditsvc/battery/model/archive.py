"""Model archives read as data, before any loader sees them.

A torch.export archive (.pt2) is a zip of JSON (the graph, the payload configs) and raw tensor
bytes, plus members that torch reads with pickle: weights or constants marked `use_pickle`,
custom and opaque objects, legacy `<model>.pt` payloads, and the sample inputs. Unpickling
runs arbitrary code, and `torch.export.load` falls back to an unrestricted unpickler when the
restricted one fails. So every member is looked at here first: an archive that would unpickle
anything, reach outside itself or load compiled code is refused, and the sample inputs, which
an audit never needs, are left out of the copy that torch reads (`write_loadable_copy`).

This module imports no torch: the command line and the web process use it before a
sandboxed child loads the model.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import BadInput
from ..limits import MAX_MODEL_BYTES, MAX_MODEL_CONFIG_BYTES, MAX_MODEL_MEMBERS, MAX_MODEL_UNPACKED_BYTES

FIXED_MEMBERS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
MODEL_JSON = re.compile(r"models/([A-Za-z0-9_.-]+)\.json")
WEIGHT = re.compile(r"data/weights/(weight_\d+)")
CONSTANT = re.compile(r"data/constants/(tensor_\d+)")
EXTRA = re.compile(r"extra/[A-Za-z0-9_.-]+")
LEGACY_PAYLOAD = re.compile(r"data/(weights|constants)/[^/]+\.pt")
PICKLED_KINDS = {"custom_obj_": "a custom (TorchScript) object", "opaque_obj_": "an opaque Python object"}
TENSOR_REBUILDING = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                     ("collections", "OrderedDict"), ("torch", "Size")}
COMPILED_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
EXPORT_CALL = ("ep = torch.export.export(model.eval(), (torch.randn(1, C, H, W),), "
               "dynamic_shapes=({0: torch.export.Dim('batch')},)); torch.export.save(ep, 'model.pt2')")
EXPORT_HOWTO = f"export it instead: {EXPORT_CALL}"


@dataclass(frozen=True)
class Pt2Archive:
    path: Path
    prefix: str                   # the archive's root folder, "<name>/"
    models: tuple[str, ...]       # model names: models/<name>.json
    sample_inputs: frozenset[str]  # members left out of the loadable copy


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_kind(path: Path) -> str:
    """The archive's format, from its member names ("onnx" for a .onnx file that is no archive: the sandbox
    parses it); BadInput for anything that is not a model file. Reads no model: the command line and the
    web process call it before a sandbox loads one."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model file {path} not found")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise BadInput(f"model file {path.name} is larger than {MAX_MODEL_BYTES / 2**30:.3g} GiB, the most an audit accepts")
    kind = sniff_format(path)
    if kind == "pickle":
        raise BadInput(
            f"{path.name} is a pickled PyTorch file (torch.save); loading it would run arbitrary code, "
            f"so it is refused. {EXPORT_HOWTO}"
        )
    if kind == "unknown" and path.suffix.lower() == ".onnx":
        return "onnx"
    if kind == "unknown":
        raise BadInput(f"{path.name} is not a torch.export (.pt2), TorchScript (.pt/.ts), ONNX (.onnx) or Keras 3 "
                       "(.keras) model")
    if kind == "torch.export":
        inspect_pt2(path)
    if kind == "keras":
        from .keras_archive import inspect_keras   # which reuses this module's member checks

        inspect_keras(path)
    return kind


def sniff_format(path: Path) -> str:
    """'torch.export', 'torchscript', 'keras', 'pickle' or 'unknown', from the archive's member names only."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return "pickle"
    if not zipfile.is_zipfile(path):
        return "unknown"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "unknown"
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "torch.export"
    if "config.json" in names and "metadata.json" in names:   # what model.save("model.keras") writes
        return "keras"
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "data.pkl" in tails:
        return "pickle"
    return "unknown"


def inspect_pt2(path: Path) -> Pt2Archive:
    """Every member of a .pt2 checked; BadInput naming the first that could run code or escape."""
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_names(name, infos)
            prefix = _common_prefix(name, infos)
            _check_members(name, infos, prefix)
            members = {info.filename[len(prefix):]: info for info in infos}
            if _text(archive, members, "archive_format", name) != "pt2":
                raise BadInput(f"{name}: not a torch.export 'pt2' archive (older torch.export.save formats keep the "
                               "weights pickled); re-export it with torch 2.7 or newer")
            models = tuple(sorted(m.group(1) for key in members if (m := MODEL_JSON.fullmatch(key))))
            if not models:
                raise BadInput(f"{name}: the archive holds no exported program (models/<name>.json)")
            for model in models:
                _check_payloads(archive, members, model, name)
                _check_sample_inputs(archive, members, f"data/sample_inputs/{model}.pt", name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise BadInput(f"{name}: not a readable torch.export archive ({_short(exc)})") from None
    samples = frozenset(prefix + f"data/sample_inputs/{model}.pt" for model in models)
    return Pt2Archive(path, prefix, models, samples)


def write_loadable_copy(archive: Pt2Archive, target: Path) -> Path:
    """The archive without its (pickled) sample inputs; each is an empty member, which torch reads
    as 'no sample inputs' without unpickling anything. CRCs are verified while copying."""
    with zipfile.ZipFile(archive.path) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            if info.filename in archive.sample_inputs:
                out.writestr(copy, b"")
                continue
            try:
                with source.open(info) as reader, out.open(copy, "w", force_zip64=info.file_size > 2**31) as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
            except zipfile.BadZipFile as exc:
                raise BadInput(f"{archive.path.name}: member {_shown(info.filename)} is corrupt ({_short(exc)})") from None
    return target


def _common_prefix(name: str, infos: list[zipfile.ZipInfo]) -> str:
    if not infos:
        raise BadInput(f"{name}: the archive is empty")
    if len(infos) > MAX_MODEL_MEMBERS:
        raise BadInput(f"{name}: the archive has {len(infos)} members; a model archive may have at most "
                       f"{MAX_MODEL_MEMBERS}")
    tops = {info.filename.split("/", 1)[0] for info in infos}
    if len(tops) != 1 or any("/" not in info.filename for info in infos):
        raise BadInput(f"{name}: a torch.export archive keeps every member under one root folder")
    return tops.pop() + "/"


def _check_names(name: str, infos: list[zipfile.ZipInfo]) -> None:
    seen: set[str] = set()
    for info in infos:
        member = info.filename
        parts = PurePosixPath(member).parts
        if (member.startswith("/") or "\\" in member or ".." in parts or "\0" in member
                or (parts and ":" in parts[0])):
            raise BadInput(f"{name}: member {_shown(member)} points outside the archive (path traversal); refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BadInput(f"{name}: member {_shown(member)} is a symbolic link; refused")
        if member in seen:
            raise BadInput(f"{name}: member {_shown(member)} appears twice; refused")
        if info.flag_bits & 0x1:
            raise BadInput(f"{name}: member {_shown(member)} is encrypted; refused")
        seen.add(member)


def _check_members(name: str, infos: list[zipfile.ZipInfo], prefix: str) -> None:
    unpacked = 0
    for info in infos:
        unpacked += info.file_size
        key = info.filename[len(prefix):]
        if LEGACY_PAYLOAD.fullmatch(key):
            raise BadInput(f"{name}: {_shown(key)} holds pickled weights or constants (the legacy format); "
                           "re-export the model with torch.export.save from torch 2.7 or newer")
        if key.startswith(COMPILED_DIRS):
            raise BadInput(f"{name}: the archive holds compiled code ({_shown(key)}: AOTInductor, ExecuTorch or "
                           "similar); only the exported graph and its weights are accepted")
        if not info.is_dir() and not _known_member(key):
            raise BadInput(f"{name}: unexpected member {_shown(key)} in a torch.export archive; refused")
    if unpacked > MAX_MODEL_UNPACKED_BYTES:
        raise BadInput(f"{name}: the archive unpacks to {unpacked >> 20} MiB, more than the "
                       f"{MAX_MODEL_UNPACKED_BYTES >> 20} MiB accepted")


def _known_member(key: str) -> bool:
    return (key in FIXED_MEMBERS or MODEL_JSON.fullmatch(key) is not None or WEIGHT.fullmatch(key) is not None
            or CONSTANT.fullmatch(key) is not None or EXTRA.fullmatch(key) is not None
            or re.fullmatch(r"data/(weights|constants)/[A-Za-z0-9_.-]+_(weights|constants)_config\.json", key) is not None
            or re.fullmatch(r"data/sample_inputs/[A-Za-z0-9_.-]+\.pt", key) is not None
            or re.fullmatch(r"data/constants/(custom_obj|opaque_obj)_\d+", key) is not None)  # refused by name


def _check_payloads(archive: zipfile.ZipFile, members: dict, model: str, name: str) -> None:
    for kind in ("weights", "constants"):
        config_name = f"data/{kind}/{model}_{kind}_config.json"
        if config_name not in members:
            raise BadInput(f"{name}: the archive lacks data/{kind}/{model}_{kind}_config.json")
        config = _json(archive, members, config_name, name).get("config", {})
        if not isinstance(config, dict):
            raise BadInput(f"{name}: {config_name} is malformed")
        for fqn, payload in config.items():
            _check_payload(kind, str(fqn), payload, members, name)


def _check_payload(kind: str, fqn: str, payload: object, members: dict, name: str) -> None:
    what = "weight" if kind == "weights" else "constant"
    if not isinstance(payload, dict):
        raise BadInput(f"{name}: the {what} {_shown(fqn)} has a malformed entry")
    path_name = payload.get("path_name")
    pickled_kind = next((label for prefix, label in PICKLED_KINDS.items()
                         if isinstance(path_name, str) and path_name.startswith(prefix)), None)
    if pickled_kind:
        raise BadInput(f"{name}: the constant {_shown(fqn)} is stored as {pickled_kind}, which loads with pickle "
                       "and can run code; refused (keep only tensors as constants)")
    if payload.get("use_pickle") is not False:
        raise BadInput(f"{name}: the {what} {_shown(fqn)} is stored pickled, and loading a pickle can run code; "
                       "refused (tensor subclasses and quantized tensors are stored this way: convert them to "
                       "plain tensors before exporting)")
    pattern = WEIGHT if kind == "weights" else CONSTANT
    if not isinstance(path_name, str) or not pattern.fullmatch(f"data/{kind}/{path_name}"):
        raise BadInput(f"{name}: the {what} {_shown(fqn)} names an unexpected payload {_shown(str(path_name))}")
    if f"data/{kind}/{path_name}" not in members:
        raise BadInput(f"{name}: the {what} {_shown(fqn)} has no payload in the archive")


def _check_sample_inputs(archive: zipfile.ZipFile, members: dict, key: str, name: str) -> None:
    """The sample inputs are never loaded (the loadable copy leaves them out), but a pickle there that
    calls anything besides torch's tensor rebuilding is a crafted archive: refused. Read as opcodes only."""
    if key not in members:
        return
    data = _read(archive, members, key, name)
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                pickles = [n for n in inner.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if len(pickles) != 1:
                    raise BadInput(f"{name}: the sample inputs are not a torch.save archive; refused")
                data = inner.read(pickles[0])
        for call in _pickle_calls(data):
            if call not in TENSOR_REBUILDING and not (call[0] == "torch" and call[1].endswith("Storage")):
                raise BadInput(f"{name}: the sample inputs hold a pickle that calls {'.'.join(call)[:80]!r}, "
                               "which would run code when loaded; refused")
    except (zipfile.BadZipFile, ValueError, EOFError, IndexError, TypeError):
        raise BadInput(f"{name}: the sample inputs are corrupt; refused") from None


def _pickle_calls(data: bytes) -> list[tuple[str, str]]:
    """The globals a pickle refers to, from its opcodes, without running it; opcodes that build
    arbitrary objects count as a call of their own."""
    calls, strings = [], []
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, _, attribute = str(argument).partition(" ")
            calls.append((module, attribute))
        elif opcode.name == "STACK_GLOBAL":
            calls.append((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
        elif opcode.name in ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4", "PERSID"):
            calls.append(("pickle", opcode.name))
        elif isinstance(argument, str):
            strings.append(argument)
    return calls


def _read(archive: zipfile.ZipFile, members: dict, key: str, name: str) -> bytes:
    info = members.get(key)
    if info is None:
        raise BadInput(f"{name}: the archive lacks {key}")
    if info.file_size > MAX_MODEL_CONFIG_BYTES:
        raise BadInput(f"{name}: {key} is {info.file_size >> 20} MiB; at most {MAX_MODEL_CONFIG_BYTES >> 20} MiB "
                       "are accepted")
    try:
        with archive.open(info) as handle:
            return handle.read(MAX_MODEL_CONFIG_BYTES + 1)
    except zipfile.BadZipFile as exc:
        raise BadInput(f"{name}: member {_shown(key)} is corrupt ({_short(exc)})") from None


def _text(archive: zipfile.ZipFile, members: dict, key: str, name: str) -> str:
    try:
        return _read(archive, members, key, name).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadInput(f"{name}: {key} is not text") from None


def _json(archive: zipfile.ZipFile, members: dict, key: str, name: str) -> dict:
    try:
        data = json.loads(_text(archive, members, key, name))
    except (json.JSONDecodeError, RecursionError):
        raise BadInput(f"{name}: {key} is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadInput(f"{name}: {key} is malformed")
    return data


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]
