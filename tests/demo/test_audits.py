import json

from auditsvc.demo.audits import audit_in_parallel


def test_the_demo_audits_run_in_spawned_worker_processes(tiny_package, tiny_probe, tmp_path):
    """A spawned worker imports the function it runs: the audits must not live in `python -m`'s __main__."""
    jobs = {"first": (tiny_package, None), "second": (tiny_package, tiny_package)}
    outcomes = audit_in_parallel(jobs, tiny_probe, tmp_path, seed=0)
    assert [o["name"] for o in outcomes] == ["first", "second"]
    for outcome in outcomes:
        findings = json.loads((tmp_path / outcome["name"] / "findings.json").read_text())
        assert outcome["verdict"] == findings["verdict"]
        assert all((tmp_path / outcome["name"] / name).stat().st_size for name in ("report.html", "report.pdf"))
    assert "reference" in json.loads((tmp_path / "second" / "findings.json").read_text())["sections"]
