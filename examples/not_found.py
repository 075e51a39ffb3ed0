"""Not found is not a failure: ``ResourceNotFound`` from sources, negative caching, and a batch
source whose omissions mean "not found".

See docs/everyday.md. Runs on virtual time: ``python examples/not_found.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from coalestra import (
    CallableBatchSource,
    CallableSource,
    CircuitBreakerPolicy,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceNotFound,
    ResourceNotFoundError,
    SnapshotBuilder,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

USERS = {"ada": {"name": "Ada"}, "alan": {"name": "Alan"}}
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)
# One failure opens the source-wide circuit: typos must not count as failures.
TOUCHY = SourceResiliencePolicy(circuit=CircuitBreakerPolicy(failure_threshold=1))


def user(name: str) -> ResourceKey:
    return ResourceKey("users", "profile", name)


async def single_source() -> None:
    calls: list[str] = []

    async def from_db(key: ResourceKey, context: FetchContext) -> dict[str, str]:
        calls.append(key.subject)
        if key.subject not in USERS:
            raise ResourceNotFound(f"no user {key.subject}")
        return USERS[key.subject]

    db = CallableSource(
        name="db", priority=10, supports=lambda key: True, fetcher=from_db, resilience_policy=TOUCHY
    )
    async with SnapshotBuilder(
        [db], default_policy=POLICY, clock=VirtualClock(), not_found_ttl_seconds=30.0
    ) as builder:
        for typo in ("adaa", "alann", "adaa"):
            snapshot = await builder.build([user("ada"), user(typo)], strict=False)
            assert snapshot.value(user("ada")) == {"name": "Ada"}  # the circuit stays closed
            assert isinstance(snapshot.errors[user(typo)], ResourceNotFoundError)
            print(snapshot.errors[user(typo)])
        assert calls == ["ada", "adaa", "alann"]  # "adaa" was remembered: asked once
        await asyncio.sleep(30.0)  # the negative entries expire
        try:
            await builder.get(user("adaa"))
        except ResourceNotFoundError as error:
            print("after 30 s, asked again:", error)
        assert calls[-1] == "adaa"


async def batch_source() -> None:
    async def from_db(keys: Collection[ResourceKey], context: FetchContext) -> dict:
        return {key: USERS[key.subject] for key in keys if key.subject in USERS}

    db = CallableBatchSource(
        name="db",
        priority=10,
        supports=lambda key: True,
        fetcher=from_db,
        resilience_policy=TOUCHY,
        omitted_means_not_found=True,  # the default (B-SRC-4) counts omissions as failures
    )
    async with SnapshotBuilder([db], default_policy=POLICY, clock=VirtualClock()) as builder:
        for _ in range(2):
            snapshot = await builder.build([user("alan"), user("bob")], strict=False)
            assert snapshot.value(user("alan")) == {"name": "Alan"}
            assert isinstance(snapshot.errors[user("bob")], ResourceNotFoundError)
        print("batch:", snapshot.errors[user("bob")])


if __name__ == "__main__":
    with VirtualTimeRunner() as runner:
        runner.run(single_source())
        runner.run(batch_source())
