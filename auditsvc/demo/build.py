"""Builds the tank demo: a shortcut model, a clean model and a balanced probe set.

The shortcut model is trained on scenes where every tank stands under a cloudy sky and every
empty forest is sunny, as in the legend; the clean model on scenes where the weather says
nothing about the label. Both are then measured on a held-out split where weather and label are
independent: on "aligned" scenes (tank + cloudy, no tank + sunny) and on "flipped" ones
(tank + sunny, no tank + cloudy). A model that learned the weather is right on the first and
wrong on the second.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import training
from .nets import PlainNet, export
from .scene import render_scene

DEMO_VERSION = "1"            # bump whenever a change would give different models or images
CLASSES = ("no_tank", "tank")
INPUT_SIZE = (3, 64, 64)
MEAN, STD = 0.45, 0.25
ALIGNED = (("tank", "cloudy"), ("no_tank", "sunny"))
FLIPPED = (("tank", "sunny"), ("no_tank", "cloudy"))

TRAIN_PER_CELL = 1000         # the shortcut set has two cells, the clean set four of half the size
EVAL_PER_CELL = 100
PROBE_PER_CELL = 50
EPOCHS = 8
# PlainNet with a fourth block: with three, the receptive field (about 18 px) barely spans a
# tank and the clean model underfits (about 80% after 16 epochs).
WIDTHS = (16, 32, 64, 128)
BATCH_SIZE = 64
LEARNING_RATE = 3e-3

Cell = tuple[str, str]        # (label, weather)


@dataclass
class Scenes:
    images: np.ndarray        # uint8 (n, H, W, 3)
    labels: np.ndarray        # int64 (n,), index into CLASSES
    weathers: list[str]
    boxes: list[tuple[int, int, int, int] | None]

    def __len__(self) -> int:
        return len(self.labels)

    def cells(self, cells: tuple[Cell, ...]) -> "Scenes":
        wanted = {(CLASSES.index(label), weather) for label, weather in cells}
        keep = [i for i, key in enumerate(zip(self.labels.tolist(), self.weathers)) if key in wanted]
        return Scenes(self.images[keep], self.labels[keep], [self.weathers[i] for i in keep],
                      [self.boxes[i] for i in keep])

    @staticmethod
    def concat(*parts: "Scenes") -> "Scenes":
        return Scenes(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                      [w for p in parts for w in p.weathers], [b for p in parts for b in p.boxes])


def build_demo(out_dir: Path, *, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Builds (or finds already built) the demo in out_dir; returns paths and measured accuracies."""
    out_dir = Path(out_dir)
    info_path = out_dir / "build_info.json"
    info = _cached_info(out_dir, info_path, seed)
    if info is not None:
        log(f"tank demo already built in {out_dir} (seed {seed})")
        return _with_paths(info, out_dir, cached=True)

    info_path.unlink(missing_ok=True)  # an interrupted rebuild must not pass for the old build
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        info = _build(out_dir, seed, log)
    finally:
        torch.set_num_threads(threads)
    info_path.write_text(json.dumps(info, indent=2) + "\n")  # last: its presence marks a complete build
    log(f"built the tank demo in {info['build_seconds']} s")
    return _with_paths(info, out_dir, cached=False)


def _build(out_dir: Path, seed: int, log: Callable[[str], None]) -> dict:
    start = time.perf_counter()
    log(f"rendering scenes (seed {seed})")
    training_sets = render_training_sets(_rng(seed, "train"))
    held_out = render_cells(_rng(seed, "eval"), dict.fromkeys(ALIGNED + FLIPPED, EVAL_PER_CELL))
    accuracy = {}
    for name, scenes in training_sets.items():
        log(f"training the {name} model on {len(scenes)} scenes")
        model = train_model(scenes, seed=seed)
        program = export(model, INPUT_SIZE)
        write_model(out_dir / name, program, name)
        accuracy[name] = measure(program, held_out)
        log(f"{name}: {_format_accuracy(accuracy[name])}")

    log("writing the probe set")
    write_probe(out_dir / "probe", render_cells(_rng(seed, "probe"), dict.fromkeys(ALIGNED + FLIPPED, PROBE_PER_CELL)))
    return {"version": DEMO_VERSION, "seed": seed, "accuracy": accuracy,
            "build_seconds": round(time.perf_counter() - start, 1)}


# --- caching ----------------------------------------------------------------------------------

def _outputs(out_dir: Path) -> dict[str, Path]:
    return {"shortcut": out_dir / "shortcut" / "model.pt2", "clean": out_dir / "clean" / "model.pt2",
            "probe": out_dir / "probe"}


def _cached_info(out_dir: Path, info_path: Path, seed: int) -> dict | None:
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("version") != DEMO_VERSION or info.get("seed") != seed:
        return None
    paths = _outputs(out_dir)
    needed = [paths["shortcut"], paths["clean"], paths["shortcut"].with_name("model.json"),
              paths["clean"].with_name("model.json"), paths["probe"] / "manifest.csv"]
    return info if all(path.exists() for path in needed) else None


def _with_paths(info: dict, out_dir: Path, cached: bool) -> dict:
    return {**info, "cached": cached, "paths": {name: str(path) for name, path in _outputs(out_dir).items()}}


def _format_accuracy(accuracy: dict[str, float]) -> str:
    return ", ".join(f"{split} {value:.1%}" for split, value in accuracy.items())


# --- scenes -----------------------------------------------------------------------------------

def _rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent stream per purpose, so training, evaluation and probe scenes never repeat."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def render_cells(rng: np.random.Generator, counts: dict[Cell, int]) -> Scenes:
    images, labels, weathers, boxes = [], [], [], []
    for (label, weather), count in counts.items():
        for _ in range(count):
            image, box = render_scene(rng, tank=label == "tank", weather=weather, size=INPUT_SIZE[1])
            images.append(image)
            labels.append(CLASSES.index(label))
            weathers.append(weather)
            boxes.append(box)
    return Scenes(np.stack(images), np.array(labels, dtype=np.int64), weathers, boxes)


def render_training_sets(rng: np.random.Generator) -> dict[str, Scenes]:
    """The shortcut set (all aligned) and the clean set (half of it plus as many flipped scenes)."""
    half = TRAIN_PER_CELL // 2
    aligned = [render_cells(rng, dict.fromkeys(ALIGNED, half)) for _ in range(2)]
    flipped = render_cells(rng, dict.fromkeys(FLIPPED, half))
    return {"shortcut": Scenes.concat(*aligned), "clean": Scenes.concat(aligned[0], flipped)}


# --- training and measuring -------------------------------------------------------------------

def train_model(scenes: Scenes, *, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = PlainNet(len(CLASSES), widths=WIDTHS)
    return training.train(model, scenes.images, scenes.labels, mean=MEAN, std=STD, epochs=EPOCHS,
                          lr=LEARNING_RATE, batch_size=BATCH_SIZE, seed=seed)


def predict(program: torch.export.ExportedProgram, images: np.ndarray) -> np.ndarray:
    return training.predict(program, images, MEAN, STD)


def measure(program: torch.export.ExportedProgram, held_out: Scenes) -> dict[str, float]:
    """Accuracy on weather-aligned and weather-flipped held-out scenes; measured on the exported program."""
    accuracy = {}
    for split, cells in (("aligned", ALIGNED), ("flipped", FLIPPED)):
        scenes = held_out.cells(cells)
        accuracy[split] = round(float((predict(program, scenes.images) == scenes.labels).mean()), 4)
    return accuracy


# --- writing ----------------------------------------------------------------------------------

def write_model(directory: Path, program: torch.export.ExportedProgram, name: str) -> None:
    training.write_model(directory, program, training.model_meta(f"tank-detector-{name}", CLASSES, INPUT_SIZE,
                                                                 MEAN, STD))


def write_probe(root: Path, scenes: Scenes) -> None:
    """ImageFolder layout (tank/0001.png, no_tank/0001.png) with manifest.csv: weather and tank box."""
    if root.exists():
        shutil.rmtree(root)  # a probe of an earlier seed or version must not leave files behind
    rows = []
    counters = {label: 0 for label in CLASSES}
    for image, label_index, weather, box in zip(scenes.images, scenes.labels, scenes.weathers, scenes.boxes):
        label = CLASSES[label_index]
        counters[label] += 1
        path = f"{label}/{counters[label]:04d}.png"
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / path)
        rows.append([path, label, weather, *(box if box is not None else ("", "", "", ""))])
    with open(root / "manifest.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "weather", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)
