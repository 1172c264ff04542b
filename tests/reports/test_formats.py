"""Durations as people read them, in the portal, the admin and (the same rules) the poller's script."""

import pytest

from auditsvc.reports.formats import duration


@pytest.mark.parametrize("seconds, shown", [
    (None, "-"), (0.04, "0.0 s"), (3.21, "3.2 s"), (14.4, "14 s"), (134, "2 min 14 s"), (120, "2 min 0 s"),
    (3900, "1 h 5 min")])
def test_durations(seconds, shown):
    assert duration(seconds) == shown
