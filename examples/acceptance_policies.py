"""Acceptance policies: resolution succeeded, but is the data good enough to use?

See docs/acceptance-policies.md. Runs on virtual time: ``python examples/acceptance_policies.py``.
"""

from __future__ import annotations

from coalestra import (
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    RequestDegradationPolicy,
    ResourceAcceptanceRule,
    ResourceKey,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuilder,
    SnapshotRequest,
    SnapshotRequirement,
    SourcePayload,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

POSITION = ResourceKey("account", "position", "BTCUSDT")
VENUES = [ResourceKey("market", "price", venue) for venue in ("binance", "kraken", "coinbase")]
LAG = {"binance": 0.5, "kraken": 30.0, "coinbase": 1.0}  # seconds behind, per venue


def make_builder(clock: VirtualClock) -> SnapshotBuilder:
    async def read(key: ResourceKey, context: FetchContext) -> SourcePayload[float]:
        lag = LAG.get(key.subject, 0.0)
        return SourcePayload(100.0, observed_at=clock.now() - lag)

    source = CallableSource(name="feeds", priority=1, supports=lambda key: True, fetcher=read)
    policy = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=60.0)
    return SnapshotBuilder([source], clock=clock, default_policy=policy)


async def main() -> None:
    clock = VirtualClock()
    builder = make_builder(clock)

    # 1. Every required value must be at most 5 s old: the lagging venue rejects the snapshot.
    too_old = SnapshotAcceptancePolicy(ResourceAcceptanceRule(max_age_seconds=5.0))
    rejected: SnapshotAcceptanceError | None = None
    try:
        await builder.build_request(
            SnapshotRequest(required=[POSITION, *VENUES], acceptance_policy=too_old)
        )
    except SnapshotAcceptanceError as error:
        rejected = error
    assert rejected is not None
    (violation,) = rejected.violations
    assert violation.reason.value == "too_old"
    assert violation.key == VENUES[1]
    assert rejected.snapshot is not None  # the rejected candidate, for diagnostics
    print("rejected:", violation.message)

    # 2. Any two fresh venues are enough: the lagging one is optional and out-voted.
    two_venues = SnapshotAcceptancePolicy(
        ResourceAcceptanceRule(max_age_seconds=5.0),
        requirements=[SnapshotRequirement.at_least(2, VENUES, name="venues")],
    )
    snapshot = await builder.build_request(
        SnapshotRequest(required=[POSITION], optional=VENUES, acceptance_policy=two_venues)
    )
    print("accepted:", len(snapshot.resources), "resources")

    # 3. Without raising: a degraded result only allows reading and evaluating.
    result = await builder.try_build_request(
        SnapshotRequest(required=[POSITION, *VENUES], acceptance_policy=too_old),
        degradation_policy=RequestDegradationPolicy.risk_reduction(),
    )
    assert result.degraded
    print(result.state.value, result.reason, "->", ", ".join(result.allowed_actions))
    await builder.aclose()


if __name__ == "__main__":
    with VirtualTimeRunner() as runner:
        runner.run(main())
