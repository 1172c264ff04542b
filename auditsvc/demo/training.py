"""Training, prediction and model packaging shared by the tank demo and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PREDICT_BATCH = 256


def to_tensor(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> normalized float (n, 3, H, W), as model.json declares."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return tensor.sub_(mean).div_(std).contiguous()


def train(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, *, mean: float, std: float,
          epochs: int, lr: float, batch_size: int, seed: int, flip: bool = True) -> torch.nn.Module:
    """AdamW with a one-cycle schedule; random horizontal flips when `flip`. Returns the model in eval mode.

    Seed the global torch RNG before building the model for reproducible initial weights; the
    batch order and the flips come from a generator seeded here.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = to_tensor(images, mean, std), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    steps_per_epoch = -(-len(targets) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            x = random_flip(inputs[batch], generator) if flip else inputs[batch]
            loss = F.cross_entropy(model(x), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


@torch.no_grad()
def predict(model: torch.export.ExportedProgram | torch.nn.Module, images: np.ndarray,
            mean: float, std: float) -> np.ndarray:
    """Predicted class indices for uint8 (n, H, W, 3) images."""
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    return np.concatenate([module(to_tensor(images[i:i + PREDICT_BATCH], mean, std)).argmax(1).numpy()
                           for i in range(0, len(images), PREDICT_BATCH)])


def write_model(directory: Path, program: torch.export.ExportedProgram, meta: dict) -> None:
    """The model package: model.pt2 and model.json, as the README's command-line section describes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, directory / "model.pt2")
    (directory / "model.json").write_text(json.dumps(meta, indent=2) + "\n")


def model_meta(name: str, classes: list[str] | tuple[str, ...], input_size: tuple[int, int, int],
               mean: float, std: float, version: str = "1.0") -> dict:
    channels = input_size[0]
    return {"name": name, "version": version, "classes": list(classes),
            "input": {"size": list(input_size), "mean": [mean] * channels, "std": [std] * channels}}
