"""Probe datasets: a directory or a .zip in ImageFolder layout, with an optional manifest.csv.

Everything is checked when the set is opened (layout, class names, every file's size, every
image's header, the manifest), so an audit never starts on input that would fail half-way.
Pixels are read on demand, in batches, so memory stays bounded whatever the size of the set.
Every limit is in limits.py; anything past one, or malformed, is a BadInput with one line.

Files: only regular files are read, each after its size is checked (stat, or the zip header),
and never more than the limit. Zip members are verified by their CRC. File names must be UTF-8
(zip names without the UTF-8 flag are taken as UTF-8 when they decode as such, else as cp437),
one line, and unique; they are compared in Unicode NFC form, so a set zipped on a Mac matches the
class names of model.json. __MACOSX, .DS_Store, Thumbs.db, desktop.ini and ._* files are ignored.

Images: PNG, JPEG, WebP, BMP, GIF and TIFF; of an animated GIF or multi-page TIFF the first
frame is used. Pixels are scaled to 8 bits by their full range: 16-bit images (modes I;16*, and
mode I, which Pillow uses for some 16-bit files, whose values must then lie in 0..65535) divided
by 257; float images (mode F) must lie in [0, 1] and are multiplied by 255, anything else in
them (NaN, infinities, other ranges) is refused rather than guessed at. Palette, alpha and CMYK
images are converted by Pillow; alpha is dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import stat
import unicodedata
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from .errors import BadInput
from .limits import (MAX_ATTRIBUTE_COLUMNS, MAX_ATTRIBUTE_VALUE_CHARS, MAX_COLUMN_NAME_CHARS,
                     MAX_COMPRESSION_RATIO, MAX_FILE_NAME_CHARS, MAX_FILES, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS,
                     MAX_IMAGES, MAX_MANIFEST_BYTES, MAX_MANIFEST_FIELD_CHARS, MAX_PATH_CHARS,
                     MAX_UNCOMPRESSED_BYTES, MAX_ZIP_DIRECTORY_BYTES)
from .model.meta import InputSpec, forbidden_character

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST = "manifest.csv"
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
IGNORED_FOLDERS = {"__MACOSX"}
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")   # Pillow's other decoders are never tried


@dataclass(frozen=True)
class ProbeImage:
    path: str                       # relative POSIX path inside the set: "<class>/<file>"
    label: int                      # index into the model's classes
    width: int
    height: int
    attributes: dict[str, str] = field(default_factory=dict)
    box: tuple[float, float, float, float] | None = None  # pixels of the original image


def open_probe_set(source: Path, classes: Sequence[str] | None = None) -> "ProbeDataset":
    """Open and validate a probe set (folder or zip); BadInput with one line when it is not one."""
    return ProbeDataset(source, classes)


class ProbeDataset:
    """An opened, validated probe set. Use as a context manager or call close()."""

    def __init__(self, source: Path, classes: Sequence[str] | None = None):
        """classes: the model's classes; None takes the class folders as they are (upload checks)."""
        self.source = Path(source)
        self.label = self.source.name   # how reports name the set; the service uses its stored name
        self._files = _open_files(self.source)
        try:
            self.classes = tuple(classes) if classes is not None else _folder_classes(self._files)
            self.images, self.attribute_names, self.sha256 = _index(self._files, self.classes)
        except BaseException:
            self._files.close()
            raise

    def __len__(self) -> int:
        return len(self.images)

    def __enter__(self) -> "ProbeDataset":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._files.close()

    @property
    def labels(self) -> np.ndarray:
        return np.array([image.label for image in self.images], dtype=np.int64)

    @property
    def present_classes(self) -> list[int]:
        return sorted({image.label for image in self.images})

    @property
    def has_boxes(self) -> bool:
        return any(image.box is not None for image in self.images)

    def attribute(self, name: str) -> list[str]:
        return [image.attributes.get(name, "") for image in self.images]

    def pixels(self, indices: Sequence[int], spec: InputSpec) -> np.ndarray:
        """Images resized to the model input: uint8 (n, H, W, C)."""
        return np.stack([self._resized(i, spec) for i in indices])

    def tensors(self, indices: Sequence[int], spec: InputSpec) -> torch.Tensor:
        return normalize(self.pixels(indices, spec), spec)

    def batches(self, spec: InputSpec, batch_size: int = 64,
                indices: Sequence[int] | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        order = list(range(len(self))) if indices is None else list(indices)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            yield chunk, self.tensors(chunk, spec)

    def boxes(self, spec: InputSpec) -> np.ndarray:
        """Object boxes scaled to the model input, (N, 4) x0, y0, x1, y1; NaN where none."""
        boxes = np.full((len(self), 4), np.nan)
        for i, image in enumerate(self.images):
            if image.box is not None:
                sx, sy = spec.width / image.width, spec.height / image.height
                x0, y0, x1, y1 = image.box
                boxes[i] = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        return boxes

    def _resized(self, index: int, spec: InputSpec) -> np.ndarray:
        name = self.images[index].path
        image = _eight_bit(name, self._files.open_image(name), spec.channels)
        image = image.resize((spec.width, spec.height), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array


def normalize(pixels: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """uint8 (n, H, W, C) -> float (n, C, H, W) normalized as model.json says."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (tensor - mean) / std


def denormalize(tensor: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """float (n, C, H, W) normalized -> float (n, H, W, C) in [0, 1] for display."""
    mean = torch.tensor(spec.mean, device=tensor.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=tensor.device).view(1, -1, 1, 1)
    return (tensor.detach() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


# --- files: a directory or a zip, behind one small interface --------------------------------

class _Files:
    """The set's files by their name in the set: '<class>/<file>' or 'manifest.csv', NFC, '/'-separated."""

    def names(self) -> list[str]: ...
    def read(self, name: str, limit: int) -> bytes: ...
    def close(self) -> None: ...

    def open_image(self, name: str) -> Image.Image:
        return _decode(name, self.read(name, MAX_IMAGE_BYTES))


def _key(name: str) -> str:
    """How names are compared: the composed Unicode form (macOS writes names decomposed)."""
    return unicodedata.normalize("NFC", name)


def _ignored(name: str) -> bool:
    parts = name.split("/")
    return parts[-1] in IGNORED_NAMES or parts[-1].startswith("._") or any(p in IGNORED_FOLDERS for p in parts)


def _check_name(name: str, what: str) -> None:
    bad = forbidden_character(name)
    if bad:
        raise BadInput(f"{what} {name!r} holds the control or layout character {bad}; rename it")
    if len(name) > MAX_PATH_CHARS:
        raise BadInput(f"{what} {name[:60]!r}... is {len(name)} characters long; at most {MAX_PATH_CHARS} are allowed")
    if any(len(part) > MAX_FILE_NAME_CHARS for part in name.split("/")):
        raise BadInput(f"{what} {name[:60]!r}... has a name longer than {MAX_FILE_NAME_CHARS} characters")


def _too_large(name: str, size: int, limit: int) -> BadInput:
    allowed = f"{MANIFEST} may have at most" if name == MANIFEST else "files in a probe set may have at most"
    return BadInput(f"{name} is {_bytes(size)}; {allowed} {_bytes(limit)}")


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


class _DirectoryFiles(_Files):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self._paths = self._walk()   # name in the set -> path relative to the root, as on disk

    def names(self) -> list[str]:
        return sorted(self._paths)

    def read(self, name: str, limit: int) -> bytes:
        # O_NONBLOCK: a file swapped for a FIFO after the walk cannot block the read.
        try:
            handle = os.open(self.root / self._paths[name], os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise BadInput(f"{name} cannot be read ({exc.strerror or exc})") from None
        with os.fdopen(handle, "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise BadInput(f"{name} is not a regular file; refused")
            if status.st_size > limit:
                raise _too_large(name, status.st_size, limit)
            data = file.read(limit + 1)
        if len(data) > limit:
            raise _too_large(name, len(data), limit)
        return data

    def close(self) -> None:
        pass

    def _walk(self) -> dict[str, str]:
        paths: dict[str, str] = {}
        folders, seen = [""], 0
        while folders:
            folder = folders.pop()
            try:
                with os.scandir(self.root / folder) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > MAX_FILES:
                            raise BadInput(f"the dataset holds more than {MAX_FILES} files and folders; refused")
                        relative = f"{folder}/{entry.name}" if folder else entry.name
                        name = self._name(relative)
                        if self._is_folder(entry, name):
                            folders.append(relative)
                        elif _key(name) in paths:
                            raise BadInput(f"{name!r} appears twice in the dataset "
                                           "(the same name in two Unicode forms)")
                        else:
                            paths[_key(name)] = relative
            except OSError as exc:
                reason = exc.strerror or exc
                raise BadInput(f"folder {folder or '.'} of the dataset cannot be read ({reason})") from None
        return paths

    @staticmethod
    def _name(relative: str) -> str:
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as surrogates
            shown = os.fsencode(relative).decode("utf-8", "replace")
            raise BadInput(f"the file name {shown!r} is not valid UTF-8; rename it") from None
        _check_name(relative, "the file name")
        return relative

    def _is_folder(self, entry: os.DirEntry, name: str) -> bool:
        if entry.is_symlink():
            try:
                target = Path(entry.path).resolve(strict=True)
            except (OSError, RuntimeError):
                raise BadInput(f"{name} is a broken link or a link loop; refused") from None
            if not target.is_relative_to(self.root):
                raise BadInput(f"{name} is a link that points outside the dataset")
            if target.is_dir():
                raise BadInput(f"{name} is a link to a folder; links to folders are not followed, copy the folder")
        mode = entry.stat().st_mode
        if stat.S_ISDIR(mode):
            return True
        if not stat.S_ISREG(mode):
            raise BadInput(f"{name} is not a regular file (a FIFO, socket or device); refused")
        return False


_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ZIP_UTF8_FLAG = 0x800


class _ZipFiles(_Files):
    def __init__(self, path: Path):
        _check_directory_size(path)
        try:
            self.archive = zipfile.ZipFile(path)
        except UnicodeDecodeError:
            raise BadInput(f"{path.name}: a file name is marked as UTF-8 but is not valid UTF-8; "
                           "re-create the zip") from None
        except Exception as exc:  # the zip module raises many kinds on a malformed archive
            raise BadInput(f"{path.name} is not a readable zip archive ({_cause(exc)})") from None
        try:
            self._members = self._check_members()   # name in the set -> member
        except BaseException:
            self.archive.close()
            raise

    def names(self) -> list[str]:
        return sorted(self._members)

    def read(self, name: str, limit: int) -> bytes:
        info = self._members[name]
        if info.file_size > limit:
            raise _too_large(name, info.file_size, limit)
        try:
            with self.archive.open(info) as handle:
                data = handle.read(limit + 1)   # reading to the end checks the CRC
        except Exception as exc:  # BadZipFile (bad CRC), zlib, bz2 and lzma errors, EOFError
            raise BadInput(f"zip entry {name!r} is corrupt ({_cause(exc)}); re-create the zip") from None
        if len(data) != info.file_size:
            raise BadInput(f"zip entry {name!r} is corrupt (its size differs from its header); re-create the zip")
        return data

    def close(self) -> None:
        self.archive.close()

    def _check_members(self) -> dict[str, zipfile.ZipInfo]:
        infos = self.archive.infolist()
        if len(infos) > MAX_FILES:
            raise BadInput(f"the zip holds {len(infos)} entries; at most {MAX_FILES} are allowed")
        members: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = _member_name(info)
            _check_member(info, name)
            total += info.file_size
            if info.is_dir() or _ignored(name):
                continue
            _check_name(name, "zip entry")
            if _key(name) in members:
                raise BadInput(f"zip entry {name!r} appears twice in the archive; keep one")
            members[_key(name)] = info
        if total > MAX_UNCOMPRESSED_BYTES:
            raise BadInput(f"zip expands to {total >> 20} MiB, more than the {MAX_UNCOMPRESSED_BYTES >> 30} GiB "
                           "allowed")
        cut = _wrapping_folder_length(members)
        return {n[cut:]: info for n, info in members.items()} if cut else members


def _wrapping_folder_length(names) -> int:
    """`zip -r probe.zip probe/` wraps everything in one folder: the length of its prefix to cut, else 0."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return len(next(iter(tops))) + 1
    return 0


def images_per_class(archive) -> dict[str, int]:
    """Images per class folder of a probe set zip (a path or a binary file) that was accepted when it was
    uploaded, from the zip's directory alone: no image is read, nothing is checked again."""
    try:
        with zipfile.ZipFile(archive) as opened:
            names = [_key(_member_name(info)) for info in opened.infolist() if not info.is_dir()]
    except Exception as exc:  # the zip module raises many kinds on a malformed archive
        raise BadInput(f"the probe set is not a readable zip archive ({_cause(exc)})") from None
    names = [n for n in names if not _ignored(n)]
    cut = _wrapping_folder_length(names)
    counts: dict[str, int] = {}
    for name in (n[cut:] for n in names):
        if "/" in name:
            folder = name.split("/", 1)[0]
            counts[folder] = counts.get(folder, 0) + 1
    return counts


def _check_directory_size(path: Path) -> None:
    """Refuses a central directory past its cap from the end record, before the zip module reads it."""
    try:
        with open(path, "rb") as handle:
            end_record = zipfile._EndRecData(handle)   # the zip module's own reader of the end record
    except Exception:  # unreadable or no end record: zipfile.ZipFile refuses it in words
        return
    if end_record and end_record[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES:
        raise BadInput(f"{path.name}: the zip's directory is {_bytes(end_record[zipfile._ECD_SIZE])}, more than "
                       f"the {_bytes(MAX_ZIP_DIRECTORY_BYTES)} allowed (too many entries)")


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name; names without the UTF-8 flag are UTF-8 if they decode as such (most tools), else cp437."""
    if info.flag_bits & _ZIP_UTF8_FLAG:
        return info.filename
    raw = info.filename.encode("cp437")   # the zip module decoded the raw bytes as cp437: undo it
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def _check_member(info: zipfile.ZipInfo, name: str) -> None:
    parts = PurePosixPath(name).parts
    if not parts:
        raise BadInput(f"a zip entry has an empty name ({name!r}); re-create the zip")
    if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\\" in name:
        raise BadInput(f"zip entry {name!r} points outside the dataset (path traversal); refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BadInput(f"zip entry {name!r} is a symbolic link; links are refused in uploaded datasets")
    if info.flag_bits & 0x1:
        raise BadInput(f"zip entry {name!r} is encrypted; upload an unencrypted zip")
    if info.compress_type not in _ZIP_METHODS:
        raise BadInput(f"zip entry {name!r} uses compression method {info.compress_type}, which is not supported; "
                       "use deflate")
    if info.file_size > MAX_IMAGE_BYTES:
        raise _too_large(f"zip entry {name!r}", info.file_size, MAX_IMAGE_BYTES)
    if info.file_size > 1 << 20 and info.file_size / max(info.compress_size, 1) > MAX_COMPRESSION_RATIO:
        raise BadInput(f"zip entry {name!r} expands {info.file_size // max(info.compress_size, 1)}x; "
                       "refused as a zip bomb")


def _cause(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {str(exc)[:100]}" if str(exc) else exc.__class__.__name__


def _open_files(source: Path) -> _Files:
    try:
        return _files_of(source)
    except (OSError, ValueError) as exc:  # a name too long, a NUL in it, no permission
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BadInput(f"dataset {str(source)[:100]!r} cannot be read ({reason})") from None


def _files_of(source: Path) -> _Files:
    if source.is_dir():
        return _DirectoryFiles(source)
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise BadInput(f"dataset {source.name} is neither a directory nor a zip archive")
        return _ZipFiles(source)
    if source.exists():
        raise BadInput(f"dataset {source.name} is neither a directory nor a zip archive")
    raise BadInput(f"dataset {source} not found")


# --- images --------------------------------------------------------------------------------------

_EIGHT_BIT_MODES = {"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_RANGE_CHECKED_MODES = {"I", "F"}   # their values are checked when the set is opened, not only when drawn
_SUPPORTED_MODES = _EIGHT_BIT_MODES | _SIXTEEN_BIT_MODES | _RANGE_CHECKED_MODES


class _ImageErrors:
    """Turns whatever Pillow raises on a hostile file into one BadInput line."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("error", Image.DecompressionBombWarning)

    def __exit__(self, kind, exc, traceback) -> bool:
        self._warnings.__exit__(kind, exc, traceback)
        if exc is None or isinstance(exc, BadInput) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise _too_many_pixels(self.name) from None
        raise BadInput(f"{self.name} is not a readable image ({_cause(exc)[:90]})") from None


def _too_many_pixels(name: str) -> BadInput:
    return BadInput(f"{name} has too many pixels (decompression bomb?); images may have at most "
                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")


def _open_image(name: str, data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise _too_many_pixels(name)
    if min(image.size) < 1:
        raise BadInput(f"{name} is an empty image (0 pixels)")
    if image.mode not in _SUPPORTED_MODES:
        raise BadInput(f"{name} has the image mode {image.mode}, which is not supported; "
                       "save it as 8- or 16-bit greyscale or RGB")
    return image


def _decode(name: str, data: bytes) -> Image.Image:
    """The first frame, decoded."""
    with _ImageErrors(name):
        image = _open_image(name, data)
        image.load()
        return image


def _header(name: str, data: bytes) -> tuple[int, int]:
    """Width and height from the header; verifies the file (and the value range of 32-bit images)."""
    with _ImageErrors(name):
        with _open_image(name, data) as image:
            size, mode = image.size, image.mode
            image.verify()
    if mode in _RANGE_CHECKED_MODES:
        image = _decode(name, data)
        _check_range(name, image.mode, np.asarray(image))
    return size


def _check_range(name: str, mode: str, values: np.ndarray) -> None:
    if not values.size:
        return
    if mode == "I" and (values.min() < 0 or values.max() > 65535):
        raise BadInput(f"{name} is a 32-bit integer image with values outside 0..65535; save it as 8- or 16-bit")
    if mode == "F" and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise BadInput(f"{name} is a floating-point image with values outside [0, 1] (or NaN); "
                       "scale it to [0, 1] or save it as 8- or 16-bit")


def _eight_bit(name: str, image: Image.Image, channels: int) -> Image.Image:
    """The image as 8-bit greyscale (channels 1) or RGB, scaled by the full range of its mode."""
    target = "L" if channels == 1 else "RGB"
    if image.mode in _EIGHT_BIT_MODES:
        return image.convert(target)
    values = np.asarray(image)
    _check_range(name, image.mode, values)
    if image.mode == "F":
        scaled = values.astype(np.float32) * 255
    elif image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        scaled = values.astype(np.float32) / 257   # 65535 -> 255
    else:  # _open_image lets no other mode through
        raise BadInput(f"{name} has the image mode {image.mode}, which is not supported")
    grey = Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
    return grey if channels == 1 else grey.convert("RGB")


# --- index: layout, classes, images, manifest -----------------------------------------------

def _folder_classes(files: _Files) -> tuple[str, ...]:
    return tuple(sorted({n.split("/", 1)[0] for n in files.names() if "/" in n and not _ignored(n)}))


def _index(files: _Files, classes: tuple[str, ...]) -> tuple[list[ProbeImage], list[str], str]:
    names = [n for n in files.names() if not _ignored(n)]
    image_names = [n for n in names if "/" in n]
    nested = [n for n in image_names if n.count("/") > 1]
    if nested:
        raise BadInput(f"{nested[0]} is nested too deep: the layout is <class name>/<image>")
    folders = sorted({n.split("/", 1)[0] for n in image_names})
    if not folders:
        raise BadInput("the dataset is empty: expected one folder per class, <class name>/<image>")
    label_of = {_key(c): i for i, c in enumerate(classes)}
    unknown = [f for f in folders if f not in label_of]
    if unknown:
        raise BadInput(f"class folder(s) {', '.join(map(repr, unknown[:5]))} are not among the model's classes "
                       f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    if len(image_names) > MAX_IMAGES:
        raise BadInput(f"the dataset has {len(image_names)} images; at most {MAX_IMAGES} are allowed")
    for name in image_names:
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadInput(f"{name} is not an image file (allowed: {', '.join(sorted(IMAGE_SUFFIXES))})")
    digest = hashlib.sha256()
    sizes: dict[str, tuple[int, int]] = {}
    for name in image_names:
        data = files.read(name, MAX_IMAGE_BYTES)
        sizes[name] = _header(name, data)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    manifest = None
    if MANIFEST in names:
        raw = files.read(MANIFEST, MAX_MANIFEST_BYTES)
        manifest = _parse_manifest(raw, set(image_names), sizes)
        digest.update(raw)
    images = []
    for name in image_names:
        row = manifest.rows.get(name) if manifest else None
        width, height = sizes[name]
        images.append(ProbeImage(name, label_of[name.split("/", 1)[0]], width, height,
                                 row.attributes if row else {}, row.box if row else None))
    if len({image.label for image in images}) < 2:
        raise BadInput(f"the dataset has images of one class only ({classes[images[0].label]!r}); "
                       "an audit needs at least two classes")
    return images, manifest.attribute_names if manifest else [], digest.hexdigest()


# --- manifest.csv: strict CSV, one row per line -----------------------------------------------

@dataclass
class _ManifestRow:
    attributes: dict[str, str]
    box: tuple[float, float, float, float] | None


@dataclass
class _Manifest:
    attribute_names: list[str]
    rows: dict[str, _ManifestRow]


def _parse_manifest(raw: bytes, image_names: set[str], sizes: dict[str, tuple[int, int]]) -> _Manifest:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{MANIFEST} is not UTF-8 text") from None
    if "\x00" in text:
        raise BadInput(f"{MANIFEST} line {text.count(chr(10), 0, text.index(chr(0))) + 1} holds a NUL byte; "
                       "it must be plain CSV text")
    records = _csv_records(text)
    if not records:
        raise BadInput(f"{MANIFEST} must have a header with 'path' and 'label' columns; the file is empty")
    columns = _header_columns(records[0][1])
    attribute_names = [c for c in columns if c not in ("path", "label", *BOX_COLUMNS)]
    has_box = any(c in columns for c in BOX_COLUMNS)
    rows: dict[str, _ManifestRow] = {}
    for line, fields in records[1:]:
        where = f"{MANIFEST} line {line}"
        if len(fields) != len(columns):
            raise BadInput(f"{where} has {len(fields)} fields but the header has {len(columns)}; "
                           "give every row one value per column (empty is allowed)")
        record = dict(zip(columns, (f.strip() for f in fields)))
        path = _key(PurePosixPath(record["path"]).as_posix()) if record["path"] else ""
        if path not in image_names:
            raise BadInput(f"{where}: {record['path']!r} is not an image of the dataset")
        if path in rows:
            raise BadInput(f"{where}: {path!r} is listed twice")
        folder = path.split("/", 1)[0]
        if _key(record["label"]) != folder:
            raise BadInput(f"{where}: label {record['label']!r} disagrees with the class folder {folder!r}")
        box = _box(record, where, sizes[path]) if has_box else None
        rows[path] = _ManifestRow({name: _attribute(record[name], name, where) for name in attribute_names}, box)
    return _Manifest(attribute_names, rows)


def _csv_records(text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row; a row must be one line and every field short."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, line = [], 1
    try:
        for fields in reader:
            if any("\n" in f or "\r" in f for f in fields):
                raise BadInput(f"{MANIFEST} line {line}: a quoted field runs over several lines (an unbalanced "
                               "quote?); every row must be on one line")
            for column, value in enumerate(fields, start=1):
                if len(value) > MAX_MANIFEST_FIELD_CHARS:
                    raise BadInput(f"{MANIFEST} line {line}, column {column}: the field is {len(value)} characters "
                                   f"long; at most {MAX_MANIFEST_FIELD_CHARS} are allowed")
            if any(f.strip() for f in fields):   # blank lines, and rows of empty fields, are skipped
                records.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise BadInput(f"{MANIFEST} line {line}: {_csv_problem(str(exc))}") from None
    return records


def _csv_problem(message: str) -> str:
    if "field larger than field limit" in message:
        return f"a field is longer than {MAX_MANIFEST_FIELD_CHARS} characters (or a quote is never closed)"
    if "unexpected end of data" in message:
        return "a quoted field is never closed (an unbalanced quote)"
    return f"not valid CSV ({message}); quote fields that hold commas or quotes"


def _header_columns(fields: list[str]) -> list[str]:
    columns = [c.strip() for c in fields]
    if "path" not in columns or "label" not in columns:
        raise BadInput(f"{MANIFEST} must have a header with 'path' and 'label' columns, got {columns[:8]}")
    for number, column in enumerate(columns, start=1):
        if not column:
            raise BadInput(f"{MANIFEST}: column {number} of the header has no name")
        _plain_text(column, MAX_COLUMN_NAME_CHARS, f"{MANIFEST}: the column name {column[:40]!r}")
    if len(set(columns)) != len(columns):
        raise BadInput(f"{MANIFEST} has duplicate column names")
    box_columns = [c for c in BOX_COLUMNS if c in columns]
    if box_columns and len(box_columns) != 4:
        raise BadInput(f"{MANIFEST}: a box needs all of x0, y0, x1, y1; found only {', '.join(box_columns)}")
    attributes = len(columns) - 2 - len(box_columns)
    if attributes > MAX_ATTRIBUTE_COLUMNS:
        raise BadInput(f"{MANIFEST} has {attributes} attribute columns; at most {MAX_ATTRIBUTE_COLUMNS} are allowed")
    return columns


def _attribute(value: str, column: str, where: str) -> str:
    return _plain_text(value, MAX_ATTRIBUTE_VALUE_CHARS, f"{where}: the {column!r} value {value[:40]!r}")


def _plain_text(text: str, limit: int, what: str) -> str:
    """A manifest's column name or value: at most `limit` characters, no control characters."""
    if len(text) > limit:
        raise BadInput(f"{what} is {len(text)} characters long, longer than {limit} characters")
    bad = forbidden_character(text)
    if bad:
        raise BadInput(f"{what} holds the control character {bad}")
    return text


def _box(record: dict[str, str], where: str, size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    values = [record.get(c, "") for c in BOX_COLUMNS]
    if not any(values):
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except ValueError:
        raise BadInput(f"{where}: box values must be numbers, got {values}") from None
    width, height = size
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise BadInput(f"{where}: box {values} is not inside the {width}x{height} image with x0 < x1 and y0 < y1")
    return (x0, y0, x1, y1)
