"""Errors: what a failed key holds, and the versioned JSON-safe ``to_dict()`` diagnostics.

See docs/errors.md. Runs on virtual time: ``python examples/errors.py``.
"""

from __future__ import annotations

import asyncio
import json

from coalestra import (
    ERROR_DIAGNOSTICS_SCHEMA_VERSION,
    CallableDerivedSource,
    CallableSource,
    CoalestraError,
    DependencyCycleError,
    FetchContext,
    ResourceKey,
    ResourceResolutionError,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotBuildError,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

ACCOUNT = ResourceKey("account", "balance", "main")
POSITION = ResourceKey("account", "position", "BTCUSDT", {"venue": "spot"})
SLOW = ResourceKey("market", "depth", "BTCUSDT")
LOOP_A = ResourceKey("derived", "a")
LOOP_B = ResourceKey("derived", "b")
UNKNOWN = ResourceKey("nobody", "serves-this")


async def reset_by_peer(key: ResourceKey, context: FetchContext) -> float:
    raise ConnectionError("connection reset by peer")


async def slow(key: ResourceKey, context: FetchContext) -> float:
    await asyncio.sleep(10.0)
    return 1.0


def make_builder() -> SnapshotBuilder:
    once = SourceResiliencePolicy(retry=RetryPolicy(max_attempts=1))
    return SnapshotBuilder(
        [
            CallableSource(
                name="db",
                priority=10,
                supports=lambda k: k == ACCOUNT,
                fetcher=lambda key, context: {"USDT": 1000.0},
                run_sync_in_thread=False,
            ),
            CallableSource(
                name="exchange-rest",
                priority=20,
                supports=lambda k: k == POSITION,
                fetcher=reset_by_peer,
            ),
            CallableSource(
                name="replica",
                priority=10,
                supports=lambda k: k == POSITION,
                fetcher=reset_by_peer,
                resilience_policy=once,
            ),
            CallableSource(name="depth", priority=10, supports=lambda k: k == SLOW, fetcher=slow),
            CallableDerivedSource(
                name="loop",
                priority=10,
                supports=lambda k: k.namespace == "derived",
                dependencies=lambda key: [LOOP_B if key == LOOP_A else LOOP_A],
                deriver=lambda key, deps, context: 0,
                run_sync_in_thread=False,
            ),
        ],
        clock=VirtualClock(),
    )


async def tour() -> None:
    async with make_builder() as builder:
        keys = [ACCOUNT, POSITION, SLOW, LOOP_A, UNKNOWN]
        try:
            await builder.build(keys, deadline_seconds=2.0, snapshot_id="cycle-42")
        except SnapshotBuildError as error:
            failure = error
    partial = failure.snapshot
    print(f"== {failure}")
    print(f"   kept: { {str(key): value.value for key, value in partial.items()} }")
    for key, error in failure.errors.items():
        print(f"   {key}: {type(error).__name__}: {error}")

    assert isinstance(failure.errors[POSITION], ResourceResolutionError)
    # A key's error is always a ResourceResolutionError; the deadline shows as its failure.
    slow = failure.errors[SLOW]
    assert isinstance(slow, ResourceResolutionError)
    assert slow.failures[0].error_type == "SnapshotDeadlineExceededError"
    # LOOP_B closed the loop (its failure is the DependencyCycleError); LOOP_A failed on it
    loop = failure.errors[LOOP_A]
    assert isinstance(loop, ResourceResolutionError)
    assert loop.failures[0].error_type == "DependencyResolutionError"
    assert DependencyCycleError.__name__ in loop.failures[0].message
    assert failure.errors[UNKNOWN].failures == ()  # no source supports it
    assert all(isinstance(error, CoalestraError) for error in failure.errors.values())

    position = failure.errors[POSITION]
    print("== the position's failures, source by source")
    for item in position.failures:
        print(f"   {item.format()}")

    diagnostic = failure.to_dict(max_message_length=120)
    assert diagnostic["schema_version"] == ERROR_DIAGNOSTICS_SCHEMA_VERSION
    text = json.dumps(diagnostic, indent=2)
    print(f"== error.to_dict() as JSON ({len(text)} characters); the position's entry:")
    print(json.dumps(position.to_dict(), indent=2))


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
