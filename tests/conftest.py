"""Shared fixtures: tiny model packages and probe sets written to temporary directories."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auditsvc.demo.nets import PlainNet, export

warnings.filterwarnings("ignore", category=UserWarning)
pytest_plugins = ["tests.service_fixtures"]


def write_meta(path: Path, classes, size=(3, 32, 32), name="tiny", version="1.0") -> Path:
    channels = size[0]
    meta = {"name": name, "version": version, "classes": list(classes),
            "input": {"size": list(size), "mean": [0.5] * channels, "std": [0.25] * channels}}
    path.write_text(json.dumps(meta))
    return path


def write_package(directory: Path, model: torch.nn.Module, classes, size=(3, 32, 32), fmt="pt2", **meta) -> Path:
    """model.pt2 (or TorchScript model.pt / .ts, or model.onnx) plus model.json in `directory`; returns the model
    path. model.onnx comes from torch.onnx's TorchScript-based exporter, with a dynamic batch axis."""
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    if fmt == "pt2":
        path = directory / "model.pt2"
        torch.export.save(export(model, size), path)
    elif fmt == "script":
        path = directory / "model.pt"
        torch.jit.save(torch.jit.script(model), path)
    elif fmt == "trace":
        path = directory / "model.ts"
        torch.jit.save(torch.jit.trace(model, torch.randn(2, *size)), path)
    elif fmt == "onnx":
        path = directory / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.randn(2, *size),), str(path), dynamo=False, input_names=["input"],
                              dynamic_axes={"input": {0: "batch"}})
    else:
        raise ValueError(fmt)
    write_meta(directory / "model.json", classes, size, **meta)
    return path


def write_probe(root: Path, classes, per_class=6, size=(40, 48), seed=0, mode="RGB",
                manifest: bool = True) -> Path:
    """Random images in ImageFolder layout with a manifest (attribute 'site' and a box)."""
    rng = np.random.default_rng(seed)
    rows = ["path,label,site,x0,y0,x1,y1"]
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / label / f"{i:03d}.png")
            rows.append(f"{label}/{i:03d}.png,{label},{'north' if i % 2 else 'south'},4,6,20,30")
    if manifest:
        (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return write_package(tmp_path_factory.mktemp("tiny_model"), PlainNet(3, widths=(4, 8)), ["a", "b", "c"])


@pytest.fixture(scope="session")
def tiny_probe(tmp_path_factory) -> Path:
    return write_probe(tmp_path_factory.mktemp("tiny_probe"), ["a", "b", "c"])


@pytest.fixture(scope="session")
def service_stack(tmp_path_factory, postgres):
    """redis-server, the web server and a Celery worker as real processes (see auditsvc/stack/stack.py), on a
    database of their own on the session's PostgreSQL server."""
    from auditsvc.stack import Stack

    stack = Stack(tmp_path_factory.mktemp("stack"), database_url=postgres.create_database("stack"))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def audit_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A model package and a probe zip big enough that an audit lasts several seconds."""
    import zipfile

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("audit_inputs")
    model = write_package(directory / "model", PlainNet(2, widths=(8, 16)), ["cat", "dog"], size=(3, 48, 48),
                          name="integration-model")
    root = write_probe(directory / "probe", ["cat", "dog"], per_class=40, size=(48, 48))
    archive = directory / "probe.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                out.write(file, file.relative_to(root).as_posix())
    return model, archive


@pytest.fixture(scope="session")
def tank_demo() -> dict:
    """The tank demo of `make demo` (built once, cached in build/demo): shortcut and clean models, probe set."""
    from auditsvc.demo.build import build_demo

    built = build_demo(Path(__file__).resolve().parents[1] / "build" / "demo", log=lambda message: None)
    return {name: Path(path) for name, path in built["paths"].items()}


@pytest.fixture(scope="module")
def one_thread():
    """These models are far too small to split over threads; on a shared machine a second one mostly spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
