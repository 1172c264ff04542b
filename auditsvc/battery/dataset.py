"""Probe datasets: a directory or a .zip in ImageFolder layout, with an optional manifest.csv.

Everything is checked when the set is opened (layout, class names, every image's header,
the manifest), so an audit never starts on input that would fail half-way. Pixels are read
on demand, in batches, so memory stays bounded whatever the size of the set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import stat
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import BadInput
from .limits import MAX_COMPRESSION_RATIO, MAX_IMAGE_PIXELS, MAX_IMAGES, MAX_UNCOMPRESSED_BYTES
from .meta import InputSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST = "manifest.csv"
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class ProbeImage:
    path: str                       # relative POSIX path inside the set: "<class>/<file>"
    label: int                      # index into the model's classes
    width: int
    height: int
    attributes: dict[str, str] = field(default_factory=dict)
    box: tuple[float, float, float, float] | None = None  # pixels of the original image


class ProbeSet:
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

    def __enter__(self) -> "ProbeSet":
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
        image = self._files.open_image(self.images[index].path)
        image = image.convert("L" if spec.channels == 1 else "RGB")
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
    def names(self) -> list[str]: ...
    def read(self, name: str) -> bytes: ...
    def close(self) -> None: ...

    def open_image(self, name: str) -> Image.Image:
        return _decode(name, self.read(name))


class _DirectoryFiles(_Files):
    def __init__(self, root: Path):
        self.root = root.resolve()

    def names(self) -> list[str]:
        names = []
        for path in sorted(self.root.rglob("*")):
            if path.is_symlink() and not path.resolve().is_relative_to(self.root):
                raise BadInput(f"{path.relative_to(self.root)} is a link that points outside the dataset")
            if path.is_file():
                names.append(path.relative_to(self.root).as_posix())
        return names

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def close(self) -> None:
        pass


class _ZipFiles(_Files):
    def __init__(self, path: Path):
        try:
            self.archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise BadInput(f"{path.name} is not a readable zip archive ({exc})") from None
        self.prefix = ""
        try:
            self._check_members()
        except BaseException:
            self.archive.close()
            raise

    def _check_members(self) -> None:
        total = 0
        for info in self.archive.infolist():
            name = info.filename
            pure = PurePosixPath(name)
            if name.startswith(("/", "\\")) or ".." in pure.parts or ":" in pure.parts[0] or "\\" in name:
                raise BadInput(f"zip entry {name!r} points outside the dataset (path traversal); refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BadInput(f"zip entry {name!r} is a symbolic link; links are refused in uploaded datasets")
            if info.flag_bits & 0x1:
                raise BadInput(f"zip entry {name!r} is encrypted; upload an unencrypted zip")
            total += info.file_size
            if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO and info.file_size > 1 << 20:
                raise BadInput(f"zip entry {name!r} expands {info.file_size // info.compress_size}x; refused as a zip bomb")
        if total > MAX_UNCOMPRESSED_BYTES:
            raise BadInput(f"zip expands to {total >> 20} MiB, more than the {MAX_UNCOMPRESSED_BYTES >> 30} GiB allowed")
        files = [n for n in self._raw_names()]
        tops = {n.split("/", 1)[0] for n in files}
        # `zip -r probe.zip probe/` wraps everything in one folder: look inside it.
        if len(tops) == 1 and all("/" in n for n in files):
            self.prefix = next(iter(tops)) + "/"

    def _raw_names(self) -> list[str]:
        return [i.filename for i in self.archive.infolist()
                if not i.is_dir() and not i.filename.startswith("__MACOSX/")]

    def names(self) -> list[str]:
        return sorted(n[len(self.prefix):] for n in self._raw_names())

    def read(self, name: str) -> bytes:
        info = self.archive.getinfo(self.prefix + name)
        with self.archive.open(info) as handle:
            data = handle.read(info.file_size + 1)
        if len(data) > info.file_size:
            raise BadInput(f"zip entry {name!r} is larger than its header says; refused")
        return data

    def close(self) -> None:
        self.archive.close()


def _open_files(source: Path) -> _Files:
    if source.is_dir():
        return _DirectoryFiles(source)
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise BadInput(f"dataset {source.name} is neither a directory nor a zip archive")
        return _ZipFiles(source)
    raise BadInput(f"dataset {source} not found")


def _decode(name: str, data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
            image.load()
        return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"{name} has too many pixels (decompression bomb?); images may have at most "
                       f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{name} is not a readable image ({exc.__class__.__name__}: {str(exc)[:80]})") from None


def _header(name: str, data: bytes) -> tuple[int, int]:
    """Width and height from the header; verifies the file without keeping pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                size = image.size
                if size[0] * size[1] > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                image.verify()
        if min(size) < 1:
            raise ValueError("empty image")
        return size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"{name} has too many pixels (decompression bomb?); images may have at most "
                       f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{name} is not a readable image ({exc.__class__.__name__}: {str(exc)[:80]})") from None


# --- index: layout, classes, images, manifest -----------------------------------------------

def _folder_classes(files: _Files) -> tuple[str, ...]:
    return tuple(sorted({n.split("/", 1)[0] for n in files.names() if "/" in n}))


def _index(files: _Files, classes: tuple[str, ...]) -> tuple[list[ProbeImage], list[str], str]:
    names = [n for n in files.names() if PurePosixPath(n).name not in IGNORED_NAMES
             and not PurePosixPath(n).name.startswith("._")]
    image_names = [n for n in names if "/" in n]
    nested = [n for n in image_names if n.count("/") > 1]
    if nested:
        raise BadInput(f"{nested[0]} is nested too deep: the layout is <class name>/<image>")
    folders = sorted({n.split("/", 1)[0] for n in image_names})
    if not folders:
        raise BadInput("the dataset is empty: expected one folder per class, <class name>/<image>")
    unknown = [f for f in folders if f not in classes]
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
        data = files.read(name)
        sizes[name] = _header(name, data)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    manifest = _read_manifest(files, names, set(image_names), classes, sizes)
    images, attribute_names = [], manifest.attribute_names if manifest else []
    for name in image_names:
        row = manifest.rows.get(name) if manifest else None
        width, height = sizes[name]
        images.append(ProbeImage(name, classes.index(name.split("/", 1)[0]), width, height,
                                 row.attributes if row else {}, row.box if row else None))
    if len({image.label for image in images}) < 2:
        raise BadInput(f"the dataset has images of one class only ({classes[images[0].label]!r}); "
                       "an audit needs at least two classes")
    if MANIFEST in names:
        digest.update(files.read(MANIFEST))
    return images, attribute_names, digest.hexdigest()


@dataclass
class _ManifestRow:
    attributes: dict[str, str]
    box: tuple[float, float, float, float] | None


@dataclass
class _Manifest:
    attribute_names: list[str]
    rows: dict[str, _ManifestRow]


def _read_manifest(files: _Files, names: list[str], image_names: set[str], classes: tuple[str, ...],
                   sizes: dict[str, tuple[int, int]]) -> _Manifest | None:
    if MANIFEST not in names:
        return None
    try:
        text = files.read(MANIFEST).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{MANIFEST} is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "path" not in columns or "label" not in columns:
        raise BadInput(f"{MANIFEST} must have a header with 'path' and 'label' columns, got {columns[:8]}")
    if len(set(columns)) != len(columns):
        raise BadInput(f"{MANIFEST} has duplicate column names")
    box_columns = [c for c in BOX_COLUMNS if c in columns]
    if box_columns and len(box_columns) != 4:
        raise BadInput(f"{MANIFEST}: a box needs all of x0, y0, x1, y1; found only {', '.join(box_columns)}")
    attribute_names = [c for c in columns if c not in ("path", "label", *BOX_COLUMNS)]
    rows: dict[str, _ManifestRow] = {}
    for line, raw in enumerate(reader, start=2):
        record = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        path = PurePosixPath(record["path"]).as_posix() if record["path"] else ""
        where = f"{MANIFEST} line {line}"
        if path not in image_names:
            raise BadInput(f"{where}: {record['path']!r} is not an image of the dataset")
        if path in rows:
            raise BadInput(f"{where}: {path!r} is listed twice")
        folder = path.split("/", 1)[0]
        if record["label"] != folder:
            raise BadInput(f"{where}: label {record['label']!r} disagrees with the class folder {folder!r}")
        box = _box(record, where, sizes[path]) if box_columns else None
        rows[path] = _ManifestRow({name: record.get(name, "") for name in attribute_names}, box)
    return _Manifest(attribute_names, rows)


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
