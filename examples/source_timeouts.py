"""Declared source timeouts: a blocking source, the builder's check before the call, and a
violation counted after it.

See docs/source-timeouts.md. Runs on virtual time in a few milliseconds:
``python examples/source_timeouts.py``.
"""

from __future__ import annotations

import asyncio

from coalestra import (
    FetchContext,
    InMemoryMetrics,
    ResourceKey,
    SnapshotBuilder,
    SourcePayload,
    inspect_source_timeout_guarantee,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

ACCOUNT = ResourceKey("account", "balance", "acct-1")


class Ledger:
    """A custom source backed by a blocking client (here: virtual-time sleeps) whose socket
    timeout is 2 s. It declares that, so the builder can hold it to it."""

    name = "ledger"
    priority = 10
    timeout_seconds = 5.0
    blocking_io = True
    blocking_io_offloaded = True  # its client runs in a worker thread
    transport_timeout_seconds = 2.0

    def __init__(self) -> None:
        self.delay = 0.1

    def supports(self, key: ResourceKey) -> bool:
        return key.namespace == "account"

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[float]:
        await asyncio.sleep(self.delay)
        return SourcePayload(100.0)


class Events:
    def emit(self, event_type: str, **payload: object) -> None:
        if event_type.startswith("source_transport"):
            print(f"  event {event_type}: {payload}")


async def main() -> None:
    ledger = Ledger()
    print("guarantee:", inspect_source_timeout_guarantee(ledger).status.value)
    metrics = InMemoryMetrics()
    builder = SnapshotBuilder([ledger], clock=VirtualClock(), metrics=metrics, events=Events())

    print("== 1.5 s left before the deadline, 2 s transport timeout: not started")
    snapshot = await builder.build([ACCOUNT], strict=False, deadline_seconds=1.5)
    print(" ", snapshot.errors[ACCOUNT].failures[0].format())

    print("== the client hangs for 3 s (past its own 2 s timeout): used, and counted")
    ledger.delay = 3.0
    late = await builder.build([ACCOUNT], deadline_seconds=10.0)
    print("  value:", late.value(ACCOUNT))

    health = await builder.health_snapshot()
    print("deadline_exceeded_count:", health.deadline_exceeded_count)
    print("violations:", dict(health.source_transport_timeout_violations))
    assert health.deadline_exceeded_count == 1
    assert health.source_transport_timeout_violation_count == 1
    outcome = {"source": "ledger", "outcome": "completed_late"}
    assert metrics.counter("source_transport_timeout_violation_total", **outcome) == 1


if __name__ == "__main__":
    with VirtualTimeRunner() as runner:
        runner.run(main())
