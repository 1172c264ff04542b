"""Tiny Keras 3 CNNs built on Keras's PyTorch backend (the one auditsvc imports), saved as model.keras.

Their BatchNormalization statistics are random, not Keras's identity defaults, so that a conversion
that read them wrongly would show in the logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auditsvc.battery.model.keras_import import keras_module

keras = keras_module()
layers = keras.layers


def plain(classes: int = 3, size=(16, 16, 3)):
    """Conv2D / BatchNormalization / ReLU / MaxPooling2D / Flatten / Dense, softmax as the Dense activation."""
    inputs = keras.Input(size)
    x = layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="logits")(x)
    return _randomized(keras.Model(inputs, outputs, name="plain"))


def residual(classes: int = 3, size=(16, 16, 3)):
    """Two residual blocks (Add), a strided one with a 1x1 shortcut; a Softmax layer at the end."""
    inputs = keras.Input(size)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for block, stride in (("block1", 1), ("block2", 2)):
        y = layers.Conv2D(8, 3, strides=stride, padding="same", name=f"{block}_conv1")(x)
        y = layers.BatchNormalization(name=f"{block}_bn1")(y)
        y = layers.Activation("relu", name=f"{block}_relu")(y)
        y = layers.Conv2D(8, 3, padding="same", name=f"{block}_conv2")(y)
        shortcut = x if stride == 1 else layers.Conv2D(8, 1, strides=stride, name=f"{block}_shortcut")(x)
        x = layers.Activation("relu", name=f"{block}_out")(layers.Add(name=f"{block}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(classes, name="logits")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    return _randomized(keras.Model(inputs, outputs, name="residual"))


def separable(classes: int = 3, size=(16, 16, 3)):
    """Depthwise-separable: SeparableConv2D, and DepthwiseConv2D + a 1x1 convolution with relu6 and
    hard swish, ZeroPadding2D before a valid strided depthwise, Concatenate; logits out (no softmax)."""
    inputs = keras.Input(size)
    x = layers.Rescaling(0.5, offset=0.1, name="rescale")(inputs)
    x = layers.SeparableConv2D(8, 3, padding="same", activation="relu6", name="sep1")(x)
    x = layers.BatchNormalization(name="sep1_bn")(x)
    y = layers.ZeroPadding2D(((0, 1), (0, 1)), name="dw_pad")(x)
    y = layers.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=2, name="dw")(y)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.Activation("hard_swish", name="dw_act")(y)
    y = layers.Conv2D(8, 1, name="pw")(y)
    z = layers.AveragePooling2D(2, name="avg")(x)
    x = layers.Concatenate(name="concat")([y, z])
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return _randomized(keras.Model(inputs, outputs, name="separable"))


def _randomized(model, seed: int = 0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, channels).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.3, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return model


def save_package(directory: Path, model, classes, name: str = "tiny-keras", version: str = "1.0") -> Path:
    """model.keras and model.json (channels x height x width, as the audit reads images) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.keras"
    model.save(path)
    height, width, channels = model.inputs[0].shape[1:]
    meta = {"name": name, "version": version, "classes": list(classes),
            "input": {"size": [channels, height, width], "mean": [0.5] * channels, "std": [0.25] * channels}}
    (directory / "model.json").write_text(json.dumps(meta))
    return path


def predict(model, batch):
    """Keras's own output for a (N, C, H, W) torch batch."""
    import torch

    return torch.as_tensor(model(batch.permute(0, 2, 3, 1), training=False)).detach()
