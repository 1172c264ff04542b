"""Progress while an audit runs: the audit's (fraction, stage) and each section's step.

The runner gives each running section a callback (`AuditContext.section_progress`) that takes the
share of the section's work done, 0..1; the long loops (per image, per batch, per optimization step)
call it, so a live audit keeps reporting however long one section takes. A loop inside a larger piece
of work reports through `share(progress, start, end)`, which maps its own 0..1 into that range.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import Section

Progress = Callable[[float, str], None]              # the audit's fraction done and its stage
SectionProgress = Callable[[float], None]            # the running section's fraction done
StepReport = Callable[[str, str, float], None]       # a section's name, status and fraction done
STEP_STATUSES = ("running", "ok", "error", "skipped")
REPORT_EVERY = 0.2   # seconds between two reports from inside a section (loops may call far more often)


def no_progress(fraction: float) -> None:
    """A section progress callback that reports nowhere: the default outside a run."""


def no_steps(name: str, status: str, fraction: float) -> None:
    """A step report that goes nowhere."""


def share(progress: SectionProgress, start: float, end: float) -> SectionProgress:
    """Part of a piece of work: its own 0..1 reported as start..end of the caller's."""
    def report(fraction: float) -> None:
        progress(start + (end - start) * min(max(float(fraction), 0.0), 1.0))
    return report


def shares(progress: SectionProgress, weights: list[float]) -> list[SectionProgress]:
    """Consecutive parts of a piece of work, each as large as its weight."""
    total = sum(weights) or 1.0
    bounds, start = [], 0.0
    for weight in weights:
        bounds.append((start, start + weight / total))
        start += weight / total
    return [share(progress, low, high) for low, high in bounds]


class SectionSteps:
    """The sections of one run as steps: each started, reporting its own progress, finished with its
    status. The audit's fraction is the share of sections finished plus the running one's share; within
    a section it never goes back (a cached computation that another section started may report from 0)."""

    def __init__(self, count: int, progress: Progress, steps: StepReport):
        self.count, self.progress, self.steps = max(count, 1), progress, steps
        self.finished_count = 0

    def started(self, section: "Section") -> SectionProgress:
        self.steps(section.name, "running", 0.0)
        self.progress(self.finished_count / self.count, section.title)
        reached = {"fraction": 0.0, "time": time.monotonic()}

        def within(fraction: float) -> None:
            now = time.monotonic()
            if now - reached["time"] < REPORT_EVERY:
                return
            reached.update(fraction=max(reached["fraction"], min(max(float(fraction), 0.0), 1.0)), time=now)
            self.steps(section.name, "running", reached["fraction"])
            self.progress((self.finished_count + reached["fraction"]) / self.count, section.title)
        return within

    def finished(self, section: "Section", status: str) -> None:
        self.finished_count += 1
        self.steps(section.name, status, 1.0)
