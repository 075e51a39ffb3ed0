"""Testing your own code on virtual time with ``coalestra.testing``.

The "application" below builds prices with a TTL and a circuit breaker; the "tests" check
minutes of its behaviour (TTL expiry, stale-on-error, circuit opening and recovery, a deadline)
in a few milliseconds of real time. See docs/testing.md. Run it with
``python examples/testing_on_virtual_time.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from coalestra import (
    CallableSource,
    CircuitBreakerPolicy,
    Clock,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

BTC = ResourceKey("market", "price", "BTCUSDT")
Fetcher = Callable[[ResourceKey, FetchContext], Awaitable[float]]


# -- the application code under test -----------------------------------------------------------


def make_price_builder(fetch_price: Fetcher, *, clock: Clock | None = None) -> SnapshotBuilder:
    rest = CallableSource(
        name="rest",
        priority=10,
        supports=lambda key: key.name == "price",
        fetcher=fetch_price,
        timeout_seconds=2.0,
        resilience_policy=SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=1),
            circuit=CircuitBreakerPolicy(failure_threshold=2, recovery_timeout_seconds=10.0),
        ),
    )
    policy = FreshnessPolicy(ttl_seconds=30.0, max_stale_seconds=60.0)
    return SnapshotBuilder([rest], clock=clock, default_policy=policy)


# -- an in-memory fake of the price service ----------------------------------------------------


class FakeExchange:
    def __init__(self) -> None:
        self.calls = 0
        self.down = False
        self.latency = 0.2

    async def fetch(self, key: ResourceKey, context: FetchContext) -> float:
        self.calls += 1
        await asyncio.sleep(self.latency)  # virtual, like every other wait
        if self.down:
            raise ConnectionError("exchange unreachable")
        return 65000.0 + self.calls


# -- the tests ---------------------------------------------------------------------------------


async def test_a_price_is_cached_for_its_ttl() -> None:
    exchange = FakeExchange()
    async with make_price_builder(exchange.fetch, clock=VirtualClock()) as builder:
        first = await builder.build([BTC])
        await asyncio.sleep(29.0)
        cached = await builder.build([BTC])
        await asyncio.sleep(2.0)
        refetched = await builder.build([BTC])
    assert cached[BTC].from_cache
    assert cached.value(BTC) == first.value(BTC)
    assert refetched.value(BTC) == 65002.0


async def test_an_outage_serves_stale_then_opens_the_circuit() -> None:
    exchange = FakeExchange()
    async with make_price_builder(exchange.fetch, clock=VirtualClock()) as builder:
        await builder.build([BTC])
        exchange.down = True
        await asyncio.sleep(45.0)
        stale = await builder.build([BTC])  # 45 s old: past the TTL, within the stale window
        assert stale[BTC].stale
        await builder.build([BTC])  # the second failure opens the circuit
        calls = exchange.calls
        await builder.build([BTC])
        assert exchange.calls == calls  # answered by the open circuit

        exchange.down = False
        await asyncio.sleep(10.0)  # recovery timeout: the next call is a probe
        recovered = await builder.build([BTC])
        assert not recovered[BTC].stale
        assert exchange.calls == calls + 1


async def test_a_slow_exchange_does_not_break_the_deadline() -> None:
    exchange = FakeExchange()
    exchange.latency = 5.0  # slower than the source timeout and the deadline
    clock = VirtualClock()
    async with make_price_builder(exchange.fetch, clock=clock) as builder:
        started = clock.monotonic()
        snapshot = await builder.build([BTC], strict=False, deadline_seconds=1.5)
        assert clock.monotonic() - started == 1.5
        (failure,) = snapshot.errors[BTC].failures  # a ResourceResolutionError, as always
        assert failure.error_type == "SnapshotDeadlineExceededError"


def main() -> None:
    tests = [
        test_a_price_is_cached_for_its_ttl,
        test_an_outage_serves_stale_then_opens_the_circuit,
        test_a_slow_exchange_does_not_break_the_deadline,
    ]
    for test in tests:
        started = time.perf_counter()
        with VirtualTimeRunner() as runner:
            virtual_start = runner.get_loop().time()
            runner.run(test())
            virtual = runner.get_loop().time() - virtual_start
        real_ms = (time.perf_counter() - started) * 1000.0
        print(f"PASSED {test.__name__}: {virtual:.1f} virtual seconds in {real_ms:.1f} ms")


if __name__ == "__main__":
    main()
