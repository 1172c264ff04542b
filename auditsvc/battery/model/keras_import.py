"""model.keras (Keras 3): loaded by Keras on its PyTorch backend, rebuilt as torch modules, exported.

Keras reads the file in safe mode and without compiling it, from a scratch copy that holds only
the members keras_archive.py checked (it refused Lambda layers, custom objects and every layer
class the converter does not reproduce), after the weights file was walked for links and external
data. The model is then rebuilt as torch modules, one per Keras layer and named after it
(keras_layers.py), that take (N, C, H, W) like every model the audit reads: a channels-last
model's maps are held channels-first and put in Keras's order only where the order matters
(Flatten, Reshape). The model contract asks for logits, so a final softmax (a Softmax or
Activation layer, or activation='softmax' on the last layer) is left out. Rebuilding rather than
exporting Keras's own modules gives a graph of plain convolutions with the Keras layer names,
which the audit's layer sections read; torch.export of a Keras model holds every map
channels-last between transposes.

The exported program's logits are checked against Keras's own (`KerasOrigin.check`), on seeded
random inputs when the model is loaded (an upload check refuses a model the conversion gets
wrong) and on probe images before an audit's first section (runner.py): a difference above 1e-4
(relative to the largest logit where that exceeds 1) is refused naming the first layer whose
outputs differ; the report's model summary gives the largest difference.

Keras is imported here only, on first use (its import costs seconds that other models need not
pay), with KERAS_BACKEND=torch, on the CPU, and with KERAS_HOME in a private temporary folder
holding a fixed keras.json, so that it neither reads nor writes ~/.keras.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BadInput
from ..limits import MAX_MODEL_MEMBERS, MAX_MODEL_UNPACKED_BYTES
from .keras_archive import MEMBERS, MODELS, ONNX_ROUTE, WEIGHTS, KerasArchive, inspect_keras, layer_name, model_layers
from .keras_layers import Build, Layout, Refused, build_layer, refused
from .meta import ModelMeta

TOLERANCE = 1e-4          # messages and the README say 1e-4
CHECK_INPUTS = 4          # seeded random inputs the converted model is checked on when it is loaded
CHECK_BATCH = 8           # images per forward pass of a check
KERAS_CONFIG = {"floatx": "float32", "epsilon": 1e-7, "backend": "torch", "image_data_format": "channels_last"}
Ref = tuple[str, int, int]   # a Keras tensor: (layer name, node index, tensor index)


def keras_module():
    """Keras on its PyTorch backend, imported on first use."""
    if "keras" not in sys.modules:
        home = tempfile.mkdtemp(prefix="auditsvc-keras-")
        Path(home, "keras.json").write_text(json.dumps(KERAS_CONFIG), encoding="utf-8")
        atexit.register(shutil.rmtree, home, True)
        os.environ["KERAS_BACKEND"] = "torch"
        os.environ["KERAS_HOME"] = home
        # Keras computes the reference logits on the CPU: a GPU's TF32 convolutions differ by more than 1e-4.
        os.environ["KERAS_TORCH_DEVICE"] = "cpu"
    import keras

    if keras.config.backend() != "torch":
        raise RuntimeError(f"Keras was imported with the {keras.config.backend()} backend before auditsvc "
                           "imported it; set KERAS_BACKEND=torch")
    return keras


def load_keras(path: Path, meta: ModelMeta) -> tuple[torch.export.ExportedProgram, "KerasOrigin"]:
    """The exported program converted from model.keras, checked against Keras on random inputs."""
    archive = inspect_keras(path)
    keras = keras_module()
    model = _read(archive, keras)
    converted = _Converter(keras, archive, meta).convert(model)
    program = _export(converted.net, meta, path.name)
    origin = KerasOrigin(path.name, archive.keras_version, converted, model, keras)
    generator = torch.Generator().manual_seed(0)
    origin.check(program, torch.randn(CHECK_INPUTS, *meta.input.size, generator=generator),
                 f"{CHECK_INPUTS} random inputs")
    return program, origin


# --- reading -----------------------------------------------------------------------------------------

def _read(archive: KerasArchive, keras):
    name = archive.path.name
    with tempfile.TemporaryDirectory(prefix="auditsvc-keras-") as scratch:
        copy = _checked_copy(archive.path, Path(scratch))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return keras.saving.load_model(copy, safe_mode=True, compile=False)
        except Exception as exc:  # Keras raises many kinds on a file it cannot rebuild
            raise BadInput(f"{name}: Keras cannot load the model ({_first_line(exc)}); {ONNX_ROUTE}") from None


def _checked_copy(path: Path, scratch: Path) -> Path:
    """The checked members only (CRCs verified while copying), with the weights file walked first."""
    copy = scratch / "model.keras"
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as target:
            for member in MEMBERS:
                if member in source.namelist():
                    with source.open(member) as reader, target.open(member, "w", force_zip64=True) as writer:
                        shutil.copyfileobj(reader, writer, 1 << 20)
            source.extract(WEIGHTS, scratch)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadInput(f"{path.name}: a member is corrupt ({_first_line(exc)})") from None
    _check_weights(scratch / WEIGHTS, path.name)
    return copy


def _check_weights(path: Path, name: str) -> None:
    """model.weights.h5 holds groups and datasets only: no soft or external links, no external or virtual
    datasets (which would read other files), within the archive limits."""
    import h5py

    try:
        with h5py.File(path, "r") as weights:
            _walk_weights(h5py, weights, name, [0, 0], 0)
    except BadInput:
        raise
    except Exception as exc:  # h5py raises many kinds on a malformed file
        raise BadInput(f"{name}: {WEIGHTS} is not a readable HDF5 file ({_first_line(exc)})") from None
    finally:
        path.unlink(missing_ok=True)


def _walk_weights(h5py, group, name: str, totals: list[int], depth: int) -> None:
    if depth > 32:
        raise BadInput(f"{name}: {WEIGHTS} nests groups more than 32 deep; refused")
    for key in group:
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise BadInput(f"{name}: {WEIGHTS} holds a {type(link).__name__} ({key[:80]!r}), which can point at "
                           "other files; refused")
        item = group[key]
        totals[0] += 1
        if totals[0] > MAX_MODEL_MEMBERS:
            raise BadInput(f"{name}: {WEIGHTS} holds more than {MAX_MODEL_MEMBERS} objects; refused")
        if isinstance(item, h5py.Group):
            _walk_weights(h5py, item, name, totals, depth + 1)
        elif isinstance(item, h5py.Dataset):
            if item.external or item.is_virtual:
                raise BadInput(f"{name}: {WEIGHTS} holds a dataset stored in other files ({key[:80]!r}); refused")
            totals[1] += int(np.prod(item.shape or (1,))) * item.dtype.itemsize
            if totals[1] > MAX_MODEL_UNPACKED_BYTES:
                raise BadInput(f"{name}: {WEIGHTS} declares more than {MAX_MODEL_UNPACKED_BYTES >> 20} MiB of "
                               "weights; refused")


# --- the Keras graph -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Call:
    """One call of a Keras layer: node `output[1]` of layer `name`."""
    name: str
    class_name: str
    entry: dict              # the layer's entry in config.json
    inputs: tuple[Ref, ...]
    output: Ref


@dataclass(frozen=True)
class _Graph:
    source: Ref
    input_shape: list | None   # Keras's, batch first
    calls: list[_Call]         # each after the calls its inputs come from
    output: Ref


def _graph(config: dict, file_name: str) -> _Graph:
    entries = model_layers(config, file_name)
    if config.get("class_name") == "Sequential":
        return _sequential_graph(config, entries)
    inputs, outputs = (_refs(config["config"].get(key)) for key in ("input_layers", "output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise BadInput(f"{file_name}: the model has {len(inputs)} inputs and {len(outputs)} outputs; an image "
                       f"classifier has one of each; {ONNX_ROUTE}")
    calls, shape = [], None
    for entry in entries:
        name = layer_name(entry)
        if entry.get("class_name") == "InputLayer":
            shape = entry["config"].get("batch_shape") if (name, 0, 0) == inputs[0] else shape
            continue
        for index, node in enumerate(entry.get("inbound_nodes") or []):
            if not isinstance(node, dict) or _tensors(node.get("kwargs")):
                raise BadInput(f"{file_name}: layer {name[:80]!r} is called in a way the converter does not read "
                               f"(tensors as keyword arguments); {ONNX_ROUTE}")
            calls.append(_Call(name, str(entry.get("class_name")), entry, tuple(_tensors(node.get("args"))),
                               (name, index, 0)))
    return _Graph(inputs[0], shape, _in_order(calls, inputs[0], outputs[0], file_name), outputs[0])


def _sequential_graph(config: dict, entries: list[dict]) -> _Graph:
    if entries and entries[0].get("class_name") == "InputLayer":
        source, shape, entries = (layer_name(entries[0]), 0, 0), entries[0]["config"].get("batch_shape"), entries[1:]
    else:
        source, shape = ("", 0, 0), config["config"].get("build_input_shape")
    calls, previous = [], source
    for entry in entries:
        output = (layer_name(entry), 0, 0)
        calls.append(_Call(output[0], str(entry.get("class_name")), entry, (previous,), output))
        previous = output
    return _Graph(source, shape, calls, previous)


def _refs(value) -> list[Ref]:
    """input_layers / output_layers: one [name, node, tensor] or a list of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value or [] if isinstance(v, list) and len(v) == 3]


def _tensors(value) -> list[Ref]:
    """The Keras tensors among a node's arguments, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = value.get("config", {}).get("keras_history", [])
            return _refs(history)
        return []
    if isinstance(value, list):
        return [ref for item in value for ref in _tensors(item)]
    return []


def _in_order(calls: list[_Call], source: Ref, output: Ref, file_name: str) -> list[_Call]:
    """The calls the output depends on, each after those it reads from (the config's order where it is one)."""
    producer = {call.output: call for call in calls}
    needed, stack = set(), [output]
    while stack:
        ref = stack.pop()
        if ref == source or ref in needed:
            continue
        if ref not in producer:
            raise BadInput(f"{file_name}: the model reads the tensor {ref[0][:80]!r} that no layer makes; "
                           f"save the model again with model.save('model.keras')")
        needed.add(ref)
        stack.extend(producer[ref].inputs)
    waiting = [call for call in calls if call.output in needed]
    ready, ordered = {source}, []
    while waiting:
        runnable = [call for call in waiting if all(ref in ready for ref in call.inputs)]
        if not runnable:
            raise BadInput(f"{file_name}: the layers form a cycle at {waiting[0].name[:80]!r}; refused")
        ordered += runnable
        ready.update(call.output for call in runnable)
        waiting = [call for call in waiting if call not in runnable]
    return ordered


# --- the torch model -----------------------------------------------------------------------------------

class KerasNet(nn.Module):
    """A Keras model's graph of layer calls over torch modules named after the Keras layers."""

    def __init__(self, source: Ref, output: Ref):
        super().__init__()
        self._source, self._output = source, output
        self._calls: list[tuple[str | None, tuple[Ref, ...], Ref]] = []
        self._paths: dict[str, str] = {}   # Keras layer name -> attribute

    def _append_call(self, call: _Call, module: nn.Module | None) -> None:
        path = self._paths.get(call.name)
        if module is not None and path is None:
            path = re.sub(r"\W", "_", call.name, flags=re.ASCII) or "layer"
            while hasattr(self, path) or path[0].isdigit():
                path = f"{path}_" if not path[0].isdigit() else f"layer_{path}"
            self.add_module(path, module)
            self._paths[call.name] = path
        self._calls.append((path if module is not None else None, call.inputs, call.output))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self._output]

    def run(self, x: torch.Tensor) -> dict[Ref, torch.Tensor]:
        """Every Keras tensor's value, channels-first."""
        values = {self._source: x}
        for path, inputs, output in self._calls:
            args = [values[ref] for ref in inputs]
            values[output] = self._modules[path](*args) if path else args[0]
        return values


@dataclass
class _Converted:
    net: KerasNet
    layout: Layout
    model_class: str
    layers: int
    softmax: str | None        # the final softmax left out: the layer's name
    softmax_fused: bool        # ... as that layer's activation (else a layer of its own)


class _Converter:
    def __init__(self, keras, archive: KerasArchive, meta: ModelMeta):
        self.keras, self.archive, self.meta = keras, archive, meta
        self.name = archive.path.name
        self.layout = Layout(self._channels_last(archive.config))
        self.layers = 0

    def convert(self, model) -> _Converted:
        config = self.archive.config
        graph = _graph(config, self.name)
        self._check_input(graph.input_shape)
        softmax, fused = self._final_softmax(graph)
        example = torch.zeros(1, *self.meta.input.size)
        net, _ = self._net(graph, model, example, softmax)
        return _Converted(net.eval(), self.layout, str(config.get("class_name")), self.layers, softmax, fused)

    def _net(self, graph: _Graph, model, x: torch.Tensor, softmax: str | None = None):
        net = KerasNet(graph.source, graph.output)
        values = {graph.source: x}
        for call in graph.calls:
            args = [values[ref] for ref in call.inputs]
            layer = model.get_layer(call.name)
            if call.class_name in MODELS:
                if len(args) != 1:
                    raise refused(self.name, call.name, call.class_name, f"takes {len(args)} inputs")
                module, out = self._net(_graph(call.entry, self.name), layer, args[0])
            else:
                module = net._modules.get(net._paths.get(call.name, "")) or self._module(call, layer, args, softmax)
                out = self._run(call, module, args)
            net._append_call(call, module)
            values[call.output] = out
        return net, values[graph.output]

    def _module(self, call: _Call, layer, args: list[torch.Tensor], softmax: str | None) -> nn.Module | None:
        self.layers += 1
        build = Build(self.layout, self._weight, float(self.keras.config.epsilon()), call.name == softmax)
        try:
            return build_layer(call.class_name, call.entry["config"], layer, args, build)
        except Refused as exc:
            raise refused(self.name, call.name, call.class_name, str(exc)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise refused(self.name, call.name, call.class_name, f"has a config the converter cannot read "
                                                                 f"({_first_line(exc)})") from None

    def _run(self, call: _Call, module: nn.Module | None, args: list[torch.Tensor]) -> torch.Tensor:
        if module is None:
            return args[0]
        try:
            with torch.no_grad():
                return module.eval()(*args)
        except Exception as exc:
            shapes = ", ".join("x".join(map(str, a.shape[1:])) for a in args)
            raise refused(self.name, call.name, call.class_name, f"fails on its input {shapes} once converted "
                                                                 f"({_first_line(exc)})") from None

    def _weight(self, variable) -> torch.Tensor:
        return torch.from_numpy(np.array(self.keras.ops.convert_to_numpy(variable), dtype=np.float32, copy=True))

    def _final_softmax(self, graph: _Graph) -> tuple[str | None, bool]:
        """The last layer's softmax, which the converted model leaves out: (layer name, whether fused)."""
        last = next((call for call in graph.calls if call.output == graph.output), None)
        if last is None:
            return None, False
        activation = last.entry.get("config", {}).get("activation")
        if last.class_name == "Softmax" or (last.class_name == "Activation" and activation == "softmax"):
            return last.name, False
        if activation == "softmax":
            return last.name, True
        return None, False

    def _channels_last(self, config: dict) -> bool:
        formats = set()
        stack = [config]
        while stack:
            entry = stack.pop()
            formats.add(entry.get("config", {}).get("data_format"))
            if entry.get("class_name") in MODELS:
                stack.extend(model_layers(entry, self.name))
        formats.discard(None)
        if len(formats) > 1:
            raise BadInput(f"{self.name}: its layers mix channels-last and channels-first data formats; "
                           f"{ONNX_ROUTE}")
        return formats != {"channels_first"}

    def _check_input(self, batch_shape) -> None:
        """Keras's input shape (batch first, None where any size goes) against model.json's (C, H, W)."""
        if not isinstance(batch_shape, list) or len(batch_shape) != 4:
            raise BadInput(f"{self.name}: the model takes an input of shape {batch_shape}; an image classifier "
                           "takes a batch of images (batch, height, width, channels)")
        channels, height, width = self.meta.input.size
        expected = (height, width, channels) if self.layout.channels_last else (channels, height, width)
        if any(given is not None and given != wanted for given, wanted in zip(batch_shape[1:], expected)):
            order = "height x width x channels" if self.layout.channels_last else "channels x height x width"
            shown = "x".join("?" if v is None else str(v) for v in batch_shape[1:])
            raise BadInput(f"{self.name} takes input {shown} ({order}) but model.json declares "
                           f"{channels}x{height}x{width} (channels x height x width)")


# --- export and the check against Keras -------------------------------------------------------------------

def _export(net: KerasNet, meta: ModelMeta, name: str) -> torch.export.ExportedProgram:
    example = torch.randn(2, *meta.input.size, generator=torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        raise BadInput(f"{name}: the converted model cannot be exported ({_first_line(exc)}); {ONNX_ROUTE}") from None


@dataclass
class KerasOrigin:
    """Where a converted model came from: Keras's own model beside it, and how closely the two agree."""
    source: str               # the file's name, for messages
    keras_version: str
    converted: _Converted
    model: object             # the Keras model
    keras: object             # the keras module
    difference: float = 0.0   # the largest logit difference found by the last check
    compared_on: str = ""     # "18 probe images"

    def check(self, program: torch.export.ExportedProgram, images: torch.Tensor, what: str) -> None:
        """Both run on `images`; BadInput when their logits differ by more than TOLERANCE (relative to the
        largest logit where that exceeds 1), naming the first layer whose outputs differ."""
        module = program.module()
        difference = 0.0
        for batch in images.split(CHECK_BATCH):
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours = module(batch)
                theirs = keras_logits(self.keras, self.model, self.converted, batch)
            if tuple(ours.shape) != tuple(theirs.shape):
                raise BadInput(f"{self.source}: the converted model gives logits of shape {list(ours.shape)}, Keras "
                               f"{list(theirs.shape)}; {ONNX_ROUTE}")
            difference = max(difference, float((ours - theirs).abs().max()))
            if not _close(ours, theirs):
                layer = first_difference(self.keras, self.model, self.converted, batch)
                where = f"the first layer whose outputs differ is {layer!r}" if layer else "no single layer differs"
                raise BadInput(f"{self.source}: the model converted from Keras gives logits that differ from Keras's "
                               f"by up to {difference:.2g} on {what} (at most 1e-4 is accepted); {where}; "
                               f"{ONNX_ROUTE}")
        self.difference, self.compared_on = difference, what

    def describe(self) -> str:
        converted = self.converted
        order = "channels-last, its maps held as (N, C, H, W)" if converted.layout.channels_last else "channels-first"
        parts = [f"converted from Keras {self.keras_version} ({converted.model_class} model, {converted.layers} "
                 f"layers as torch modules named after them; {order})"]
        if converted.softmax:
            where = (f"the activation of {converted.softmax!r}" if converted.softmax_fused
                     else f"layer {converted.softmax!r}")
            parts.append(f"final softmax left out ({where}): the audit reads logits")
        parts.append(f"logits match Keras within {self.difference:.2g} on {self.compared_on}")
        return "; ".join(parts)


def keras_logits(keras, model, converted: _Converted, batch: torch.Tensor) -> torch.Tensor:
    """Keras's own output on a (N, C, H, W) batch, before the final softmax the conversion left out."""
    inputs = converted.layout.keras(batch).contiguous()
    if converted.softmax is None:
        return _as_tensor(model(inputs, training=False))
    layer = model.get_layer(converted.softmax)
    if not converted.softmax_fused:
        return _as_tensor(keras.Model(model.inputs, layer.input)(inputs, training=False))
    saved = layer.activation
    layer.activation = keras.activations.linear
    try:
        return _as_tensor(model(inputs, training=False))
    finally:
        layer.activation = saved


def first_difference(keras, model, converted: _Converted, batch: torch.Tensor) -> str | None:
    """The first layer of the outer model (in the converted model's order) whose output differs from Keras's;
    nested models and layers called more than once are not compared on their own."""
    net, layout = converted.net, converted.layout
    calls = [output[0] for _, _, output in net._calls]
    names = [name for path, _, (name, node, _) in net._calls
             if node == 0 and calls.count(name) == 1 and name != converted.softmax
             and not isinstance(net._modules.get(path or ""), KerasNet)]
    if not names:
        return None
    try:
        with torch.no_grad():
            ours = net.run(batch)
            probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
            theirs = probe(layout.keras(batch).contiguous(), training=False)
    except Exception:  # the diagnosis is a courtesy: the refusal stands without it
        return None
    for name, value in zip(names, theirs if isinstance(theirs, (list, tuple)) else [theirs]):
        if not _close(ours[(name, 0, 0)], layout.torch(_as_tensor(value))):
            return name
    return None


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Within the tolerance, relative to the largest value where that exceeds 1."""
    return (ours.shape == theirs.shape
            and float((ours - theirs).abs().max()) <= TOLERANCE * max(1.0, float(theirs.abs().max())))


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return torch.as_tensor(value).detach().float().cpu()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
