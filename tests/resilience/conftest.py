"""Fixtures for the resilience tests: a hand-driven clock for pure state-machine tests."""

from __future__ import annotations

import pytest


class ManualClock:
    """A clock that moves only when told to (``advance``)."""

    def __init__(self, start: float = 100.0) -> None:
        self._now = start

    def now(self) -> float:
        return 1_700_000_000.0 + self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self._now += seconds


@pytest.fixture
def manual_clock() -> ManualClock:
    """A clock at monotonic time 100.0 that moves only through ``advance()``."""
    return ManualClock()
