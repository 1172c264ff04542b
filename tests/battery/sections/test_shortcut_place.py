"""A shortcut on the background's texture is named where it sits, and the object's own outline
is not called a bias of the probe set."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set
from tests.conftest import write_package

SIDE = 32
CLASSES = ["disc", "square"]


class BackgroundTexture(nn.Module):
    """Answers 'square' when the surroundings of the middle half carry fine texture, whatever the object."""

    def __init__(self):
        super().__init__()
        self.edges = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        laplacian = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]]) / 3
        self.edges.weight.data = laplacian.expand(1, 3, 3, 3).clone()
        outside = torch.ones(1, 1, SIDE, SIDE)
        outside[..., SIDE // 4:-SIDE // 4, SIDE // 4:-SIDE // 4] = 0
        self.register_buffer("outside", outside)
        self.head = nn.Linear(1, 2)
        self.head.weight.data = torch.tensor([[-10.0], [10.0]])
        self.head.bias.data = torch.tensor([10.0, -10.0])   # the line at a mean texture of 1

    def forward(self, x):
        texture = (self.edges(x).abs() * self.outside).mean(dim=(2, 3))
        return self.head(texture)


def scene(label: int, textured: bool, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    grey = rng.uniform(0.35, 0.55) + rng.normal(0, 0.01, (SIDE, SIDE))
    if textured:
        grey = grey + 0.12 * np.where((xx + yy) % 2 == 0, 1, -1)
    centre = SIDE / 2
    inside = (np.hypot(yy - centre, xx - centre) < 6) if label == 0 else \
        ((np.abs(yy - centre) < 6) & (np.abs(xx - centre) < 6))
    grey = np.where(inside, 0.85, grey)
    return (np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2) * 255).round().astype(np.uint8)


def write_scenes(root, per_class: int, aligned: float, seed: int):
    """Squares mostly on textured ground, discs mostly on smooth ground; boxes in the manifest."""
    rng = np.random.default_rng(seed)
    rows = ["path,label,x0,y0,x1,y1"]
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            textured = (label == 1) == (rng.random() < aligned)
            Image.fromarray(scene(label, textured, rng)).save(root / name / f"{index:03d}.png")
            rows.append(f"{name}/{index:03d}.png,{name},9,9,23,23")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def texture_audit(tmp_path_factory):
    root = tmp_path_factory.mktemp("texture")
    model = write_package(root / "model", BackgroundTexture(), CLASSES, size=(3, SIDE, SIDE))
    probe = write_scenes(root / "probe", per_class=60, aligned=0.8, seed=0)
    loaded = load_model(model)
    with open_probe_set(probe, loaded.meta.classes) as probe_set:
        return audit(loaded, probe_set, AuditOptions(sections=["summary", "performance", "shortcuts"], seed=0))


def test_a_background_texture_shortcut_is_named_as_the_backgrounds(texture_audit):
    section = next(s for s in texture_audit.sections if s.name == "shortcuts")
    assert section.status == "ok", section.reason
    shortcuts = [f for f in texture_audit.findings if f.category == "shortcut"]
    assert shortcuts, [f.code for f in texture_audit.findings]
    lead = shortcuts[0]
    assert lead.evidence["place"] == "surroundings", lead.evidence["placement"]
    assert "the background's" in lead.title, lead.title
    placement = lead.evidence["placement"]
    assert placement["surroundings"] > 0.5 and placement["object"] < 0.1


def test_the_objects_outline_is_not_a_probe_set_bias(tmp_path):
    """Discs and squares on grounds drawn alike: the outline shows in the image's properties, but it
    is the object, so no bias finding; the property table says so."""
    model = write_package(tmp_path / "model", BackgroundTexture(), CLASSES, size=(3, SIDE, SIDE))
    probe = write_scenes(tmp_path / "probe", per_class=60, aligned=0.5, seed=1)
    loaded = load_model(model)
    with open_probe_set(probe, loaded.meta.classes) as probe_set:
        result = audit(loaded, probe_set, AuditOptions(sections=["shortcuts"], seed=0))
    section = result.sections[0]
    assert section.status == "ok", section.reason
    assert [f.code for f in result.findings if f.category == "bias"] == []
    table = next(b for b in section.blocks if getattr(b, "title", "") == "Which properties predict labels and predictions")
    assert any(row[3] == "part of the object" for row in table.rows), table.rows


class _Seeing(nn.Module):
    """A 1x1 convolution that passes the image on: a spatial layer for the attribution methods."""

    def __init__(self):
        super().__init__()
        self.see = nn.Conv2d(3, 3, 1)
        self.see.weight.data = torch.eye(3)[..., None, None].clone()
        self.see.bias.data.zero_()


class ObjectRedness(_Seeing):
    """Answers 'square' when the middle of the image is redder than it is blue, whatever its outline."""

    def forward(self, x):
        x = torch.relu(self.see(x) + 10) - 10
        middle = x[..., SIDE // 2 - 4:SIDE // 2 + 4, SIDE // 2 - 4:SIDE // 2 + 4].mean(dim=(2, 3))
        score = 8 * (middle[:, 0] - middle[:, 2])
        return torch.stack([-score, score], dim=1)


class Outline(_Seeing):
    """Answers 'square' when the object reaches the corners of its box (a disc does not), whatever its colour."""

    def forward(self, x):
        grey = (torch.relu(self.see(x) + 10) - 10).mean(dim=1)
        ground = grey[:, :4, :4].mean(dim=(1, 2))
        corner = grey[:, SIDE // 2 - 5, SIDE // 2 - 5]
        score = 20 * ((corner - ground).abs() - 0.1)
        return torch.stack([-score, score], dim=1)


def coloured_scene(label: int, rng: np.random.Generator) -> np.ndarray:
    """A disc or a square of a random object colour, reddish for squares and bluish for discs, on a
    random grey-ish ground drawn alike for both classes."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    ground = rng.uniform(0.3, 0.6) + rng.normal(0, 0.01, (SIDE, SIDE, 3))
    centre = SIDE / 2
    inside = (np.hypot(yy - centre + 0.5, xx - centre + 0.5) < 6) if label == 0 else \
        ((np.abs(yy - centre + 0.5) < 6) & (np.abs(xx - centre + 0.5) < 6))
    base = rng.uniform(0.3, 0.6)
    tint = rng.uniform(0.15, 0.3) * (1 if label == 1 else -1)
    colour = np.clip(np.array([base + tint, base, base - tint]) + 0.3, 0, 1)
    image = np.where(inside[..., None], colour, ground)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def coloured_probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("coloured")
    rng = np.random.default_rng(3)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for index in range(60):
            Image.fromarray(coloured_scene(label, rng)).save(root / name / f"{index:03d}.png")
    return root


def _shortcut_audit(tmp_path, model, probe):
    package = write_package(tmp_path / "model", model, CLASSES, size=(3, SIDE, SIDE))
    loaded = load_model(package)
    with open_probe_set(probe, loaded.meta.classes) as probe_set:
        return audit(loaded, probe_set, AuditOptions(sections=["shortcuts"], seed=0))


def test_a_model_that_tells_the_classes_apart_by_the_objects_colour_is_warned_about(tmp_path, coloured_probe):
    """Squares are red and discs blue in this probe set, no box: the colour is the object's own, so no
    bias; the model reads the colour, not the outline, and changing the object's colour alone shows it."""
    result = _shortcut_audit(tmp_path, ObjectRedness(), coloured_probe)
    assert result.sections[0].status == "ok", result.sections[0].reason
    assert [f.code for f in result.findings if f.category == "bias"] == []
    [finding] = [f for f in result.findings if f.category == "shortcut"]
    assert finding.code.startswith("shortcut.colour") and finding.severity == "warn"
    assert finding.evidence["place"] == "object" and "the object's colour" in finding.title
    assert finding.evidence["reliance"] >= 0.5
    assert "by the object's colour" in finding.summary


def test_a_model_that_reads_the_outline_is_not_warned_about_the_objects_colour(tmp_path, coloured_probe):
    result = _shortcut_audit(tmp_path, Outline(), coloured_probe)
    assert result.sections[0].status == "ok", result.sections[0].reason
    assert [f.code for f in result.findings if f.category in ("shortcut", "bias")] == []


def test_a_cue_read_in_both_parts_but_mostly_in_one_is_named_so():
    from auditsvc.battery.probes.evidence import InterventionStats
    from auditsvc.battery.sections.shortcuts import _other_part_moves

    cast = InterventionStats("red_balance_of_others", "colour", "shift", "red_share", "ok", floor=0.04,
                             placement={"object": 0.17, "surroundings": 0.45}, place="surroundings")
    assert _other_part_moves(cast)       # -> "the colour, mostly the background's"
    cast.placement["object"] = 0.05
    assert not _other_part_moves(cast)   # -> "the background's colour"
