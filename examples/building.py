"""Building snapshots: build, build_request, strict, diagnostics and a consistency check.

See docs/building.md. Runs on virtual time, so the slow account source costs no real time:
``python examples/building.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from coalestra import (
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    Snapshot,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SourcePayload,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

ACCOUNT = ResourceKey("account", "balance", "main")
POSITION = ResourceKey("account", "position", "BTCUSDT")
HEALTH = ResourceKey("market", "health")


def make_builder(clock: VirtualClock) -> SnapshotBuilder:
    async def read_account(key: ResourceKey, context: FetchContext) -> dict[str, object]:
        await asyncio.sleep(0.120)  # a database round trip
        return {"USDT": 1000.0, "tenant": context.metadata.get("tenant")}

    async def read_position(key: ResourceKey, context: FetchContext) -> SourcePayload[dict]:
        # The exchange stamps its own observation time: 3 s before we read it.
        tenant = context.metadata.get("tenant")
        return SourcePayload(
            {"qty": 0.5}, observed_at=clock.now() - 3.0, metadata={"seq": 42, "tenant": tenant}
        )

    async def read_health(key: ResourceKey, context: FetchContext) -> str:
        raise ConnectionError("health endpoint down")

    def only(wanted: ResourceKey) -> Callable[[ResourceKey], bool]:
        return lambda key: key == wanted

    return SnapshotBuilder(
        [
            CallableSource(name="db", priority=10, supports=only(ACCOUNT), fetcher=read_account),
            CallableSource(
                name="exchange", priority=10, supports=only(POSITION), fetcher=read_position
            ),
            CallableSource(name="status", priority=10, supports=only(HEALTH), fetcher=read_health),
        ],
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=120.0),
    )


def show(title: str, snapshot: Snapshot) -> None:
    print(f"\n== {title} (snapshot {snapshot.snapshot_id})")
    for key, value in snapshot.items():
        print(f"   {key!s:<26} {value.value!s:<36} {value.source:<9} cached={value.from_cache}")
    for key, error in snapshot.errors.items():
        print(f"   {key!s:<26} {type(error).__name__}")
    d = snapshot.diagnostics
    calls = dict(d.source_calls_by_source)
    print(
        f"   diagnostics: {d.duration_ms:.0f} ms, {d.resolved_resources}/{d.requested_resources}"
        f" resolved, hits={d.cache_hits} misses={d.cache_misses} calls={calls}"
        f" retries={d.retries} skew={d.observation_skew_ms:.0f} ms"
    )


async def tour() -> None:
    clock = VirtualClock()
    async with make_builder(clock) as builder:
        # strict=True (the default): any failure raises, with the partial snapshot attached.
        try:
            await builder.build([ACCOUNT, HEALTH], snapshot_id="strict")
        except SnapshotBuildError as error:
            partial = error.snapshot
        show("strict build: HEALTH failed, ACCOUNT kept", partial)
        assert ACCOUNT in partial

        # strict=False: failures only listed; metadata reaches the sources that are called.
        lenient = await builder.build(
            [POSITION, HEALTH], strict=False, metadata={"tenant": "acme"}, snapshot_id="lenient"
        )
        show("strict=False", lenient)
        assert lenient.maybe_value(HEALTH) is None
        assert lenient[POSITION].metadata["tenant"] == "acme"

        # A request: only required keys may fail the build.
        request = SnapshotRequest(required=[ACCOUNT, POSITION], optional=[HEALTH])
        snapshot = await builder.build_request(request, deadline_seconds=3.0, snapshot_id="request")
        show("build_request: the optional HEALTH failed, the build did not", snapshot)
        assert snapshot.diagnostics.cache_hits == 2

        # Consistency: POSITION was observed 3 s before ACCOUNT.
        strict_skew = SnapshotRequest(
            required=[ACCOUNT, POSITION],
            consistency_policy=SnapshotConsistencyPolicy(max_observation_skew_seconds=2.0),
        )
        try:
            await builder.build_request(strict_skew)
        except SnapshotConsistencyError as error:
            violation = error
        print(f"\n== consistency: {violation}")
        assert violation.oldest_key == POSITION


def main() -> None:
    with VirtualTimeRunner() as runner:
        runner.run(tour())


if __name__ == "__main__":
    main()
