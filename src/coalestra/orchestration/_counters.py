"""Builder-wide cumulative counters, read by ``health_snapshot()``."""

from __future__ import annotations

from typing import final


@final
class EngineCounters:
    """Plain integer counters (and one per-source table), incremented inline (no lock: the
    event loop is the lock)."""

    __slots__ = (
        "deadline_exceeded",
        "queue_timeouts",
        "revalidation_attempts",
        "revalidation_failures",
        "source_timeouts",
        "transport_violations",
        "transport_violations_by_source",
    )

    def __init__(self) -> None:
        self.queue_timeouts = 0
        self.source_timeouts = 0
        self.deadline_exceeded = 0
        self.revalidation_attempts = 0
        self.revalidation_failures = 0
        # Calls of protected blocking sources that overran their transport timeout (0.6 s.4).
        self.transport_violations = 0
        self.transport_violations_by_source: dict[str, int] = {}
