"""Hostile manifest.csv files: parsed strictly, refused with the line that is wrong, or read correctly."""

from __future__ import annotations

import pytest

from auditsvc.battery import dataset as dataset_module
from auditsvc.battery.dataset import ProbeDataset
from auditsvc.battery.errors import BadInput
from tests.conftest import write_probe

CLASSES = ("a", "b")
HEADER = "path,label,site"


@pytest.fixture()
def probe(tmp_path):
    return write_probe(tmp_path / "probe", CLASSES, per_class=2, size=(12, 10), manifest=False)


def with_manifest(root, content: str | bytes):
    data = content.encode() if isinstance(content, str) else content
    (root / "manifest.csv").write_bytes(data)
    return root


def refusal(root) -> str:
    with pytest.raises(BadInput) as caught:
        ProbeDataset(root, CLASSES).close()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def rows(*lines: str) -> str:
    return "\n".join((HEADER, *lines)) + "\n"


REFUSED = {
    "field-over-the-csv-module-limit": (rows("a/000.png,a," + "x" * 200_000),
                                        "manifest.csv line 2: a field is longer than 1024 characters"),
    "field-over-1024-chars": (rows("a/000.png,a," + "x" * 2000), "line 2, column 3: the field is 2000 characters"),
    "unbalanced-quote-to-the-end": (rows('a/000.png,a,"north', "a/001.png,a,south", "b/000.png,b,x"),
                                    "line 2: a quoted field is never closed"),
    "quote-swallowing-two-lines": (rows('a/000.png,a,"north', 'a/001.png,a,south"', "b/000.png,b,x"),
                                   "line 2: a quoted field runs over several lines"),
    "quoted-newline-in-value": (rows('a/000.png,a,"two\nlines"'), "line 2: a quoted field runs over several lines"),
    "text-after-closing-quote": (rows('"a/000.png"x,a,north'), "line 2: not valid CSV"),
    "more-fields-than-header": (rows("a/000.png,a,north,extra"), "line 2 has 4 fields but the header has 3"),
    "fewer-fields-than-header": (rows("a/000.png,a,north", "a/001.png,a"), "line 3 has 2 fields but the header has 3"),
    "nul-byte": (rows("a/000.png,a,nor\0th"), "manifest.csv line 2 holds a NUL byte"),
    "latin-1": (rows("a/000.png,a,S\u00e3o Paulo").encode("latin-1"), "not UTF-8"),
    "utf-16": (rows("a/000.png,a,north").encode("utf-16"), "not UTF-8"),
    "empty-file": ("", "the file is empty"),
    "only-blank-lines": ("\n\n  \n", "the file is empty"),
    "duplicate-columns": ("path,label,site,site\n", "duplicate column names"),
    "trailing-comma-in-header": ("path,label,site,\n", "column 4 of the header has no name"),
    "51-attribute-columns": ("path,label," + ",".join(f"c{i}" for i in range(51)) + "\n",
                             "51 attribute columns; at most 50"),
    "column-name-101-chars": ("path,label," + "c" * 101 + "\n", "longer than 100 characters"),
    "tab-in-column-name": ("path,label,si\tte\n", "holds the control character U+0009"),
    "attribute-value-201-chars": (rows("a/000.png,a," + "v" * 201), "the 'site' value 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv' is 201 characters long"),
    "escape-sequence-in-value": (rows("a/000.png,a,\x1b[2Jnorth"), "holds the control character U+001B"),
    "bidi-override-in-value": (rows("a/000.png,a,\u202ehtron"), "U+202E"),
    "path-traversal": (rows("../a/000.png,a,north"), "'../a/000.png' is not an image of the dataset"),
    "absolute-path": (rows("/a/000.png,a,north"), "is not an image of the dataset"),
    "nan-box": ("path,label,x0,y0,x1,y1\na/000.png,a,nan,0,5,5\n", "is not inside the 10x12 image"),
    "infinite-box": ("path,label,x0,y0,x1,y1\na/000.png,a,0,0,inf,5\n", "is not inside"),
    "negative-box": ("path,label,x0,y0,x1,y1\na/000.png,a,-1,0,5,5\n", "is not inside"),
    "box-of-words": ("path,label,x0,y0,x1,y1\na/000.png,a,one,0,5,5\n", "box values must be numbers"),
    "label-in-another-case": (rows("a/000.png,A,north"), "label 'A' disagrees with the class folder 'a'"),
}


@pytest.mark.parametrize("content, expected", REFUSED.values(), ids=REFUSED.keys())
def test_hostile_manifest_is_refused(probe, content, expected):
    assert expected in refusal(with_manifest(probe, content))


def test_manifest_past_its_size_cap_is_not_read(probe, monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_MANIFEST_BYTES", 100)
    assert "manifest.csv is 306 bytes; manifest.csv may have at most 100 bytes" in refusal(
        with_manifest(probe, rows(*[f"a/000.png,a,{i}" for i in range(20)])))


ACCEPTED = {
    "utf-8-bom": ("\ufeff" + rows("a/000.png,a,north"), {"a/000.png": "north"}),
    "crlf-line-ends": (rows("a/000.png,a,north", "b/001.png,b,south").replace("\n", "\r\n"),
                       {"a/000.png": "north", "b/001.png": "south"}),
    "old-mac-line-ends": (rows("a/000.png,a,north").replace("\n", "\r"), {"a/000.png": "north"}),
    "blank-lines-and-empty-rows": ("\n" + rows("", "a/000.png,a,north", ",,", "  "), {"a/000.png": "north"}),
    "header-only": (HEADER + "\n", {}),
    "quoted-comma-and-quote": (rows('a/000.png,a,"north, ""upper"""'), {"a/000.png": 'north, "upper"'}),
    "dot-slash-path-and-spaces": (rows(" ./a/000.png , a , north "), {"a/000.png": "north"}),
    "no-final-newline": (rows("a/000.png,a,north").rstrip("\n"), {"a/000.png": "north"}),
    "unicode-value": (rows("a/000.png,a,S\u00e3o Paulo \U0001f327"), {"a/000.png": "S\u00e3o Paulo \U0001f327"}),
}


@pytest.mark.parametrize("content, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_manifest_is_read_correctly(probe, content, expected):
    with ProbeDataset(with_manifest(probe, content), CLASSES) as probe_set:
        assert probe_set.attribute_names == ["site"]
        assert {image.path: image.attributes["site"] for image in probe_set.images if image.attributes} == expected
