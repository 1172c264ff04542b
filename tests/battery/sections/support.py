"""What the section tests share: an audit through the front door, and the probe images as the model
sees them, read straight from the files, for numbers computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from auditsvc.battery import AuditOptions, AuditResult, audit, figures, load_model, open_probe_set
from auditsvc.battery.results import Figure

MEAN, STD = 0.5, 0.25   # what tests.conftest.write_meta declares for every channel


def run(package: Path, probe: Path, sections: list[str], **options) -> AuditResult:
    model = load_model(package)
    with open_probe_set(probe, model.meta.classes) as probe_set:
        return audit(model, probe_set, AuditOptions(sections=sections, **options))


def section(result: AuditResult, name: str):
    """The named section, which must have run: a crash turned into status "error" fails here."""
    [found] = [s for s in result.sections if s.name == name]
    assert found.status == "ok", f"{name}: {found.status}: {found.reason}"
    return found


def probe_inputs(root: Path, classes: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """Every image of an ImageFolder probe set (already the model's input size), normalized as
    model.json says, and its label index."""
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((Path(root) / name).glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(label)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return (pixels - MEAN) / STD, np.array(labels)


class CornerNet(torch.nn.Module):
    """Only the top-left 4x4 input pixels reach the logits: a 3x3 convolution (padding 1) and ReLU,
    kept on rows and columns 0-2 of a 32x32 input by a fixed mask, a global average and a linear head
    with positive weights (so Grad-CAM is positive for either class)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :3, :3] = 1.0
        self.register_buffer("mask", mask)
        self.head = torch.nn.Linear(4, 2)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.fill_(1.0)
            self.head.weight.copy_(0.5 + 2 * torch.rand(self.head.weight.shape, generator=generator))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = torch.relu(self.conv(x)) * self.mask
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(kept, 1), 1)) * 64


class DrawnFigures:
    """The matplotlib figure behind each PNG that figures.to_png makes from now on, to look at what a
    figure holds (its colour bar, its panels' titles) before it is flattened into pixels."""

    def __init__(self, monkeypatch):
        self._figures: dict[bytes, object] = {}
        self._to_png = figures.to_png
        monkeypatch.setattr(figures, "to_png", self._record)

    def _record(self, fig) -> bytes:
        png = self._to_png(fig)
        self._figures[png] = fig
        return png

    def of(self, block: Figure):
        return self._figures[block.png]


def colour_bars(fig) -> list:
    """The axes of the figure's colour bars."""
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def panel_titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]
