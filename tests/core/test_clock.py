"""SystemClock reads real time; VirtualClock is covered in test_virtual_time.py."""

from __future__ import annotations

import itertools
import time

from coalestra.core import Clock, SystemClock
from coalestra.testing import VirtualClock


def test_system_clock_now_is_epoch_seconds() -> None:
    # Order of magnitude only: no exact timing assertions.
    now = SystemClock().now()
    assert isinstance(now, float)
    assert abs(now - time.time()) < 3600
    assert now > 1_600_000_000  # after September 2020


def test_system_clock_monotonic_never_goes_backwards() -> None:
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(1000)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(readings))
    assert isinstance(readings[0], float)


def test_clocks_implement_the_protocol() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(VirtualClock(), Clock)
    assert not isinstance(object(), Clock)
    assert repr(SystemClock()) == "SystemClock()"
