"""Hostile model files: crafted .pt2 archives, pickles, TorchScript that reaches files, shapes that
cannot be audited. Each is refused with one line naming what is wrong, and no payload ever runs
(a marker file the payload would create stays absent)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.loading import load_model
from auditsvc.demo.nets import PlainNet
from tests.conftest import write_meta, write_package

CLASSES = ["a", "b", "c"]


class Payload:
    """Unpickling this creates the marker file: the proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def pickled_payload(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return write_package(tmp_path_factory.mktemp("good"), PlainNet(3, widths=(4, 8)), CLASSES)


def rewrite(source: Path, target: Path, change=None, add: dict | None = None, drop=()) -> Path:
    """A copy of a model archive with members changed (name -> bytes -> bytes), added or dropped."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        prefix = old.namelist()[0].split("/", 1)[0] + "/"
        for info in old.infolist():
            key = info.filename[len(prefix):]
            if key in drop:
                continue
            data = old.read(info)
            new.writestr(info.filename, change(key, data) if change else data)
        for key, data in (add or {}).items():
            new.writestr(key if key.startswith(("/", "..")) else prefix + key, data)
    write_meta(target.with_name("model.json"), CLASSES)
    return target


def _config(data: bytes, edit) -> bytes:
    config = json.loads(data)
    edit(config["config"])
    return json.dumps(config).encode()


def pickled_weight(source: Path, target: Path, marker: Path) -> Path:
    def change(key, data):
        if key.endswith("_weights_config.json"):
            return _config(data, lambda c: next(iter(c.values())).update(use_pickle=True))
        if key == "data/weights/weight_0":
            return pickled_payload(marker)
        return data
    return rewrite(source, target, change)


def pickled_constant(source: Path, target: Path, marker: Path, kind: str = "tensor_0") -> Path:
    def change(key, data):
        if key.endswith("_constants_config.json"):
            return _config(data, lambda c: c.update(
                {"sneaky": {"path_name": kind, "is_param": False, "use_pickle": True, "tensor_meta": None}}))
        return data
    return rewrite(source, target, change, add={f"data/constants/{kind}": pickled_payload(marker)})


def pickled_sample_inputs(source: Path, target: Path, marker: Path) -> Path:
    return rewrite(source, target, lambda key, data: pickled_payload(marker) if "sample_inputs" in key else data)


def _refusal(path: Path) -> str:
    with pytest.raises(BadInput) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600
    return message


PICKLED = {
    "pickled weight": (pickled_weight, "stored pickled"),
    "pickled constant": (pickled_constant, "stored pickled"),
    "custom object constant": (lambda s, t, m: pickled_constant(s, t, m, "custom_obj_0"), "custom (TorchScript) object"),
    "opaque object constant": (lambda s, t, m: pickled_constant(s, t, m, "opaque_obj_0"), "opaque Python object"),
    "pickled sample inputs": (pickled_sample_inputs, "sample inputs hold a pickle that calls '__builtin__.exec'"),
}


@pytest.mark.parametrize("case", list(PICKLED))
def test_archives_that_would_unpickle_are_refused_and_nothing_runs(case, good_pt2, tmp_path):
    craft, message = PICKLED[case]
    marker = tmp_path / "pwned"
    path = craft(good_pt2, tmp_path / "model.pt2", marker)
    assert message in _refusal(path)
    assert not marker.exists()


def test_torch_itself_would_run_the_crafted_weight(good_pt2, tmp_path):
    """The threat is real: plain torch.export.load on the crafted archive runs the payload (in a child)."""
    marker = tmp_path / "pwned"
    path = pickled_weight(good_pt2, tmp_path / "model.pt2", marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(path)!r})"], capture_output=True,
                   cwd=Path(__file__).resolve().parents[2], timeout=300,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert marker.exists()


def _member_case(good: Path, tmp: Path, **edits) -> Path:
    return rewrite(good, tmp / "model.pt2", **edits)


MEMBERS = {
    "path traversal": (dict(add={"../../evil": b"x"}), "points outside the archive"),
    "absolute member": (dict(add={"/etc/evil": b"x"}), "points outside the archive"),
    "member escaping its folder": (dict(add={"data/../../evil": b"x"}), "path traversal"),
    "compiled code": (dict(add={"data/aotinductor/model/model.so": b"\x7fELF"}), "compiled code"),
    "unknown member": (dict(add={"data/weights/run_me.py": b"import os"}), "unexpected member"),
    "legacy pickled weights": (dict(add={"data/weights/model.pt": b"\x80\x02"}), "legacy format"),
    "old archive format": (dict(change=lambda k, d: b"zip" if k == "archive_format" else d), "not a torch.export 'pt2'"),
    "no exported program": (dict(drop={"models/model.json"}), "holds no exported program"),
    "weights config not JSON": (dict(change=lambda k, d: b"{" if k.endswith("weights_config.json") else d),
                                "not valid JSON"),
    "weight payload outside its folder": (dict(change=lambda k, d: _config(d, lambda c: next(iter(c.values())).update(
        path_name="../../models/model.json")) if k.endswith("weights_config.json") else d), "unexpected payload"),
    "weight payload missing": (dict(drop={"data/weights/weight_0"}), "has no payload"),
    "sample inputs not a pickle": (dict(change=lambda k, d: b"PK\x03\x04garbage" if "sample_inputs" in k else d),
                                   "sample inputs are corrupt"),
}


@pytest.mark.parametrize("case", list(MEMBERS))
def test_archive_members_are_checked_before_loading(case, good_pt2, tmp_path):
    edits, message = MEMBERS[case]
    assert message in _refusal(_member_case(good_pt2, tmp_path, **edits))


def test_duplicate_members_are_refused(good_pt2, tmp_path):
    target = tmp_path / "model.pt2"
    with zipfile.ZipFile(good_pt2) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
        new.writestr(old.namelist()[0], b"again")
    write_meta(tmp_path / "model.json", CLASSES)
    assert "appears twice" in _refusal(target)


def test_a_symlink_member_is_refused(good_pt2, tmp_path):
    target = _member_case(good_pt2, tmp_path)
    with zipfile.ZipFile(target, "a") as archive:
        info = zipfile.ZipInfo(archive.namelist()[0].split("/")[0] + "/extra/link")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/passwd")
    assert "symbolic link" in _refusal(target)


def test_a_corrupt_member_is_refused(good_pt2, tmp_path):
    target = _member_case(good_pt2, tmp_path)
    data = bytearray(target.read_bytes())
    marker = data.find(b'"config"')  # inside the stored weights config: flip a byte, the CRC no longer matches
    data[marker + 1] ^= 0x20
    target.write_bytes(bytes(data))
    assert "corrupt" in _refusal(target) or "not valid JSON" in _refusal(target)


@pytest.mark.parametrize("content, message", [
    (b"", "is not a torch.export"),
    (os.urandom(4096), "is not a torch.export"),
    (b"\x80\x02}q\x00.", "pickled PyTorch file"),
])
def test_files_that_are_not_model_archives(content, message, tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(content)
    write_meta(tmp_path / "model.json", CLASSES)
    assert message in _refusal(path)


def test_a_torch_save_zip_is_refused_as_a_pickle(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(PlainNet(3), path)
    write_meta(tmp_path / "model.json", CLASSES)
    assert "arbitrary code" in _refusal(path)


def test_a_zip_of_something_else_is_refused(tmp_path):
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    write_meta(tmp_path / "model.json", CLASSES)
    assert "is not a torch.export" in _refusal(path)


class ReadsAFile(torch.nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        mapped = torch.from_file(self.path, shared=True, size=16)
        return self.fc(x.mean([2, 3])) + mapped[:1].sum() * 0


class SeedsTheProcess(torch.nn.Module):
    def forward(self, x):
        torch.manual_seed(7)
        return x.mean([2, 3])


@pytest.mark.parametrize("model, op", [(ReadsAFile, "aten::from_file"), (SeedsTheProcess, "aten::manual_seed")])
def test_torchscript_that_reaches_files_or_process_state_is_refused_naming_the_op(model, op, tmp_path):
    marker = tmp_path / "created-by-the-model"
    module = model(str(marker)) if model is ReadsAFile else model()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(module), path)
    write_meta(tmp_path / "model.json", CLASSES)
    assert op in _refusal(path)
    assert not marker.exists()


def test_a_fixed_batch_size_is_refused_in_words(tmp_path):
    model = PlainNet(3, widths=(4,)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(4, 3, 32, 32),)), tmp_path / "model.pt2")
    write_meta(tmp_path / "model.json", CLASSES)
    assert "fixed batch size of 4" in _refusal(tmp_path / "model.pt2")


def test_nan_logits_are_refused(tmp_path):
    class Nan(torch.nn.Module):
        def forward(self, x):
            return x.mean([2, 3]) * float("nan")

    path = write_package(tmp_path, Nan(), CLASSES)
    assert "NaN" in _refusal(path)
