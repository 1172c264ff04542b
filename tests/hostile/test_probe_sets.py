"""Hostile probe sets, as a zip or a directory: refused with one line, or read correctly."""

from __future__ import annotations

import io
import os
import socket
import struct
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from auditsvc.battery import dataset as dataset_module
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.errors import BadInput

CLASSES = ("a", "b")


def png(seed: int = 0, size=(8, 8)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


GOOD = {"a/0.png": png(0), "a/1.png": png(1), "b/0.png": png(2)}


def make_zip(path, members, method=zipfile.ZIP_STORED):
    """members: a dict or a list of (name or ZipInfo, bytes); duplicates allowed in a list."""
    items = members.items() if isinstance(members, dict) else members
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", method) as archive:
        warnings.simplefilter("ignore")   # "Duplicate name" is the point of some cases
        for name, data in items:
            archive.writestr(name, data)
    return path


def central_entries(raw: bytes):
    """Offsets of the central directory entries, by raw name."""
    offset, entries = raw.find(b"PK\x01\x02"), {}
    while offset != -1:
        length = struct.unpack_from("<H", raw, offset + 28)[0]
        entries[raw[offset + 46:offset + 46 + length]] = offset
        offset = raw.find(b"PK\x01\x02", offset + 46)
    return entries


def patch_central(path, name: bytes, field_offset: int, fmt: str, change):
    raw = bytearray(path.read_bytes())
    at = central_entries(bytes(raw))[name] + field_offset
    struct.pack_into(fmt, raw, at, change(struct.unpack_from(fmt, raw, at)[0]))
    path.write_bytes(bytes(raw))
    return path


def rename_raw(path, old: bytes, new: bytes):
    """Give a member raw name bytes the zip module would not write (in both headers)."""
    assert len(old) == len(new)
    path.write_bytes(path.read_bytes().replace(old, new))
    return path


def flip_byte_of(path, name: str):
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
    raw[info.header_offset + 30 + name_length + extra_length + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def truncated(path, cut: int):
    path.write_bytes(path.read_bytes()[:-cut])
    return path


def refusal(source, classes=CLASSES) -> str:
    with pytest.raises(BadInput) as caught:
        ProbeDataset(source, classes).close()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- zip archives ---------------------------------------------------------------------------------

ZIP_CASES = {
    "bad-crc": (lambda p: flip_byte_of(make_zip(p, GOOD), "a/1.png"), "'a/1.png' is corrupt (BadZipFile: Bad CRC-32"),
    "header-size-larger-than-data": (
        lambda p: patch_central(make_zip(p, GOOD), b"a/1.png", 24, "<I", lambda v: v + 10), "'a/1.png' is corrupt"),
    "header-size-smaller-than-data": (
        lambda p: patch_central(make_zip(p, GOOD, zipfile.ZIP_DEFLATED), b"a/1.png", 24, "<I", lambda v: v - 10),
        "'a/1.png' is corrupt"),
    "header-claims-300-MiB": (
        lambda p: patch_central(make_zip(p, GOOD), b"a/1.png", 24, "<I", lambda v: 300 << 20),
        "is 300.0 MiB; files in a probe set may have at most 256.0 MiB"),
    "deflate-stream-corrupt": (lambda p: flip_byte_of(make_zip(p, GOOD, zipfile.ZIP_DEFLATED), "a/1.png"),
                               "'a/1.png' is corrupt"),
    "duplicate-member": (lambda p: make_zip(p, [*GOOD.items(), ("a/0.png", png(9))]),
                         "'a/0.png' appears twice in the archive"),
    "duplicate-in-two-unicode-forms": (
        lambda p: make_zip(p, [*GOOD.items(), ("a/caf\u00e9.png", png(3)), ("a/cafe\u0301.png", png(4))]),
        "appears twice in the archive"),
    "empty-member-name": (lambda p: make_zip(p, [*GOOD.items(), (zipfile.ZipInfo(""), b"x")]), "empty name"),
    "dot-member-name": (lambda p: make_zip(p, [*GOOD.items(), (".", b"x")]), "empty name"),
    "newline-in-member-name": (lambda p: make_zip(p, {**GOOD, "a/x\ny.png": png(3)}), "U+000A"),
    "escape-in-member-name": (lambda p: make_zip(p, {**GOOD, "a/\x1b[2J.png": png(3)}), "U+001B"),
    "member-name-600-chars": (lambda p: make_zip(p, {**GOOD, "a/" + "x" * 300 + "/" + "y" * 300: b"x"}),
                              "at most 512 are allowed"),
    "file-name-300-chars": (lambda p: make_zip(p, {**GOOD, "a/" + "x" * 300 + ".png": png(3)}),
                            "longer than 255 characters"),
    "utf8-flag-on-invalid-bytes": (
        lambda p: patch_central(rename_raw(make_zip(p, {**GOOD, "a/QQ.png": png(3)}), b"a/QQ.png", b"a/\xff\xfe.png"),
                                b"a/\xff\xfe.png", 8, "<H", lambda v: v | 0x800),
        "marked as UTF-8 but is not valid UTF-8"),
    "unsupported-compression-method": (
        lambda p: patch_central(make_zip(p, GOOD), b"a/1.png", 10, "<H", lambda v: 99),
        "compression method 99, which is not supported"),
    "encrypted-flag": (lambda p: patch_central(make_zip(p, GOOD), b"a/1.png", 8, "<H", lambda v: v | 1), "encrypted"),
    "backslash-traversal": (lambda p: make_zip(p, {**GOOD, "a\\..\\..\\evil.png": png(3)}), "path traversal"),
    "drive-letter": (lambda p: make_zip(p, {**GOOD, "C:/evil.png": png(3)}), "path traversal"),
    "traversal-hidden-in-macosx": (lambda p: make_zip(p, {**GOOD, "__MACOSX/../../evil": b"x"}), "path traversal"),
    "truncated-archive": (lambda p: truncated(make_zip(p, GOOD), 30), "neither a directory nor a zip archive"),
    "not-an-image-inside": (lambda p: make_zip(p, {**GOOD, "a/2.png": b"MZ\x90\x00 executable"}),
                            "a/2.png is not a readable image"),
}


@pytest.mark.parametrize("build, expected", ZIP_CASES.values(), ids=ZIP_CASES.keys())
def test_hostile_zip_is_refused(tmp_path, build, expected):
    assert expected in refusal(build(tmp_path / "probe.zip"))


def test_member_past_the_image_size_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_IMAGE_BYTES", 100)
    assert "files in a probe set may have at most" in refusal(make_zip(tmp_path / "p.zip", GOOD))


def test_too_many_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_FILES", 3)
    members = {**GOOD, "b/1.png": png(4)}
    assert "the zip holds 4 entries; at most 3" in refusal(make_zip(tmp_path / "p.zip", members))
    root = tmp_path / "dir"
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    assert "more than 3 files and folders" in refusal(root)


def test_macosx_metadata_and_finder_files_are_ignored(tmp_path):
    members = {**GOOD, "__MACOSX/a/._0.png": b"\0\5\26\7", "a/.DS_Store": b"junk", "a/._1.png": b"junk",
               ".DS_Store": b"junk", "b/Thumbs.db": b"junk"}
    with ProbeDataset(make_zip(tmp_path / "p.zip", members), CLASSES) as probe:
        assert [image.path for image in probe.images] == ["a/0.png", "a/1.png", "b/0.png"]


def test_names_without_the_utf8_flag(tmp_path):
    """UTF-8 bytes without the flag are read as UTF-8; other bytes as cp437 (never a crash)."""
    path = make_zip(tmp_path / "p.zip", {**GOOD, "a/cafXX.png": png(3), "b/QQ.png": png(4)})
    rename_raw(path, b"a/cafXX.png", "a/café.png".encode())
    rename_raw(path, b"b/QQ.png", b"b/\x82\xe9.png")   # cp437 bytes
    with ProbeDataset(path, CLASSES) as probe:
        names = [image.path for image in probe.images]
        assert "a/café.png" in names and "b/\u00e9\u0398.png" in names
        assert len(probe.sha256) == 64


def test_decomposed_class_folder_matches_the_composed_class_name(tmp_path):
    """macOS writes names decomposed (NFD); model.json is usually composed (NFC)."""
    path = make_zip(tmp_path / "p.zip", {"cafe\u0301/0.png": png(0), "the\u0301/0.png": png(1)})
    with ProbeDataset(path, ("caf\u00e9", "th\u00e9")) as probe:
        assert list(probe.labels) == [0, 1]


def test_a_wrapping_folder_next_to_finder_files(tmp_path):
    members = {"probe/" + name: data for name, data in GOOD.items()} | {".DS_Store": b"x", "__MACOSX/._probe": b"x"}
    with ProbeDataset(make_zip(tmp_path / "p.zip", members), CLASSES) as probe:
        assert len(probe) == 3


# --- directories ----------------------------------------------------------------------------------

def write_dir(root, members=GOOD):
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def sparse_12_gib(root):
    with open(root / "a" / "huge.png", "wb") as file:
        file.truncate(12 * 2**30)


def non_utf8_name(root):
    with open(os.fsencode(root / "a") + b"/caf\xe9.png", "wb") as file:
        file.write(png(5))


def unix_socket(root):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "a" / "s.png"))
    server.close()


def unicode_form_twins(root):
    (root / "a" / "caf\u00e9.png").write_bytes(png(3))
    (root / "a" / "cafe\u0301.png").write_bytes(png(4))


def folder_named_like_an_image(root):
    (root / "a" / "dir.png").mkdir()
    (root / "a" / "dir.png" / "x.png").write_bytes(png(3))


DIRECTORY_CASES = {
    "sparse-12-GiB-file": (sparse_12_gib, "a/huge.png is 12.0 GiB; files in a probe set may have at most 256.0 MiB"),
    "fifo": (lambda root: os.mkfifo(root / "a" / "pipe.png"), "a/pipe.png is not a regular file"),
    "unix-socket": (unix_socket, "a/s.png is not a regular file"),
    "link-to-a-device": (lambda root: os.symlink("/dev/zero", root / "a" / "zero.png"), "points outside the dataset"),
    "link-to-a-folder-outside": (lambda root: os.symlink("/etc", root / "a" / "etc"), "points outside the dataset"),
    "relative-link-outside": (lambda root: os.symlink("../" * 40 + "etc/passwd", root / "a" / "p.png"),
                              "outside the dataset"),
    "link-to-a-folder-inside": (lambda root: os.symlink(root / "b", root / "a" / "more"), "a link to a folder"),
    "broken-link": (lambda root: os.symlink(root / "missing.png", root / "a" / "gone.png"), "broken link"),
    "link-loop": (lambda root: os.symlink(root / "a" / "loop.png", root / "a" / "loop.png"), "link loop"),
    "non-utf8-file-name": (non_utf8_name, "the file name 'a/caf\ufffd.png' is not valid UTF-8; rename it"),
    "newline-in-file-name": (lambda root: (root / "a" / "x\ny.png").write_bytes(png(3)), "U+000A"),
    "names-in-two-unicode-forms": (unicode_form_twins, "appears twice in the dataset"),
    "empty-image-file": (lambda root: (root / "a" / "empty.png").write_bytes(b""), "a/empty.png is not a readable"),
    "folder-named-like-an-image": (folder_named_like_an_image, "a/dir.png/x.png is nested too deep"),
}


@pytest.mark.parametrize("damage, expected", DIRECTORY_CASES.values(), ids=DIRECTORY_CASES.keys())
def test_hostile_directory_is_refused(tmp_path, damage, expected):
    root = write_dir(tmp_path / "probe")
    damage(root)
    assert expected in refusal(root)


def test_dataset_that_is_a_fifo_or_missing(tmp_path):
    os.mkfifo(tmp_path / "probe.zip")
    assert "neither a directory nor a zip archive" in refusal(tmp_path / "probe.zip")
    assert "not found" in refusal(tmp_path / "missing.zip")
    assert "cannot be read (File name too long)" in refusal(tmp_path / ("x" * 5000))


def test_links_inside_the_set_still_work(tmp_path):
    root = write_dir(tmp_path / "probe")
    os.symlink(root / "a" / "0.png", root / "b" / "same.png")
    with ProbeDataset(root, CLASSES) as probe:
        assert [image.path for image in probe.images] == ["a/0.png", "a/1.png", "b/0.png", "b/same.png"]


def test_a_huge_central_directory_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_ZIP_DIRECTORY_BYTES", 1000)
    members = {f"a/{i:04d}.png": b"" for i in range(40)} | GOOD
    assert "the zip's directory is 2.3 KiB, more than the 1000 bytes allowed" in refusal(
        make_zip(tmp_path / "p.zip", members))
