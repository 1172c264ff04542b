"""The section registry, and the rule that keeps sections independent."""

import ast
from pathlib import Path

import auditsvc.battery.sections
from auditsvc.battery import registry


def test_sections_are_registered_in_report_order():
    names = registry.section_names()
    assert names[0] == "summary" and len(names) == len(set(names))
    assert [s.name for s in registry.sections(["saliency", "summary"])] == ["summary", "saliency"]


def test_no_section_imports_another_section():
    """Sections share data through the audit context and helpers through methods/, probes/ and figures."""
    folder = Path(auditsvc.battery.sections.__file__).parent
    for path in folder.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level != 1, f"{path.name} imports from the sections package: {ast.unparse(node)}"
                assert "sections" not in (node.module or ""), f"{path.name}: {ast.unparse(node)}"
