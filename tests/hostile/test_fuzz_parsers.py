"""Fuzzing the parsers of model.json, manifest.csv and zip probe sets.

Whatever the input, each ends in a result or a BadInput with one line, never another exception.
Derandomized and bounded, so CI sees the same few hundred inputs every run, in seconds.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from auditsvc.battery.dataset import ProbeDataset, _parse_manifest
from auditsvc.battery.errors import BadInput
from auditsvc.battery.model.meta import InputSpec, ModelMeta, load_meta, parse_meta_json

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ends_cleanly(call):
    """The call's result, or None if it refused with a one-line BadInput; any other exception fails the test."""
    try:
        return call()
    except BadInput as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return None


# --- model.json ------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=30)   # surrogates and controls included
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**80, max_value=2**80)
           | st.floats() | any_text)
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                         | st.dictionaries(any_text, inner, max_size=5), max_leaves=30)
not_json = st.sets(st.integers(), max_size=3) | st.tuples(st.integers()) | st.binary(max_size=8) | st.just(object())
numbers = st.integers(min_value=-10, max_value=2000) | st.floats() | st.booleans()
spec_like = st.fixed_dictionaries({
    "size": st.lists(numbers, max_size=4) | st.just([3, 32, 32]) | json_like,
    "mean": st.lists(numbers, max_size=4) | json_like,
    "std": st.lists(numbers, max_size=4) | st.lists(st.floats(min_value=0, max_value=1e-4), min_size=3, max_size=3),
}, optional={"extra": json_like | not_json})
meta_like = st.fixed_dictionaries({
    "name": any_text | json_like,
    "version": any_text | json_like,
    "classes": st.lists(any_text, max_size=12) | st.lists(st.sampled_from(["a", "b", "a\u0301", "\u00e1"]), max_size=6)
    | json_like,
    "input": spec_like | json_like,
}, optional={"notes": json_like | not_json})


GOOD = {"name": "m", "version": "1", "classes": ["a", "b"],
        "input": {"size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}}
one_key_changed = st.builds(lambda key, value: {**GOOD, key: value},
                            st.sampled_from(["name", "version", "classes", "notes"]), json_like | not_json)
one_input_key_changed = st.builds(lambda key, value: {**GOOD, "input": {**GOOD["input"], key: value}},
                                  st.sampled_from(["size", "mean", "std", "layout"]),
                                  st.lists(numbers, min_size=3, max_size=3) | json_like)

plausible_meta = st.builds(lambda classes, side, std: {**GOOD, "classes": classes,
                                                       "input": {**GOOD["input"], "size": [1, side, side],
                                                                 "mean": [0.5], "std": [std]}},
                           st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=8),
                           st.integers(0, 1100), st.floats(0, 1.1e3) | st.floats(1e-3, 1))


@FUZZ
@given(data=st.one_of(json_like, meta_like, one_key_changed, one_input_key_changed, not_json, *[plausible_meta] * 4))
def test_from_dict_ends_in_a_result_or_a_refusal(data):
    meta = ends_cleanly(lambda: ModelMeta.from_dict(data))
    if meta is not None:
        assert 2 <= len(meta.classes) == len(set(meta.classes)) and meta.input.channels in (1, 3)
        assert all(1e-6 <= s <= 1e3 for s in meta.input.std)


GOOD_META = json.dumps(GOOD).encode()


def mutated(raw: bytes, cut: int, insert: bytes) -> bytes:
    at = cut % (len(raw) + 1)
    return raw[:at] + insert + raw[at:]


raw_meta = (st.binary(max_size=200)
            | st.builds(mutated, st.just(GOOD_META), st.integers(0, 10**4), st.binary(max_size=12))
            | st.builds(mutated, st.just(GOOD_META), st.integers(0, 10**4),
                        st.sampled_from([b"[", b"{", b"]", b"}", b'"', b"\\", b",", b"NaN", b"1e999", b"\\u0000",
                                         b"\\ud800", b"\xef\xbb\xbf", b"\xff", b"-", b"9" * 5000, b"[" * 40]))
            | (meta_like | one_key_changed | one_input_key_changed).map(
                lambda value: json.dumps(value, default=repr).encode(errors="surrogatepass")))


@FUZZ
@given(raw=raw_meta)
def test_model_json_bytes_end_in_a_result_or_a_refusal(tmp_path_factory, raw):
    ends_cleanly(lambda: parse_meta_json(raw))
    path = tmp_path_factory.mktemp("meta") / "model.json"
    path.write_bytes(raw)
    ends_cleanly(lambda: load_meta(path))


# --- manifest.csv ----------------------------------------------------------------------------

IMAGES = {"a/000.png", "a/001.png", "b/000.png"}
SIZES = {name: (12, 10) for name in IMAGES}
csv_tokens = st.sampled_from(["path", "label", "site", "x0", "y0", "x1", "y1", ",", ",", '"', '""', "\n", "\r\n",
                              "\r", " ", "a/000.png", "a/001.png", "b/000.png", "a", "b", "1", "5", "nan", "-1",
                              "../a/000.png", "\x00", "\ufeff", "\t", "\x1b", "é"])
header = st.sampled_from(["path,label\n", "path,label,site\n", "path,label,site,x0,y0,x1,y1\n"])
good_row = st.sampled_from(["a/000.png,a,north\n", "a/001.png,a,\n", "b/000.png,b,south\n", "a/000.png,a,x,1,1,5,5\n",
                            'b/000.png,b,"quoted, value",,,,\n', "a/000.png,a\n"])
manifest_text = (st.text(max_size=200)
                 | st.lists(csv_tokens | st.text(max_size=4), max_size=60).map("".join)
                 | st.builds(lambda head, rows: head + "".join(rows), header,
                             st.lists(st.one_of(csv_tokens, *[good_row] * 4), max_size=8)))


@FUZZ
@given(text=manifest_text, encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
def test_manifest_text_ends_in_a_result_or_a_refusal(text, encoding):
    raw = text.encode(encoding, errors="replace")
    manifest = ends_cleanly(lambda: _parse_manifest(raw, IMAGES, SIZES))
    if manifest is not None:
        assert set(manifest.rows) <= IMAGES
        for row in manifest.rows.values():
            assert all("\n" not in value and "\x00" not in value for value in row.attributes.values())


# --- zip probe sets --------------------------------------------------------------------------

def png(color: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (9, 8), (color, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


PNGS = [png(0), png(120), png(255)]
SPEC = InputSpec(3, 8, 8, (0.5,) * 3, (0.25,) * 3)
def one_byte_changed(data: bytes, at: int, value: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([value]) + data[at + 1:]


GOOD_SET = [("a/0.png", PNGS[0]), ("a/1.png", PNGS[1]), ("b/0.png", PNGS[2])]
member_names = (st.sampled_from(["a/0.png", "a/1.png", "b/0.png", "b/1.jpg", "manifest.csv", "__MACOSX/a/._0.png",
                                 "a/", "p/a/0.png", "a/b/c.png", "../x.png", ".DS_Store", "b/0.PNG", "", "."])
                | st.builds(lambda folder, name: f"{folder}/{name}", st.sampled_from(["a", "b", "c"]),
                            st.text(max_size=12)))
member_bytes = (st.sampled_from(PNGS) | st.binary(max_size=64)
                | st.sampled_from([b"path,label\na/0.png,a\n", b'path,label\n"a/0.png,a\n'])
                | st.builds(one_byte_changed, st.sampled_from(PNGS), st.integers(0, 10**4), st.integers(0, 255)))


def write_zip(path, members, method):
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", method) as archive:
        warnings.simplefilter("ignore")   # "Duplicate name" when a list repeats a member
        for name, data in members:
            try:
                archive.writestr(name, data)
            except (ValueError, UnicodeEncodeError, IndexError):   # names the zip module itself will not write
                pass


@FUZZ
@given(members=st.builds(lambda base, extra: base + extra,
                         st.sampled_from([[], GOOD_SET, GOOD_SET, GOOD_SET]),
                         st.lists(st.tuples(member_names, member_bytes), max_size=4)),
       method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       damage=st.none() | st.none() | st.tuples(st.integers(0, 10**5), st.integers(0, 255)))
def test_zip_probe_set_ends_in_a_result_or_a_refusal(tmp_path_factory, members, method, damage):
    path = tmp_path_factory.mktemp("zip") / "probe.zip"
    write_zip(path, members, method)
    if damage is not None:   # one byte of the archive changed: headers, names, data or CRCs
        raw = bytearray(path.read_bytes())
        raw[damage[0] % len(raw)] = damage[1]
        path.write_bytes(bytes(raw))

    def open_and_read():
        with ProbeDataset(path, ("a", "b")) as probe:
            batch = probe.pixels(range(len(probe)), SPEC)
            assert batch.shape == (len(probe), 8, 8, 3) and batch.dtype == np.uint8
            assert len(probe.sha256) == 64
            return probe
    ends_cleanly(open_and_read)

