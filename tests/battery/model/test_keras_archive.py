"""model.keras read as data first: Lambda layers, custom objects and crafted archives are refused in one line
before Keras loads anything."""

import json
import zipfile

import h5py
import pytest

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.archive import model_kind
from auditsvc.battery.model.loading import load_model
from tests.keras_models import keras, layers, plain, save_package

CLASSES = ["a", "b", "c"]


def _refusal(path) -> str:
    with pytest.raises(BadInput) as refused:
        load_model(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(path.name)
    return message


def _with_head(tmp_path, body):
    inputs = keras.Input((16, 16, 3))
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(body(inputs)))
    return save_package(tmp_path, keras.Model(inputs, outputs), CLASSES)


def test_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "lambda-ran"
    monkeypatch.setenv("KERAS_LAMBDA_MARKER", str(marker))
    touch = lambda t: (open(__import__("os").environ["KERAS_LAMBDA_MARKER"], "w").close(), t)[1]  # noqa: E731
    path = _with_head(tmp_path, layers.Lambda(touch, name="shift"))
    marker.unlink()   # building the model ran the lambda once
    message = _refusal(path)
    assert "'shift' is a Lambda layer" in message and "model.onnx" in message
    assert not marker.exists()
    keras.saving.load_model(path, safe_mode=False, compile=False)   # what loading it unsafely would have done
    assert marker.exists()


@keras.saving.register_keras_serializable(package="acme")
class Doubling(layers.Layer):
    def call(self, inputs):
        return inputs * 2


def halve(t):
    return t / 2


@pytest.mark.parametrize("body, named", [
    (lambda: Doubling(name="double"), "layer 'double' is the custom class 'acme>Doubling'"),
    (lambda: layers.Activation(halve, name="half"), "layer 'half' uses the custom object 'halve'"),
])
def test_custom_objects_are_refused_naming_the_layer(tmp_path, body, named):
    path = _with_head(tmp_path, body())
    for refuse in (model_kind, load_model):   # the web process and the command line refuse it before a sandbox
        with pytest.raises(BadInput, match=named):
            refuse(path)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save_package(tmp_path_factory.mktemp("good"), plain(), CLASSES)


def _rewritten(good, target, change):
    """good's members through change(name, data) -> [(name, data, compression)], written as target."""
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            for name, data, method in change(info.filename, source.read(info)):
                out.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    target.with_name("model.json").write_text(good.with_name("model.json").read_text())
    return target


def test_crafted_archives_are_refused(good, tmp_path):
    stored = zipfile.ZIP_STORED
    traversal = _rewritten(good, tmp_path / "traversal.keras", lambda name, data: [(name, data, stored)] + (
        [("../escape.txt", b"x", stored)] if name == "config.json" else []))
    assert "path traversal" in _refusal(traversal)
    bomb = _rewritten(good, tmp_path / "bomb.keras", lambda name, data: [(
        name, bytes(8 << 20) if name == "model.weights.h5" else data, zipfile.ZIP_DEFLATED)])
    assert "zip bomb" in _refusal(bomb)
    assets = _rewritten(good, tmp_path / "assets.keras", lambda name, data: [(name, data, stored)] + (
        [("assets/vocabulary.txt", b"cat\ndog", stored)] if name == "config.json" else []))
    assert "assets" in _refusal(assets)
    old = _rewritten(good, tmp_path / "old.keras", lambda name, data: [(
        name, json.dumps({"keras_version": "2.15.0"}).encode() if name == "metadata.json" else data, stored)])
    assert "saved by Keras 2.15.0" in _refusal(old)


def test_a_weights_file_that_links_to_other_files_is_refused(good, tmp_path):
    weights = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(good) as source:
        weights.write_bytes(source.read("model.weights.h5"))
    with h5py.File(weights, "r+") as handle:
        handle["elsewhere"] = h5py.ExternalLink("/etc/passwd", "/")
    linked = _rewritten(good, tmp_path / "linked.keras", lambda name, data: [(
        name, weights.read_bytes() if name == "model.weights.h5" else data, zipfile.ZIP_STORED)])
    assert "ExternalLink" in _refusal(linked)
