import io
import os
import stat
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from auditsvc.battery import dataset as dataset_module
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.meta import InputSpec
from tests.conftest import write_probe

CLASSES = ("a", "b", "c")
SPEC = InputSpec(3, 16, 20, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _zip(directory, path, prefix=""):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(directory.rglob("*")):
            if file.is_file():
                archive.write(file, prefix + file.relative_to(directory).as_posix())
    return path


def test_directory_with_manifest(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=4)
    with ProbeDataset(root, CLASSES) as probe:
        assert len(probe) == 12
        assert list(probe.labels) == [0] * 4 + [1] * 4 + [2] * 4
        assert probe.attribute_names == ["site"]
        assert set(probe.attribute("site")) == {"north", "south"}
        boxes = probe.boxes(SPEC)  # 48x40 originals scaled to 20x16
        np.testing.assert_allclose(boxes[0], [4 * 20 / 48, 6 * 16 / 40, 20 * 20 / 48, 30 * 16 / 40])
        batch = probe.tensors([0, 5], SPEC)
        assert batch.shape == (2, 3, 16, 20)
        assert float(batch.min()) >= -2.0 and float(batch.max()) <= 2.0  # (x - 0.5) / 0.25


def test_zip_matches_directory_including_a_wrapping_folder(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=3)
    with ProbeDataset(root, CLASSES) as from_dir:
        expected = (from_dir.sha256, [i.path for i in from_dir.images], from_dir.tensors([1, 4], SPEC))
    for prefix in ("", "probe/"):
        with ProbeDataset(_zip(root, tmp_path / f"p{len(prefix)}.zip", prefix), CLASSES) as from_zip:
            assert from_zip.sha256 == expected[0]
            assert [i.path for i in from_zip.images] == expected[1]
            assert (from_zip.tensors([1, 4], SPEC) == expected[2]).all()


def test_images_per_class_are_read_from_the_zip_directory_as_the_set_counts_them(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=3)
    (root / "b" / "extra.png").write_bytes((root / "b" / "000.png").read_bytes())
    (root / "a" / ".DS_Store").write_bytes(b"ignored")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._000.png").write_bytes(b"ignored")
    for prefix in ("", "probe/"):
        archive = _zip(root, tmp_path / f"counted{len(prefix)}.zip", prefix)
        with ProbeDataset(archive, CLASSES) as opened:
            expected = {name: int((opened.labels == i).sum()) for i, name in enumerate(CLASSES)}
        assert expected == {"a": 3, "b": 4, "c": 3}
        assert dataset_module.images_per_class(archive) == expected
        with open(archive, "rb") as handle:   # a stored file, as the portal opens it
            assert dataset_module.images_per_class(handle) == expected
    with pytest.raises(BadInput, match="not a readable zip"):
        dataset_module.images_per_class(io.BytesIO(b"not a zip"))


def test_batches_cover_every_image_once_in_bounded_chunks(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=5, manifest=False)
    with ProbeDataset(root, CLASSES) as probe:
        seen = []
        for indices, batch in probe.batches(SPEC, batch_size=4):
            assert len(indices) == len(batch) <= 4
            seen += indices
        assert seen == list(range(15))
        assert probe.attribute_names == [] and not probe.has_boxes


def test_grey_images_for_a_grey_model(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, mode="L")
    grey = InputSpec(1, 28, 28, (0.5,), (0.5,))
    with ProbeDataset(root, CLASSES) as probe:
        assert probe.tensors([0, 1], grey).shape == (2, 1, 28, 28)
        assert probe.tensors([0], SPEC).shape == (1, 3, 16, 20)  # grey files for an RGB model


def _error(source, classes=CLASSES) -> str:
    with pytest.raises(BadInput) as caught:
        ProbeDataset(source, classes).close()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_empty_and_one_class_sets(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "empty" in _error(tmp_path / "empty")
    root = write_probe(tmp_path / "one", ["a"], per_class=3, manifest=False)
    assert "one class only" in _error(root)


def test_unknown_class_folder(tmp_path):
    root = write_probe(tmp_path / "probe", ["a", "dog"], per_class=2, manifest=False)
    assert "'dog'" in _error(root)


def test_non_image_and_corrupt_files(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    (root / "a" / "notes.txt").write_text("hello")
    assert "a/notes.txt is not an image file" in _error(root)
    (root / "a" / "notes.txt").unlink()
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert "b/broken.png is not a readable image" in _error(root)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: what a decompression bomb looks like up front."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    (root / "a" / "bomb.png").write_bytes(_png_header_only(30_000, 30_000))
    assert "decompression bomb" in _error(root)


def test_zip_bomb(tmp_path, monkeypatch):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    path = _zip(root, tmp_path / "bomb.zip")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/zeros.png", b"\0" * (8 << 20))
    assert "zip bomb" in _error(path)
    monkeypatch.setattr(dataset_module, "MAX_UNCOMPRESSED_BYTES", 1000)
    assert "expands to" in _error(_zip(root, tmp_path / "big.zip"))


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png"])
def test_path_traversal_in_zip(tmp_path, name):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    path = _zip(root, tmp_path / "evil.zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo(name), b"x")
    assert "path traversal" in _error(path)


def test_symlink_in_zip(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    path = _zip(root, tmp_path / "link.zip")
    link = zipfile.ZipInfo("a/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(link, "/etc/passwd")
    assert "symbolic link" in _error(path)


def test_symlink_out_of_a_directory(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "secret.png", root / "a" / "secret.png")
    assert "outside the dataset" in _error(root)


def test_not_a_dataset(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert "neither a directory nor a zip" in _error(tmp_path / "file.txt")
    assert "not found" in _error(tmp_path / "missing")


@pytest.mark.parametrize("rows, expected", [
    ("path,label\na/000.png,b\n", "disagrees with the class folder"),
    ("path,label\na/999.png,a\n", "is not an image of the dataset"),
    ("path,label\na/000.png,a\na/000.png,a\n", "listed twice"),
    ("file,label\n", "'path' and 'label'"),
    ("path,label,x0,y0\na/000.png,a,1,2\n", "needs all of x0, y0, x1, y1"),
    ("path,label,x0,y0,x1,y1\na/000.png,a,1,2,999,3\n", "not inside"),
    ("path,label,x0,y0,x1,y1\na/000.png,a,1,2,x,3\n", "must be numbers"),
])
def test_bad_manifests(tmp_path, rows, expected):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    (root / "manifest.csv").write_text(rows)
    assert expected in _error(root)


def test_manifest_may_cover_only_some_images_and_leave_boxes_empty(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    (root / "manifest.csv").write_text("path,label,weather,x0,y0,x1,y1\na/000.png,a,sunny,,,,\nb/001.png,b,cloudy,1,1,5,5\n")
    with ProbeDataset(root, CLASSES) as probe:
        assert probe.attribute("weather") == ["sunny", "", "", "cloudy", "", ""]
        assert [i.box for i in probe.images][3] == (1.0, 1.0, 5.0, 5.0)
        assert np.isnan(probe.boxes(SPEC)[0]).all()


def test_image_that_fails_only_when_decoded(tmp_path):
    root = write_probe(tmp_path / "probe", CLASSES, per_class=2, manifest=False)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    (root / "a" / "cut.jpg").write_bytes(buffer.getvalue()[:200])
    with pytest.raises(BadInput, match="cut.jpg"):
        with ProbeDataset(root, CLASSES) as probe:
            probe.tensors(range(len(probe)), SPEC)
