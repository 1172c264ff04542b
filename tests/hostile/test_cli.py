"""Hostile arguments and files through `manage.py audit`: exit 2 with one line, nothing written
outside --out (nor in it), and a crafted model's payload never runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.hostile.test_model_files import pickled_sample_inputs, pickled_weight


def files_under(*roots: Path) -> set[str]:
    return {str(p) for root in roots if root.exists() for p in root.rglob("*")}


def job_folders() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("auditsvc-job-")}


def refused(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        call_command("audit", *map(str, args))
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    return error


@pytest.mark.parametrize("craft", [pickled_weight, pickled_sample_inputs])
def test_a_crafted_archive_is_refused_and_its_payload_never_runs(craft, capsys, tmp_path, tiny_package, tiny_probe):
    marker = tmp_path / "pwned"
    model = craft(tiny_package, tmp_path / "model.pt2", marker)
    out = tmp_path / "out"
    before, jobs = files_under(tmp_path, tiny_probe), job_folders()
    error = refused(capsys, "--model", model, "--dataset", tiny_probe, "--out", out, "--device", "cpu")
    assert "pickle" in error and not marker.exists()
    assert files_under(tmp_path, tiny_probe) - before <= {str(out)}   # at most an empty --out
    assert not out.exists() or not any(out.iterdir())
    assert job_folders() == jobs


@pytest.mark.parametrize("seed, message", [
    ("1000000000000000000000000000000", "--seed must be a whole number"),
    ("-1", "--seed must be a whole number"),
    ("٣", "--seed must be a whole number"),
    ("4294967296", "--seed must be a whole number"),
    ("0x10", "--seed must be a whole number"),
])
def test_seeds_outside_the_range_are_refused(seed, message, capsys, tmp_path, tiny_package, tiny_probe):
    error = refused(capsys, "--model", tiny_package, "--dataset", tiny_probe, "--out", tmp_path / "out", "--seed", seed)
    assert message in error and not (tmp_path / "out").exists()


def test_out_that_is_a_file(capsys, tmp_path, tiny_package, tiny_probe):
    out = tmp_path / "report.pdf"
    out.write_text("mine")
    assert "is a file" in refused(capsys, "--model", tiny_package, "--dataset", tiny_probe, "--out", out)
    assert out.read_text() == "mine"


def test_out_below_a_file(capsys, tmp_path, tiny_package, tiny_probe):
    (tmp_path / "file").write_text("x")
    error = refused(capsys, "--model", tiny_package, "--dataset", tiny_probe, "--out", tmp_path / "file" / "out")
    assert "cannot be created" in error


def test_out_where_nothing_can_be_created(capsys, tiny_package, tiny_probe):
    assert "cannot be created" in refused(capsys, "--model", tiny_package, "--dataset", tiny_probe,
                                          "--out", "/proc/auditsvc-report")


@pytest.mark.parametrize("args, message", [
    (["--reference-meta", "ref.json"], "--reference-meta needs --reference"),
    (["--meta", "/nonexistent/model.json"], "not found"),
    (["--reference", "/nonexistent/ref.pt2"], "not found"),
])
def test_inconsistent_arguments(args, message, capsys, tmp_path, tiny_package, tiny_probe):
    error = refused(capsys, "--model", tiny_package, "--dataset", tiny_probe, "--out", tmp_path / "out", *args)
    assert message in error


def test_a_dataset_that_does_not_exist(capsys, tmp_path, tiny_package):
    error = refused(capsys, "--model", tiny_package, "--dataset", tmp_path / "none", "--out", tmp_path / "out")
    assert "not found" in error


def test_a_model_json_that_is_a_folder(capsys, tmp_path, tiny_package, tiny_probe):
    error = refused(capsys, "--model", tiny_package, "--dataset", tiny_probe, "--out", tmp_path / "out",
                    "--meta", tmp_path)
    assert "not a regular file" in error
