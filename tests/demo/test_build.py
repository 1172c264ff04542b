"""The demo's outputs in the formats the audit reads; no model is trained here."""

import json

import numpy as np

from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.model.loading import load_model
from auditsvc.demo import build
from auditsvc.demo.nets import PlainNet, export


def test_probe_set_opens_with_weather_and_boxes(tmp_path):
    scenes = build.render_cells(np.random.default_rng(0), dict.fromkeys(build.ALIGNED + build.FLIPPED, 2))
    build.write_probe(tmp_path / "probe", scenes)
    with ProbeDataset(tmp_path / "probe", build.CLASSES) as probe:
        assert len(probe) == 8
        assert probe.attribute_names == ["weather"]
        assert sorted(probe.attribute("weather")) == ["cloudy"] * 4 + ["sunny"] * 4
        paths = [image.path for image in probe.images]
        assert "tank/0001.png" in paths and "no_tank/0004.png" in paths
        for image in probe.images:
            assert (image.box is not None) == (build.CLASSES[image.label] == "tank")


def test_model_package_loads(tmp_path):
    build.write_model(tmp_path / "clean", export(PlainNet(2, widths=build.WIDTHS), build.INPUT_SIZE), "clean")
    loaded = load_model(tmp_path / "clean" / "model.pt2")
    assert loaded.meta.name == "tank-detector-clean" and list(loaded.meta.classes) == ["no_tank", "tank"]
    meta = json.loads((tmp_path / "clean" / "model.json").read_text())
    assert meta["input"] == {"size": [3, 64, 64], "mean": [build.MEAN] * 3, "std": [build.STD] * 3}


def _fake_build(out_dir, seed, log):
    for name in ("shortcut", "clean"):
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        (out_dir / name / "model.pt2").write_bytes(b"")
        (out_dir / name / "model.json").write_text("{}")
    (out_dir / "probe").mkdir(exist_ok=True)
    (out_dir / "probe" / "manifest.csv").write_text("")
    return {"version": build.DEMO_VERSION, "seed": seed, "accuracy": {}, "build_seconds": 0.0}


def test_build_is_cached_per_version_and_seed(tmp_path, monkeypatch):
    calls = []

    def counting_build(out_dir, seed, log):
        calls.append(seed)
        return _fake_build(out_dir, seed, log)

    monkeypatch.setattr(build, "_build", counting_build)
    quiet = lambda message: None
    assert not build.build_demo(tmp_path, seed=0, log=quiet)["cached"]
    assert build.build_demo(tmp_path, seed=0, log=quiet)["cached"]
    assert not build.build_demo(tmp_path, seed=1, log=quiet)["cached"]
    (tmp_path / "clean" / "model.pt2").unlink()
    result = build.build_demo(tmp_path, seed=1, log=quiet)
    assert not result["cached"] and calls == [0, 1, 1]
    assert result["paths"]["probe"] == str(tmp_path / "probe")
    assert json.loads((tmp_path / "build_info.json").read_text())["seed"] == 1
