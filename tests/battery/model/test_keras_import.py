"""model.keras: Keras 3 CNNs rebuilt as torch modules and exported, with Keras's own output as the reference."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model import keras_archive, keras_layers
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.battery.model.keras_import import KerasOrigin, _Converter, _export, first_difference
from auditsvc.battery.model.keras_archive import inspect_keras
from auditsvc.battery.model.loading import load_model
from auditsvc.battery.model.meta import load_meta
from tests import keras_models
from tests.keras_models import keras, layers, predict, save_package

CLASSES = ["a", "b", "c"]


@pytest.mark.parametrize("build, softmax", [(keras_models.plain, "the activation of 'logits'"),
                                            (keras_models.residual, "layer 'probabilities'"),
                                            (keras_models.separable, None)])
def test_keras_cnns_export_to_the_logits_keras_computes(tmp_path, build, softmax):
    model = build()
    loaded = load_model(save_package(tmp_path, model, CLASSES))
    assert loaded.format == "keras" and isinstance(loaded.program, torch.export.ExportedProgram)
    batch = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(7))   # not the load check's inputs
    logits = loaded.program.module()(batch)
    if softmax is None:
        expected = predict(model, batch)
    elif build is keras_models.residual:   # Keras's own tensor before its Softmax layer
        expected = predict(keras.Model(model.inputs, model.get_layer("logits").output), batch)
    else:
        expected = None
    if expected is not None:
        assert float((logits - expected).abs().max()) <= 1e-4
    if softmax:
        torch.testing.assert_close(torch.softmax(logits, 1), predict(model, batch), atol=1e-5, rtol=0)
    described = loaded.origin.describe()
    assert described.startswith("converted from Keras 3.") and "on 4 random inputs" in described
    assert (f"final softmax left out ({softmax})" in described) if softmax else "softmax" not in described
    assert loaded.origin.difference <= 1e-4


def test_the_audit_names_layers_as_keras_does(tmp_path):
    loaded = load_model(save_package(tmp_path, keras_models.residual(), CLASSES))
    graph = ModelGraph(loaded.program, (3, 16, 16))
    # A layer that is several torch ops is a container of named parts: block2_conv1.pad, block2_conv1.conv.
    convolutions = {layer.name for layer in graph.conv_layers()}
    assert convolutions == {"stem", "block1_conv1", "block1_conv2", "block2_conv1.conv", "block2_conv2",
                            "block2_shortcut"}
    assert graph.last_spatial_layer().name == "block2_out" and graph.output_layer().name == "logits"


def test_a_conversion_that_differs_is_refused_naming_the_first_layer_that_differs(tmp_path):
    model = keras_models.plain()
    archive = inspect_keras(save_package(tmp_path, model, CLASSES))
    meta = load_meta(tmp_path / "model.json")
    converted = _Converter(keras, archive, meta).convert(model)
    with torch.no_grad():
        converted.net.c2.conv.weight[0, 0, 0, 0] += 0.5   # as if the second convolution were read wrongly
    batch = torch.randn(3, 3, 16, 16)
    assert first_difference(keras, model, converted, batch) == "c2"
    origin = KerasOrigin("model.keras", keras.__version__, converted, model, keras)
    with pytest.raises(BadInput, match="differ from Keras's by up to .* on 3 probe images .*the first layer whose "
                                       "outputs differ is 'c2'"):
        origin.check(_export(converted.net, meta, "model.keras"), batch, "3 probe images")


def test_the_input_size_and_the_classes_must_match_model_json(tmp_path):
    path = save_package(tmp_path, keras_models.separable(classes=2), CLASSES)
    with pytest.raises(BadInput, match="model.json lists 3 classes"):
        load_model(path)
    path = save_package(tmp_path / "big", keras_models.separable(size=(24, 24, 3)), CLASSES)
    (path.parent / "model.json").write_text((path.parent / "model.json").read_text().replace("24", "16"))
    with pytest.raises(BadInput, match=r"takes input 24x24x3 \(height x width x channels\) but model.json declares "
                                       r"3x16x16"):
        load_model(path)


@pytest.mark.parametrize("layer, named", [
    (lambda: layers.LayerNormalization(name="norm"), "'norm' is a LayerNormalization layer"),
    (lambda: layers.UpSampling2D(interpolation="bilinear", name="up"), "'up' (UpSampling2D) interpolates 'bilinear'"),
])
def test_a_layer_that_cannot_be_converted_exactly_is_refused_naming_it(tmp_path, layer, named):
    inputs = keras.Input((16, 16, 3))
    x = layer()(layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(BadInput) as refused:
        load_model(save_package(tmp_path, model, CLASSES))
    assert named in str(refused.value) and "model.onnx" in str(refused.value)


def test_every_accepted_layer_and_activation_has_a_conversion():
    converted = set(keras_layers.BUILDERS) | keras_layers.NO_OPS | set(keras_layers.MERGES) | {"Concatenate"}
    assert keras_archive.LAYERS == converted | {"InputLayer"}
    assert keras_archive.ACTIVATIONS == set(keras_layers.ACTIVATIONS) | {"linear", "softmax"}


def test_keras_is_imported_only_for_keras_models(tiny_package):
    code = ("import sys; from pathlib import Path; from auditsvc.battery import load_model, model_kind; "
            f"model_kind(Path({str(tiny_package)!r})); print('keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.stdout.strip() == "False", done.stderr[-2000:]
