"""Every observability test must end every buffered-sink worker thread it started."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

WORKER_PREFIX = "coalestra-Buffered"


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(WORKER_PREFIX)}


@pytest.fixture(autouse=True)
def no_leaked_workers() -> Iterator[None]:
    """Fail a test that leaves a worker thread behind (close() must end it)."""
    before = _workers()
    yield
    leaked = _workers() - before
    for thread in leaked:
        thread.join(10.0)  # a sink dropped without close() drains, then its worker ends
    assert not [t for t in leaked if t.is_alive()], "a buffered sink's worker thread leaked"
