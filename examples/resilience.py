"""Resilience: retries, circuits per subject, stale payloads as failures, stale-on-error.

See docs/resilience.md. Runs on virtual time, so backoff and circuit recovery cost no real
time: ``python examples/resilience.py``.
"""

from __future__ import annotations

import asyncio

from coalestra import (
    CallableSource,
    CircuitBreakerPolicy,
    CircuitScope,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SourcePayload,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

BTC = ResourceKey("market", "price", "BTCUSDT")
ETH = ResourceKey("market", "price", "ETHUSDT")

STREAM_POLICY = SourceResiliencePolicy(
    retry=RetryPolicy(max_attempts=1),
    circuit=CircuitBreakerPolicy(
        scope=CircuitScope.SUBJECT, failure_threshold=2, recovery_timeout_seconds=5.0
    ),
)
REST_POLICY = SourceResiliencePolicy(
    retry=RetryPolicy(max_attempts=3, base_delay_seconds=0.1, jitter_ratio=0.0)
)


class Stream:
    """A local price stream whose BTC feed is stuck: it answers with 30 s old data."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.asked: list[str] = []
        self.stuck = True
        self.down = False

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[float]:
        self.asked.append(key.subject)
        if self.down:
            raise ConnectionError("stream disconnected")
        if key.subject == "BTCUSDT" and self.stuck:
            return SourcePayload(65000.0, observed_at=self.clock.now() - 30.0)
        return SourcePayload(3400.0 if key.subject == "ETHUSDT" else 65050.0)


class Rest:
    """A REST fallback that fails twice in a row, then answers (until it is switched off)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.down = False

    async def fetch(self, key: ResourceKey, context: FetchContext) -> float:
        self.attempts += 1
        if self.down or self.attempts in (1, 2):
            raise ConnectionError("connection reset")
        return 64990.0 if key.subject == "BTCUSDT" else 3399.0


async def tour() -> None:
    clock = VirtualClock()
    stream, rest = Stream(clock), Rest()
    builder = SnapshotBuilder(
        [
            CallableSource(
                name="stream",
                priority=100,
                supports=lambda key: True,
                fetcher=stream.fetch,
                resilience_policy=STREAM_POLICY,
            ),
            CallableSource(
                name="rest",
                priority=10,
                supports=lambda key: True,
                fetcher=rest.fetch,
                resilience_policy=REST_POLICY,
            ),
        ],
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=60.0),
    )
    async with builder:
        print("== three builds; the stream's BTC data is 30 s old (past the 1 s TTL)")
        for n in range(3):
            snapshot = await builder.build([BTC, ETH])
            btc = snapshot[BTC]
            print(
                f"   build {n}: BTC from {btc.source} after {btc.attempts} attempt(s),"
                f" ETH from {snapshot[ETH].source}; retries={snapshot.diagnostics.retries}"
            )
            await asyncio.sleep(2.0)
        print(f"   the stream was asked for {stream.asked}: BTC's circuit opened after two")
        circuits = (await builder.health_snapshot()).circuits
        for identity, circuit in circuits.items():
            print(f"   circuit {identity}: {circuit.state.value}, {circuit.failures} failures")
        assert stream.asked.count("BTCUSDT") == 2
        assert snapshot[ETH].source == "stream"

        print("== the stream recovers; after the recovery timeout one probe closes the circuit")
        stream.stuck = False
        await asyncio.sleep(5.0)
        snapshot = await builder.build([BTC])
        print(f"   BTC from {snapshot[BTC].source}")
        assert snapshot[BTC].source == "stream"
        assert not (await builder.health_snapshot()).circuits

        print("== every source fails: the cached value is served stale instead")
        stream.down, rest.down = True, True
        await asyncio.sleep(3.0)
        snapshot = await builder.build([ETH])
        eth = snapshot[ETH]
        print(f"   ETH={eth.value} stale={eth.stale} age={eth.age_seconds:.1f}s")
        print(f"   snapshot complete: {snapshot.complete}")
        assert eth.stale


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
