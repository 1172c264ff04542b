"""Every limit an upload is held to is documented in the README's security section."""

from pathlib import Path

from auditsvc.battery import limits

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_limit_is_in_the_readme():
    names = [name for name in vars(limits) if name.isupper()]
    assert len(names) > 20
    missing = [name for name in names if f"`{name}`" not in README]
    assert not missing, f"limits missing from the README's table: {missing}"
