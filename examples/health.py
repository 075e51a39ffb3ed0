"""Health you can serialize and assess: ``BuilderHealth.to_dict()`` and ``assess()``.

See docs/health.md. Runs on virtual time: ``python examples/health.py``.
"""

from __future__ import annotations

import asyncio
import json

from coalestra import (
    BuilderHealthAssessmentPolicy,
    BuilderHealthReason,
    BuilderHealthSeverity,
    CallableSource,
    FetchContext,
    ResourceKey,
    SnapshotBuilder,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

PRICE = ResourceKey("market", "price", "BTCUSDT")


async def slow_quote(key: ResourceKey, context: FetchContext) -> float:
    await asyncio.sleep(2.0)  # the exchange is slow today
    return 100.0


async def main() -> None:
    source = CallableSource(
        name="exchange",
        priority=1,
        supports=lambda key: True,
        fetcher=slow_quote,
        timeout_seconds=1.0,
    )
    async with SnapshotBuilder([source], clock=VirtualClock()) as builder:
        baseline = await builder.health_snapshot()
        assert baseline.assess().severity is BuilderHealthSeverity.HEALTHY

        for _ in range(3):
            await builder.build([PRICE], strict=False)  # each call times out
        current = await builder.health_snapshot()

    # Three failures opened the source's circuit, and compared with the baseline there are
    # three more source timeouts: both degraded (a counter delta is critical from 5).
    assessment = current.assess(previous=baseline)
    assert assessment.severity is BuilderHealthSeverity.DEGRADED
    assert assessment.reasons == (
        BuilderHealthReason.CIRCUIT_OPEN,
        BuilderHealthReason.SOURCE_TIMEOUTS_INCREASED,
    )
    circuit, timeouts = assessment.findings
    assert (circuit.metric, circuit.observed) == ("open_circuits", 1)
    assert (timeouts.metric, timeouts.observed, timeouts.threshold) == (
        "delta_source_timeout_count",
        3,
        1,
    )

    # A stricter policy: two new timeouts are already critical.
    strict = BuilderHealthAssessmentPolicy(counter_delta_degraded=1, counter_delta_critical=2)
    assert current.assess(previous=baseline, policy=strict).severity.value == "critical"

    # The wire form: JSON-safe, schema-tagged, with the assessment embedded.
    wire = current.to_dict(previous=baseline)
    assert wire["schema"] == "coalestra.builder-health"
    assert wire["source_timeout_count"] == 3
    assert wire["assessment"]["reasons"] == ["circuit_open", "source_timeouts_increased"]
    print(json.dumps(wire["assessment"], indent=2, allow_nan=False))


if __name__ == "__main__":
    VirtualTimeRunner().run(main())
