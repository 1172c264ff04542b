"""Hostile model.json files: each is refused with one line naming the problem, or parsed correctly."""

from __future__ import annotations

import json
import time

import pytest

from auditsvc.battery.errors import BadInput
from auditsvc.battery.limits import MAX_CLASSES, MAX_META_BYTES
from auditsvc.battery.model.meta import ModelMeta, check_release_tag, load_meta

INPUT = {"size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
GOOD = {"name": "tiny", "version": "1.0", "classes": ["a", "b", "c"], "input": INPUT}


def meta(**changes) -> dict:
    return {**GOOD, **changes}


def spec(**changes) -> dict:
    return meta(input={**INPUT, **changes})


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = {"x": value}
    return value


def refusal(call) -> str:
    with pytest.raises(BadInput) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def write(tmp_path, raw: bytes):
    path = tmp_path / "model.json"
    path.write_bytes(raw)
    return path


# Raw bytes of model.json, read with load_meta.
RAW_CASES = {
    "larger-than-1-MiB": (json.dumps(meta(notes="x" * MAX_META_BYTES)).encode(), "larger than 1024 KiB"),
    "padded-past-1-MiB-with-spaces": (b" " * MAX_META_BYTES + json.dumps(GOOD).encode(), "larger than 1024 KiB"),
    "100k-nested-arrays": (b"[" * 100_000 + b"]" * 100_000, "nested more than 32 levels"),
    "nested-extra-key": (json.dumps(meta(notes=nested(40))).encode(), "nested more than 32 levels"),
    "unclosed-nesting": (b"{" * 50_000, "nested more than 32 levels"),
    "half-a-million-escaped-quotes": (b'"' + b'\\"' * 500_000, "not valid JSON"),
    "escaped-quotes-and-brackets-in-a-string": (b'["' + b'\\"[{' * 200_000 + b'"]', "expected a JSON object"),
    "duplicate-key": (b'{"name": "a", "name": "b", "version": "1", "classes": ["a", "b"], "input": {}}',
                      "key 'name' appears twice"),
    "duplicate-key-in-input": (json.dumps(GOOD)[:-2].encode() + b', "std": [1, 1, 1]}}', "key 'std' appears twice"),
    "nan-literal": (json.dumps(GOOD).replace("0.25, 0.25, 0.25", "NaN, 1, 1").encode(), "NaN is not a JSON number"),
    "infinity-in-extra-key": (json.dumps(GOOD)[:-1].encode() + b', "notes": -Infinity}', "-Infinity is not a JSON"),
    "5000-digit-integer": (json.dumps(GOOD)[:-1].encode() + b', "n": ' + b"9" * 5000 + b"}", "too many digits"),
    "1e999-becomes-infinite": (json.dumps(GOOD).replace("0.25, 0.25, 0.25", "1e999, 1, 1").encode(),
                               "not a JSON number"),
    "integer-past-64-bits": (json.dumps(meta(notes=10**30)).encode(), "more than 64 bits"),
    "latin-1-bytes": (json.dumps(meta(name="caf\u00e9"), ensure_ascii=False).encode("latin-1"), "not UTF-8"),
    "utf-16": (json.dumps(GOOD).encode("utf-16"), "not UTF-8"),
    "truncated": (json.dumps(GOOD).encode()[:40], "not valid JSON"),
    "empty-file": (b"", "not valid JSON"),
    "top-level-array": (b"[1, 2, 3]", "expected a JSON object"),
    "top-level-string": (b'"model"', "expected a JSON object"),
    "lone-surrogate-escape": (json.dumps(GOOD).replace('"tiny"', '"ti\\ud800ny"').encode(), "lone surrogate"),
    "nul-escape-in-extra-key": (json.dumps(meta(notes="a\u0000b")).encode(), "NUL character"),
}

# Parsed values, given to ModelMeta.from_dict (as the service does).
DICT_CASES = {
    "not-an-object": (None, "expected a JSON object"),
    "missing-input": ({k: v for k, v in GOOD.items() if k != "input"}, "missing required key 'input'"),
    "name-201-chars": (meta(name="n" * 201), "'name' is 201 characters long; at most 200"),
    "name-5-MB": (meta(name="n" * 5_000_000), "larger than 1024 KiB"),
    "version-101-chars": (meta(version="1" * 101), "'version' is 101 characters long; at most 100"),
    "name-not-a-string": (meta(name=42), "'name' must be a non-empty string"),
    "blank-version": (meta(version="  "), "'version' must be a non-empty string"),
    "newline-in-name": (meta(name="tiny\nFAKE VERDICT: PASS"), "U+000A"),
    "carriage-return-in-version": (meta(version="1.0\r2.0"), "U+000D"),
    "escape-sequence-in-name": (meta(name="\x1b[31mred"), "U+001B"),
    "bidi-override-in-class": (meta(classes=["a", "\u202etac", "c"]), "U+202E"),
    "line-separator-in-class": (meta(classes=["a", "b\u2028c"]), "U+2028"),
    "tab-in-class": (meta(classes=["a", "b\tc"]), "U+0009"),
    "nul-in-class": (meta(classes=["a", "b\x00"]), "NUL character"),
    "class-name-201-chars": (meta(classes=["a", "b" * 201]), "classes[1] is 201 characters long; at most 200"),
    "blank-class": (meta(classes=["a", " "]), "classes[1] must be a non-empty string"),
    "class-not-a-string": (meta(classes=["a", 7]), "classes[1] must be a non-empty string"),
    "classes-a-string": (meta(classes="ab"), "'classes' must be a list of at least 2"),
    "one-class": (meta(classes=["a"]), "at least 2"),
    "late-duplicate": (meta(classes=[f"c{i}" for i in range(MAX_CLASSES - 1)] + ["c5"]),
                       f"'c5' appears more than once in 'classes' (entries 5 and {MAX_CLASSES - 1})"),
    "unicode-form-duplicate": (meta(classes=["caf\u00e9", "cafe\u0301"]), "the same text in another Unicode form"),
    "10001-classes": (meta(classes=[f"c{i}" for i in range(MAX_CLASSES + 1)]), "at most 10000 are allowed"),
    "std-1e-300": (spec(std=[1e-300] * 3), "input.std must lie between 1e-06 and 1000"),
    "std-1e9": (spec(std=[1e9] * 3), "input.std must lie between"),
    "negative-std": (spec(std=[0.2, -0.2, 0.2]), "input.std values must be positive"),
    "mean-1e12": (spec(mean=[1e12, 0, 0]), "input.mean must lie between -1000 and 1000"),
    "mean-true": (spec(mean=[True, 0.5, 0.5]), "input.mean must be a list of 3 numbers"),
    "std-string": (spec(std=["0.25"] * 3), "input.std must be a list of 3 numbers"),
    "size-true": (spec(size=[True, 32, 32]), "input.size must be [C, H, W] with positive integers"),
    "size-float": (spec(size=[3, 32.0, 32]), "input.size must be [C, H, W]"),
    "size-huge": (spec(size=[3, 10**6, 32]), "between 8 and 1024 pixels"),
    "four-channels": (spec(size=[4, 32, 32], mean=[0] * 4, std=[1] * 4), "1 (grey) or 3 (RGB) channels"),
    "input-a-list": (meta(input=[3, 32, 32]), "'input' must be an object"),
    "dict-deeper-than-the-parser-allows": (meta(notes=nested(100_000)), "nested more than 32 levels"),
    "non-string-key": (meta(notes={1: "x"}), "object keys must be strings"),
    "set-value": (meta(notes={"a", "b"}), "type set is not JSON"),
    "python-infinity": (spec(mean=[float("inf"), 0, 0]), "inf is not a JSON number"),
    "integer-past-64-bits": (spec(mean=[2**70, 0, 0]), "more than 64 bits"),
}


@pytest.mark.parametrize("raw, expected", RAW_CASES.values(), ids=RAW_CASES.keys())
def test_hostile_model_json_file_is_refused(tmp_path, raw, expected):
    assert expected in refusal(lambda: load_meta(write(tmp_path, raw)))


@pytest.mark.parametrize("data, expected", DICT_CASES.values(), ids=DICT_CASES.keys())
def test_hostile_model_json_value_is_refused(data, expected):
    assert expected in refusal(lambda: ModelMeta.from_dict(data))


def test_model_json_that_is_a_folder_missing_or_unnameable(tmp_path):
    (tmp_path / "model.json").mkdir()
    assert "is not a regular file" in refusal(lambda: load_meta(tmp_path / "model.json"))
    assert "not found" in refusal(lambda: load_meta(tmp_path / "other.json"))
    assert "cannot be read (File name too long)" in refusal(lambda: load_meta(tmp_path / ("x" * 5000)))


def test_a_200000_class_list_with_a_late_duplicate_is_refused_at_once(tmp_path):
    classes = [f"class-{i}" for i in range(200_000)] + ["class-7"]
    start = time.perf_counter()
    assert "at most 10000" in refusal(lambda: ModelMeta.from_dict(meta(classes=classes)))
    path = write(tmp_path, json.dumps(meta(classes=classes)).encode())
    assert "larger than 1024 KiB" in refusal(lambda: load_meta(path))
    assert time.perf_counter() - start < 2


def test_release_tag_is_held_to_its_column():
    assert check_release_tag("") == "" and check_release_tag("v1.4.0-rc2") == "v1.4.0-rc2"
    assert "at most 200" in refusal(lambda: check_release_tag("v" * 201))
    assert "U+000A" in refusal(lambda: check_release_tag("v1\nv2"))


def test_accepted_variants_parse_correctly(tmp_path):
    """A BOM, unknown keys (ignored), 10,000 classes, long-but-allowed names and the extreme std."""
    data = meta(license="MIT", input={**INPUT, "std": [1e-6, 1e3, 0.5], "layout": "NCHW"},
                classes=[f"c{i}" for i in range(MAX_CLASSES)], name="n" * 200, version="v" * 100)
    parsed = load_meta(write(tmp_path, b"\xef\xbb\xbf" + json.dumps(data).encode()))
    assert parsed.name == "n" * 200 and len(parsed.classes) == MAX_CLASSES
    assert parsed.input.std == (1e-6, 1e3, 0.5) and parsed.input.size == (3, 32, 32)
    assert ModelMeta.from_dict(meta(classes=["café", "ca fé", "猫", "🐈"])).classes[3] == "🐈"
