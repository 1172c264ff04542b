"""Temporary folders name their machine and process: a killed process's folders are removed by the next
process that makes one, never those of a process still running or of another machine."""

import os
import subprocess
import sys

from auditsvc.sandbox import folders


def test_the_folders_of_processes_that_no_longer_run_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "_swept", folders.threading.Event())   # as in a process that made none yet
    monkeypatch.setenv("AUDITSVC_SCRATCH", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = int(gone.stdout)
    left = [tmp_path / f"auditsvc-job-{folders._HOST}-{dead}-abc", tmp_path / f"auditsvc-scratch-{folders._HOST}-{dead}-x"]
    kept = [tmp_path / f"auditsvc-job-{folders._HOST}-{os.getpid()}-abc",   # this process: running
            tmp_path / f"auditsvc-job-elsewhere-{dead}-abc",   # another machine's: its pids are not ours
            tmp_path / "auditsvc-pg-abc"]   # not a folder of this kind
    for folder in left + kept:
        (folder / "in").mkdir(parents=True)
        (folder / "in" / "model.pt2").write_bytes(b"weights")
    made = folders.temporary_folder("job", str(tmp_path))
    assert made.name.startswith(f"auditsvc-job-{folders._HOST}-{os.getpid()}-") and made.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [*kept, made])
    (left[0] / "in").mkdir(parents=True)
    folders.temporary_folder("job", str(tmp_path))
    assert left[0].exists()   # only the first folder a process makes looks for left-behind ones
