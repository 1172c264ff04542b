"""Images past 8 bits are scaled by their full range, odd modes convert, hostile files are refused."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.meta import InputSpec

CLASSES = ("a", "b")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def probe_with(tmp_path, name: str, data: bytes):
    root = tmp_path / "probe"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / name).write_bytes(data)
    (root / "b" / "0.png").write_bytes(encode(Image.new("RGB", (8, 8), "white"), "PNG"))
    return root


def pixels(tmp_path, name: str, data: bytes, channels: int = 1) -> np.ndarray:
    """The image as the model sees it before normalization, at its own size: uint8 (H, W, C)."""
    with ProbeDataset(probe_with(tmp_path, name, data), CLASSES) as probe:
        image = probe.images[0]
        spec = InputSpec(channels, image.height, image.width, (0.5,) * channels, (0.25,) * channels)
        return probe.pixels([0], spec)[0]


def refusal(tmp_path, name: str, data: bytes, channels: int = 3) -> str:
    with pytest.raises(BadInput) as caught:
        pixels(tmp_path, name, data, channels)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


SIXTEEN_BIT = np.array([[0, 257, 32896, 65535], [1000, 65279, 128, 40000]], dtype=np.uint16)
EIGHT_BIT = np.rint(SIXTEEN_BIT / 257).astype(np.uint8)   # [[0, 1, 128, 255], [4, 254, 0, 156]]
UNIT_FLOATS = np.array([[0.0, 0.5, 1.0, 0.25], [1 / 255, 0.999, 0.1, 0.75]], dtype=np.float32)


def frames(*colors: str) -> list[Image.Image]:
    return [Image.new("RGB", (4, 2), color) for color in colors]


ACCEPTED = {
    "16-bit-png-I;16": ("x.png", encode(Image.fromarray(SIXTEEN_BIT), "PNG"), 1, EIGHT_BIT),
    "16-bit-big-endian-tiff-I;16B": (
        "x.tif", encode(Image.frombytes("I;16B", (4, 2), SIXTEEN_BIT.astype(">u2").tobytes()), "TIFF"), 1, EIGHT_BIT),
    "16-bit-for-an-rgb-model": ("x.png", encode(Image.fromarray(SIXTEEN_BIT), "PNG"), 3,
                                np.repeat(EIGHT_BIT[:, :, None], 3, axis=2)),
    "32-bit-int-tiff-in-16-bit-range": ("x.tif", encode(Image.fromarray(SIXTEEN_BIT.astype(np.int32)), "TIFF"), 1,
                                        EIGHT_BIT),
    "float-tiff-in-0-1": ("x.tiff", encode(Image.fromarray(UNIT_FLOATS), "TIFF"), 1,
                          np.rint(UNIT_FLOATS.astype(np.float64) * 255).astype(np.uint8)),
    "palette-png-with-transparency": (
        "x.png", encode(Image.new("RGB", (4, 2), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG",
                       transparency=0), 3,
        np.full((2, 4, 3), (10, 200, 30), np.uint8)),
    "rgba-drops-alpha": ("x.png", encode(Image.new("RGBA", (4, 2), (10, 20, 30, 0)), "PNG"), 3,
                         np.full((2, 4, 3), (10, 20, 30), np.uint8)),
    "la-grey-with-alpha": ("x.png", encode(Image.new("LA", (4, 2), (77, 5)), "PNG"), 1, np.full((2, 4), 77, np.uint8)),
    "one-bit": ("x.bmp", encode(Image.new("1", (4, 2), 1), "BMP"), 1, np.full((2, 4), 255, np.uint8)),
    "cmyk-jpeg": ("x.jpg", encode(Image.new("CMYK", (4, 2), (0, 255, 0, 0)), "JPEG", quality=100), 3,
                  np.full((2, 4, 3), (255, 0, 255), np.uint8)),
    "animated-gif-first-frame": ("x.gif", encode(frames("red")[0], "GIF", save_all=True,
                                                 append_images=frames("blue", "lime")), 3,
                                 np.full((2, 4, 3), (255, 0, 0), np.uint8)),
    "multi-page-tiff-first-page": ("x.tif", encode(frames("lime")[0], "TIFF", save_all=True,
                                                   append_images=frames("red")), 3,
                                   np.full((2, 4, 3), (0, 255, 0), np.uint8)),
}


@pytest.mark.parametrize("name, data, channels, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_image_is_scaled_or_converted_correctly(tmp_path, name, data, channels, expected):
    result = pixels(tmp_path, name, data, channels)
    np.testing.assert_array_equal(result.reshape(expected.shape), expected)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_size(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 9))
            + png_chunk(b"IEND", b""))


def gif_with_screen(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b",\0\0\0\0\1\0\1\0\0\2\2D\1\0;"


def float_tiff(values) -> bytes:
    return encode(Image.fromarray(np.array(values, dtype=np.float32).reshape(1, -1)), "TIFF")


def corrupt_png_crc() -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8), "red"), "PNG"))
    data[data.find(b"IDAT") + 6] ^= 0xFF
    return bytes(data)


REFUSED = {
    "float-with-nan": ("x.tif", float_tiff([0.1, np.nan]), "floating-point image with values outside [0, 1] (or NaN)"),
    "float-with-infinity": ("x.tif", float_tiff([0.1, np.inf]), "outside [0, 1] (or NaN)"),
    "float-0-255": ("x.tif", float_tiff([0.0, 128.0, 255.0]), "scale it to [0, 1]"),
    "float-negative": ("x.tif", float_tiff([-0.5, 0.5]), "outside [0, 1]"),
    "int32-negative": ("x.tif", encode(Image.fromarray(np.array([[-5, 3]], np.int32)), "TIFF"),
                       "32-bit integer image with values outside 0..65535"),
    "int32-past-16-bits": ("x.tif", encode(Image.fromarray(np.array([[70000, 3]], np.int32)), "TIFF"),
                           "outside 0..65535"),
    "lab-tiff": ("x.tif", encode(Image.new("LAB", (4, 4)), "TIFF"), "image mode LAB, which is not supported"),
    "eps-named-png": ("x.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "is not a readable"),
    "pgm-named-png": ("x.png", b"P5 4 2 65535\n" + SIXTEEN_BIT.astype(">u2").tobytes(), "is not a readable image"),
    "ico-named-png": ("x.png", encode(Image.new("RGB", (16, 16)), "ICO"), "is not a readable image"),
    "png-header-bomb": ("x.png", png_with_size(30_000, 30_000), "too many pixels"),
    "gif-screen-bomb": ("x.gif", gif_with_screen(65_535, 65_535), "too many pixels"),
    "png-of-zero-width": ("x.png", png_with_size(0, 8), "is not a readable image"),
    "png-bad-chunk-crc": ("x.png", corrupt_png_crc(), "is not a readable image"),
    "truncated-png": ("x.png", encode(Image.new("RGB", (64, 64), "red"), "PNG")[:60], "is not a readable image"),
    "random-bytes": ("x.jpg", np.random.default_rng(0).bytes(4096), "is not a readable image"),
}


@pytest.mark.parametrize("name, data, expected", REFUSED.values(), ids=REFUSED.keys())
def test_hostile_image_is_refused(tmp_path, name, data, expected):
    assert expected in refusal(tmp_path, name, data)


def test_out_of_range_float_is_refused_when_the_set_opens(tmp_path):
    """Before any work starts, not when its batch comes."""
    with pytest.raises(BadInput, match="a/x.tif is a floating-point image"):
        ProbeDataset(probe_with(tmp_path, "x.tif", float_tiff([0.5, 2.0])), CLASSES).close()
