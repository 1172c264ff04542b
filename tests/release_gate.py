"""Tiny models whose quick audit has a known verdict, for the release pipeline tests (contrib/release and
auditsvc.client): a hand-set net that tells horizontal from vertical stripes, sure of itself (PASS, no
finding) or barely (WARN: right every time at about 53% confidence, so miscalibrated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tests.conftest import write_package

CLASSES = ["horizontal", "vertical"]
SIZE = 32
SURE, UNSURE = 4.0, 0.05   # the head's gain: confidence ~1.0 (PASS) or ~0.53 (WARN, health.miscalibrated)


class StripesNet(nn.Module):
    """One conv with a horizontal and a vertical line detector, global average pooling, a linear head."""

    def __init__(self, gain: float):
        super().__init__()
        line = torch.tensor([[-1.0, -1.0, -1.0], [2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]]) / 3
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.conv.weight.data = torch.stack([line, line.T])[:, None].expand(2, 3, 3, 3).clone()
        self.head = nn.Linear(2, 2)
        self.head.weight.data = torch.tensor([[gain, -gain], [-gain, gain]])
        self.head.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def write_stripes_probe(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """A 16 px patch of stripes (2 px wide) on a flat noisy background, with its box and an attribute ('site')
    independent of the class in manifest.csv."""
    rng = np.random.default_rng(seed)
    rows = ["path,label,site,x0,y0,x1,y1"]
    stripes = (np.arange(16) // 2 % 2).astype(float)
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        patch = np.tile(stripes[:, None], (1, 16)) if label == "horizontal" else np.tile(stripes[None, :], (16, 1))
        for i in range(per_class):
            image = rng.uniform(0.3, 0.7, (SIZE, SIZE, 3))
            x0, y0 = rng.integers(2, 10, 2)
            image[y0:y0 + 16, x0:x0 + 16] = patch[..., None] * rng.uniform(0.6, 1.0, 3)
            Image.fromarray((image * 255).astype(np.uint8)).save(root / label / f"{i:03d}.png")
            rows.append(f"{label}/{i:03d}.png,{label},{rng.choice(['north', 'south'])},{x0},{y0},{x0 + 16},{y0 + 16}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def write_gate_models(directory: Path) -> dict[str, Path]:
    """{"pass": model.pt2, "warn": model.pt2} (model.json beside each) and "probe": the probe set's folder."""
    return {"pass": write_package(directory / "pass", StripesNet(SURE), CLASSES, size=(3, SIZE, SIZE),
                                  name="stripes-sure", version="2.0"),
            "warn": write_package(directory / "warn", StripesNet(UNSURE), CLASSES, size=(3, SIZE, SIZE),
                                  name="stripes-unsure", version="2.0"),
            "probe": write_stripes_probe(directory / "probe")}
