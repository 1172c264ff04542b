import json
import zipfile

import pytest
import torch
from torch import nn

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.archive import sniff_format
from auditsvc.battery.model.loading import load_model
from auditsvc.demo.nets import PlainNet, SeparableNet, tiny_resnet
from tests.conftest import write_meta, write_package

CLASSES = ["a", "b", "c"]


@pytest.mark.parametrize("fmt", ["pt2", "script", "trace"])
def test_every_format_loads_to_one_exported_program_with_the_same_outputs(tmp_path, fmt):
    torch.manual_seed(1)
    model = tiny_resnet(3).eval()
    path = write_package(tmp_path, model, CLASSES, fmt=fmt)
    loaded = load_model(path)
    assert isinstance(loaded.program, torch.export.ExportedProgram)
    assert loaded.format == ("torch.export" if fmt == "pt2" else "torchscript")
    assert len(loaded.sha256) == 64
    batch = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(loaded.program.module()(batch), model(batch), rtol=1e-4, atol=1e-5)


def test_meta_can_come_from_another_path(tmp_path):
    path = write_package(tmp_path / "m", PlainNet(3, widths=(4,)), CLASSES)
    other = write_meta(tmp_path / "other.json", ["x", "y", "z"], name="renamed")
    (tmp_path / "m" / "model.json").unlink()
    assert load_model(path, other).meta.name == "renamed"


def _error(path, meta=None) -> str:
    with pytest.raises(BadInput) as caught:
        load_model(path, meta)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_pickled_module_is_refused_with_the_reason_and_the_fix(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(PlainNet(3), path)
    write_meta(tmp_path / "model.json", CLASSES)
    message = _error(path)
    assert "arbitrary code" in message and "torch.export" in message


def test_legacy_pickle_and_state_dict_are_refused(tmp_path):
    write_meta(tmp_path / "model.json", CLASSES)
    legacy = tmp_path / "legacy.pt"
    torch.save(PlainNet(3), legacy, _use_new_zipfile_serialization=False)
    assert "pickled" in _error(legacy, tmp_path / "model.json")
    weights = tmp_path / "weights.pt"
    torch.save(PlainNet(3).state_dict(), weights)
    assert sniff_format(weights) == "pickle"
    assert "pickled" in _error(weights, tmp_path / "model.json")


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    write_meta(tmp_path / "model.json", CLASSES)
    text = tmp_path / "model.pt2"
    text.write_text("not a model")
    assert "not a torch.export" in _error(text)
    good = write_package(tmp_path / "good", PlainNet(3, widths=(4,)), CLASSES)
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(broken, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data[: len(data) // 2] if "weights/weight_0" in name else data)
    assert "broken.pt2" in _error(broken, tmp_path / "model.json")


@pytest.mark.parametrize("meta, expected", [
    ({"name": "x", "version": "1", "classes": ["a", "b", "c"]}, "missing required key 'input'"),
    ({"name": "x", "version": "1", "classes": ["a"], "input": {}}, "at least 2"),
    ({"name": "x", "version": "1", "classes": ["a", "a", "b"], "input": {}}, "more than once"),
    ({"name": "x", "version": "1", "classes": ["a", "b", "c"],
      "input": {"size": [3, 32], "mean": [0, 0, 0], "std": [1, 1, 1]}}, "input.size"),
    ({"name": "x", "version": "1", "classes": ["a", "b", "c"],
      "input": {"size": [3, 32, 32], "mean": [0], "std": [1, 1, 1]}}, "input.mean"),
    ({"name": "x", "version": "1", "classes": ["a", "b", "c"],
      "input": {"size": [3, 32, 32], "mean": [0, 0, 0], "std": [1, 0, 1]}}, "positive"),
])
def test_invalid_metadata_is_refused(tmp_path, meta, expected):
    path = write_package(tmp_path, PlainNet(3, widths=(4,)), CLASSES)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert expected in _error(path)


def test_missing_and_unparseable_metadata(tmp_path):
    path = write_package(tmp_path, PlainNet(3, widths=(4,)), CLASSES)
    (tmp_path / "model.json").write_text("{not json")
    assert "not valid JSON" in _error(path)
    (tmp_path / "model.json").unlink()
    assert "--meta" in _error(path)


def test_an_exported_shape_that_disagrees_with_model_json_is_named(tmp_path):
    path = write_package(tmp_path, PlainNet(3, widths=(4,)), CLASSES)
    write_meta(tmp_path / "model.json", CLASSES, size=(1, 32, 32))
    assert "exported for input 3x32x32 but model.json declares 1x32x32" in _error(path)


def test_forward_failure_on_the_declared_input(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 9), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    batch, side = torch.export.Dim("batch"), torch.export.Dim("side", min=10, max=512)
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),),
                                  dynamic_shapes=({0: batch, 2: side, 3: side},))
    torch.export.save(program, tmp_path / "model.pt2")
    write_meta(tmp_path / "model.json", CLASSES, size=(3, 8, 8))
    assert "forward pass fails on the declared input 3x8x8" in _error(tmp_path / "model.pt2")


def test_class_count_must_match_the_output(tmp_path):
    path = write_package(tmp_path, PlainNet(3, widths=(4,)), CLASSES)
    write_meta(tmp_path / "model.json", ["a", "b"])
    assert "expected (2, 2)" in _error(path)


class NaNNet(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)) * torch.tensor(float("nan"))


def test_nan_outputs_are_refused(tmp_path):
    path = write_package(tmp_path, NaNNet(), CLASSES)
    assert "NaN" in _error(path)


def test_static_batch_dimension_is_explained(tmp_path):
    model = SeparableNet(3, widths=(4,)).eval()
    program = torch.export.export(model, (torch.randn(1, 3, 32, 32),))
    torch.export.save(program, tmp_path / "model.pt2")
    write_meta(tmp_path / "model.json", CLASSES)
    assert "exported with a fixed batch size of 1" in _error(tmp_path / "model.pt2")


def test_oversized_model_file(tmp_path, monkeypatch):
    from auditsvc.battery.model import archive

    path = write_package(tmp_path, PlainNet(3, widths=(4,)), CLASSES)
    monkeypatch.setattr(archive, "MAX_MODEL_BYTES", 1024)
    assert "larger than" in _error(path)
