"""The whole battery on tiny versions of the classic CNN families (tests/families.py), each as a
torch.export archive and as TorchScript (two also as model.onnx): every section must run ("ok"), none
may be dropped.

SqueezeNet's all-convolutional head once made embedding, similarity and neurons fail (its output is
a flatten no layer owned); ShuffleNet's channel shuffle and ConvNeXt's channels-last blocks lost
their receptive fields. The audits keep their work small: 6 images of 32x32, one sample image, few
steps, 16 occlusion windows, short activation maximization runs, one torch thread (on a shared
machine a second thread mostly spins: these models are far too small to split). The torch.export
audits get a reference model (the same family, another seed), so the similarity section's
comparison runs too.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from auditsvc.battery import AuditOptions, audit, load_model, open_probe_set, section_names
from auditsvc.battery.sections import activation_max
from tests.conftest import write_package, write_probe
from tests.families import FAMILIES, INPUT, build

CLASSES = ["cat", "dog"]
OPTIONS = dict(samples=1, ig_steps=2, smoothgrad_samples=2, batch_size=64, occlusion_window=8, occlusion_stride=8)
FORMATS = {"pt2": "pt2", "torchscript": "script", "onnx": "onnx"}   # TorchScript: torch.jit.script, saved as model.pt
# model.onnx (torch.onnx, converted on load) on two families whose graphs the conversion changes most: ShuffleNet's
# chunk, split and shuffle, ConvNeXt's LayerNorm, GELU and channels-last Linear layers. The model side (layers,
# receptive fields, logits) runs on every family (tests/battery/model/test_onnx_families.py); a full audit costs
# about 6 s a family.
ONNX_FAMILIES = ("shufflenet", "convnext")
CASES = [(family, fmt) for family in FAMILIES for fmt in FORMATS if fmt != "onnx" or family in ONNX_FAMILIES]


class Packages:
    """Model packages written once per module, on first use."""

    def __init__(self, root):
        self.root = root
        self._paths: dict[tuple[str, str, int], object] = {}
        self._references: dict[str, object] = {}

    def path(self, family: str, fmt: str, seed: int = 0):
        key = (family, fmt, seed)
        if key not in self._paths:
            self._paths[key] = write_package(self.root / f"{family}-{fmt}-{seed}", build(family, seed), CLASSES,
                                             size=INPUT, fmt=FORMATS[fmt], name=family)
        return self._paths[key]

    def reference(self, family: str):
        if family not in self._references:
            self._references[family] = load_model(self.path(family, "pt2", seed=1))
        return self._references[family]


@pytest.fixture(scope="module", autouse=True)
def small_and_single_threaded():
    """Whether a section runs at all does not depend on how long its optimizations run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(activation_max, "CLASS_STEPS", 16)
        patch.setattr(activation_max, "MIN_CLASS_STEPS", 16)
        patch.setattr(activation_max, "CHANNEL_STEPS", 8)
        patch.setattr(activation_max, "MIN_CHANNEL_STEPS", 8)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Packages:
    return Packages(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return write_probe(tmp_path_factory.mktemp("families_probe"), CLASSES, per_class=3, size=INPUT[1:])


def head_width(family: str) -> int:
    """Channels of the representation the classifier head reads: the last weighted module's input."""
    last = [m for m in build(family, 0).modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.in_features if isinstance(last, nn.Linear) else last.in_channels


@pytest.mark.parametrize("family, fmt", CASES, ids=[f"{family}-{fmt}" for family, fmt in CASES])
def test_every_section_runs_on(family, fmt, packages, probe):
    model = load_model(packages.path(family, fmt))
    reference = packages.reference(family) if fmt == "pt2" else None
    with open_probe_set(probe, model.meta.classes) as probe_set:
        result = audit(model, probe_set, AuditOptions(**OPTIONS), reference=reference)
    failed = {s.name: f"{s.status}: {s.reason}" for s in result.sections
              if s.status != "ok" and not (s.name == "reference" and reference is None)}
    assert not failed, f"{family} ({fmt}): {failed}"
    assert [s.name for s in result.sections] == section_names()
    document = json.loads(json.dumps(result.findings_json()))
    sections = document["sections"]
    assert document["dataset"]["images"] == 6 and document["verdict"] in ("pass", "warn", "fail")
    assert not any(f["code"] == "health.incomplete" for f in document["findings"])

    # The embedding is the representation the head reads (SqueezeNet: the last fire module's map,
    # averaged over space), not the logits.
    assert sections["embedding"]["dimensions"] == head_width(family)
    # Every layer chosen for top patches has a receptive field: none lost in a shuffle or a permute.
    assert set(sections["top_patches"]["layers"]) == set(sections["activation_max"]["channels"])
    fields = [data["receptive_field"] for data in sections["top_patches"]["layers"].values()]
    assert fields and all(1 <= min(f["size"]) and max(f["size"]) <= 4 * max(INPUT) for f in fields), fields
    # Exact, except behind a squeeze-and-excitation gate: the whole image sets how it scales the map.
    exact = [f["exact"] for f in fields]
    assert exact == ([True] + [False] * (len(exact) - 1) if family == "senet" else [True] * len(exact)), fields
    similarity = sections["similarity"]
    if reference is not None:
        matched = similarity["reference"]["matched"]
        last = [len(similarity["layers"]) - 1, len(similarity["reference"]["layers"]) - 1]
        assert matched[-1] == last    # output against output
