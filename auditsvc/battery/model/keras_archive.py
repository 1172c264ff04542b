"""model.keras (Keras 3) read as data, before Keras sees it.

A `.keras` file is a zip of config.json (the model's layers and how they connect), metadata.json
and model.weights.h5. Keras rebuilds the model from config.json by importing the classes it
names, so a config is code: a `Lambda` layer carries marshalled Python bytecode, and a custom
layer names a class from the user's own module. Here every member is checked (the model
archives' checks: path traversal, links, duplicates, encryption; sizes and compression ratios
against the limits) and every object the config names must be Keras's own; every layer must be
one of the classes the converter (keras_import.py) turns into torch modules exactly. Anything
else is refused naming the layer, with ONNX as the route for such models.

This module imports no torch and no Keras: the command line and the web process use it before
a sandboxed child loads the model.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from ..limits import MAX_COMPRESSION_RATIO, MAX_MODEL_MEMBERS, MAX_MODEL_UNPACKED_BYTES
from .archive import _check_names, _json, _shown, _short

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
MEMBERS = (CONFIG, METADATA, WEIGHTS)
ONNX_ROUTE = "export the model to ONNX instead (model.onnx taking (N, C, H, W), e.g. with tf2onnx --inputs-as-nchw)"
SAVE_CALL = "model.save('model.keras')"
MODELS = {"Functional", "Sequential"}
# The Keras layer classes keras_import.py converts to torch modules exactly. Dropout and noise
# layers do nothing at inference and become no-ops.
LAYERS = frozenset({
    "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization",
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Flatten", "Reshape", "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Rescaling", "Normalization",
    "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "Identity",
})
ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "silu", "swish", "hard_silu", "hard_swish",
    "gelu", "elu", "selu", "softplus", "softsign", "leaky_relu", "mish", "softmax",
})
# Modules a serialized Keras object may come from: Keras's public API and its model classes.
KERAS_MODULES = ("keras", "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
                 "keras.models", "keras.src.models.functional", "keras.src.models.sequential")


@dataclass(frozen=True)
class KerasArchive:
    path: Path
    config: dict          # config.json: the model's class, layers and their connections
    keras_version: str


def inspect_keras(path: Path) -> KerasArchive:
    """Every member and the whole config checked; BadInput naming the first member or layer refused."""
    name = Path(path).name
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members(name, infos)
            members = {info.filename: info for info in infos}
            metadata = _json(archive, members, METADATA, name)
            config = _json(archive, members, CONFIG, name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise BadInput(f"{name}: not a readable Keras archive ({_short(exc)})") from None
    version = str(metadata.get("keras_version", ""))
    if not version.startswith("3."):
        raise BadInput(f"{name} was saved by Keras {version[:20] or 'of an unknown version'}; only Keras 3 files are "
                       f"read: load it in Keras 3 and save it again ({SAVE_CALL}), or {ONNX_ROUTE}")
    check_config(config, name)
    return KerasArchive(Path(path), config, version)


def _check_members(name: str, infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MODEL_MEMBERS:
        raise BadInput(f"{name}: the archive has {len(infos)} members; a model archive may have at most "
                       f"{MAX_MODEL_MEMBERS}")
    _check_names(name, infos)
    unpacked = 0
    for info in infos:
        unpacked += info.file_size
        if info.filename not in MEMBERS:
            what = "assets (files of preprocessing layers such as StringLookup)" if info.filename.startswith(
                "assets/") else f"the unexpected member {_shown(info.filename)}"
            raise BadInput(f"{name}: the archive holds {what}; a model.keras holds only {', '.join(MEMBERS)}; "
                           f"{ONNX_ROUTE}")
        if info.file_size > 1 << 20 and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise BadInput(f"{name}: member {_shown(info.filename)} expands "
                           f"{info.file_size // max(info.compress_size, 1)}x; refused as a zip bomb")
    if unpacked > MAX_MODEL_UNPACKED_BYTES:
        raise BadInput(f"{name}: the archive unpacks to {unpacked >> 20} MiB, more than the "
                       f"{MAX_MODEL_UNPACKED_BYTES >> 20} MiB accepted")
    names = {info.filename for info in infos}
    missing = [member for member in (CONFIG, WEIGHTS) if member not in names]
    if missing:
        raise BadInput(f"{name}: the archive lacks {missing[0]}; save the model with {SAVE_CALL}")


def check_config(config: dict, name: str) -> None:
    """The model is a Functional or Sequential model of known layers, and every object it names is Keras's."""
    if config.get("class_name") not in MODELS or not _is_keras(config):
        raise BadInput(f"{name}: the model is a {_shown(str(config.get('class_name')))} from "
                       f"{_shown(str(config.get('module')))}; only Functional and Sequential Keras models are read "
                       f"(a subclassed keras.Model is Python code); {ONNX_ROUTE}")
    for layer in model_layers(config, name):
        _check_layer(layer, name)


def model_layers(config: dict, name: str) -> list[dict]:
    """The layer entries of a Functional or Sequential config."""
    layers = config.get("config", {}).get("layers") if isinstance(config.get("config"), dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise BadInput(f"{name}: config.json holds no list of layers; save the model with {SAVE_CALL}")
    return layers


def layer_name(layer: dict) -> str:
    config = layer.get("config")
    return str(layer.get("name") or (config.get("name") if isinstance(config, dict) else "") or "?")


def _check_layer(layer: dict, name: str) -> None:
    class_name, shown = str(layer.get("class_name")), _shown(layer_name(layer))
    if class_name == "Lambda":
        raise BadInput(f"{name}: layer {shown} is a Lambda layer: Python code in the file, which is never loaded; "
                       f"{ONNX_ROUTE}")
    if str(layer.get("module")).startswith("keras.src.ops."):
        raise BadInput(f"{name}: layer {shown} is the Keras operation {class_name[:80]} (an operation written on "
                       f"tensors, such as x + 3), which this service cannot convert exactly; {ONNX_ROUTE}")
    if not _is_keras(layer):
        custom = str(layer.get("registered_name") or class_name)
        raise BadInput(f"{name}: layer {shown} is the custom class {_shown(custom)} from "
                       f"{_shown(str(layer.get('module')))}: custom objects are code and are not loaded; {ONNX_ROUTE}")
    if not isinstance(layer.get("config"), dict):
        raise BadInput(f"{name}: layer {shown} has no config; save the model with {SAVE_CALL}")
    if class_name in MODELS:
        for inner in model_layers(layer, name):
            _check_layer(inner, name)
        return
    foreign = _foreign_object(layer["config"])
    if foreign:
        raise BadInput(f"{name}: layer {shown} uses the custom object {_shown(foreign)}: custom objects and functions "
                       f"are code and are not loaded; {ONNX_ROUTE}")
    if class_name not in LAYERS:
        raise BadInput(f"{name}: layer {shown} is a {class_name[:80]} layer, which this service cannot convert "
                       f"exactly; {ONNX_ROUTE}")
    _check_dtype(layer, name)
    activation = layer["config"].get("activation")
    if activation is not None and activation not in ACTIVATIONS:
        raise BadInput(f"{name}: layer {shown} uses the activation {_shown(str(activation))}, which this service "
                       f"cannot convert exactly; {ONNX_ROUTE}")


def _is_keras(entry: dict) -> bool:
    """A Keras object: from Keras's modules, and registered under its own class name (or none)."""
    module, registered = entry.get("module"), entry.get("registered_name")
    return (isinstance(module, str) and module in KERAS_MODULES
            and registered in (None, entry.get("class_name")))


def _foreign_object(value, depth: int = 0) -> str | None:
    """The first serialized object (a dict with a class_name) in a layer's config that is not Keras's:
    a custom class, or a Python function or lambda."""
    if depth > 32:
        return "deeply nested config"
    if isinstance(value, dict):
        if "class_name" in value and value.get("class_name") != "__keras_tensor__" and not _is_keras(value):
            named = value.get("config") if value.get("class_name") == "function" else value.get("registered_name")
            return str(named or value.get("class_name"))
        return next((found for item in value.values() if (found := _foreign_object(item, depth + 1))), None)
    if isinstance(value, list):
        return next((found for item in value if (found := _foreign_object(item, depth + 1))), None)
    return None


def _check_dtype(layer: dict, name: str) -> None:
    """The converted model computes in float32, as the audit does."""
    dtype = layer["config"].get("dtype")
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name") if isinstance(dtype.get("config"), dict) else None
    if dtype not in (None, "float32"):
        raise BadInput(f"{name}: layer {_shown(layer_name(layer))} computes in {_shown(str(dtype))}; save the model "
                       f"in float32 (keras.config.set_dtype_policy('float32') before building it), or {ONNX_ROUTE}")
