"""One registry of battery sections. A section is a small class with a `run(context)`.

Adding a method to the battery: write a module in `sections/`, subclass `Section` and decorate
it with `@register`; the README's "Add a method" says the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .context import AuditContext
    from .results import SectionResult

_SECTIONS: dict[str, type["Section"]] = {}


class Section:
    name: ClassVar[str]      # key in findings.json "sections"
    title: ClassVar[str]     # heading in the report
    order: ClassVar[int]     # position in the report and the run
    intro: ClassVar[str] = ""  # what the method does, for the reader
    appendix: ClassVar[bool] = False   # detail a reviewer reads after the findings: the report's appendix

    def run(self, context: "AuditContext") -> "SectionResult":
        raise NotImplementedError

    def result(self, **fields) -> "SectionResult":
        from .results import SectionResult

        return SectionResult(name=self.name, title=self.title, intro=self.intro, appendix=self.appendix, **fields)


def register(cls: type[Section]) -> type[Section]:
    if cls.name in _SECTIONS:
        raise ValueError(f"section {cls.name!r} registered twice")
    _SECTIONS[cls.name] = cls
    return cls


def sections(names: list[str] | None = None) -> list[Section]:
    from . import sections as _load_all  # noqa: F401  (registers every section module)

    chosen = sorted(_SECTIONS.values(), key=lambda cls: cls.order)
    if names is not None:
        unknown = set(names) - _SECTIONS.keys()
        if unknown:
            raise ValueError(f"unknown sections: {', '.join(sorted(unknown))}; known: {', '.join(_SECTIONS)}")
        chosen = [cls for cls in chosen if cls.name in names]
    return [cls() for cls in chosen]


def section_names() -> list[str]:
    return [section.name for section in sections()]
