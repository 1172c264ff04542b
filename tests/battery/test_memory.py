"""The fixed mmap threshold: set on glibc, and harmless to set again."""

import platform

import pytest

from auditsvc.battery.memory import fix_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_threshold_is_set_on_glibc_and_again_without_harm():
    assert fix_mmap_threshold() is True
    assert fix_mmap_threshold() is True
