"""Not found is not a failure: ``ResourceNotFound`` from a source, ``ResourceNotFoundError`` for
the key, negative caching, and batch sources that omit keys (issue 16, item 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest

from coalestra import (
    CallableBatchSource,
    CallableSource,
    CircuitBreakerPolicy,
    FetchContext,
    FreshnessPolicy,
    InMemoryMetrics,
    ResourceKey,
    ResourceNotFound,
    ResourceNotFoundError,
    ResourceResolutionError,
    RetryPolicy,
    SnapshotBuilder,
    SourceResiliencePolicy,
    SourceUnavailableError,
)
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
KNOWN = ResourceKey("users", "profile", "ada")
TYPO = ResourceKey("users", "profile", "adaa")
STRICT_CIRCUIT = SourceResiliencePolicy(
    retry=RetryPolicy(max_attempts=3, base_delay_seconds=0.01),
    circuit=CircuitBreakerPolicy(failure_threshold=1, recovery_timeout_seconds=10.0),
)


class Users:
    """A single source: knows ``known``; raises ResourceNotFound (or ``error``) otherwise."""

    def __init__(self, known: Collection[str] = ("ada",), error: Exception | None = None):
        self.known = set(known)
        self.error = error
        self.calls: list[ResourceKey] = []

    async def __call__(self, key: ResourceKey, _ctx: FetchContext) -> dict[str, str]:
        self.calls.append(key)
        if key.subject in self.known:
            return {"name": key.subject}
        if self.error is not None:
            raise self.error
        raise ResourceNotFound(f"no user {key.subject}")


def source(name: str, fetcher: Any, priority: int = 10) -> CallableSource:
    return CallableSource(
        name=name,
        priority=priority,
        supports=lambda _k: True,
        fetcher=fetcher,
        resilience_policy=STRICT_CIRCUIT,
    )


def builder_of(*sources: Any, clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    options.setdefault("default_policy", POLICY)
    return SnapshotBuilder(list(sources), clock=clock, **options)


async def test_not_found_is_never_retried_and_never_opens_the_circuit(clock: VirtualClock) -> None:
    users = Users()
    builder = builder_of(source("db", users), clock=clock)
    for _ in range(3):  # threshold 1: one failure would open the source-wide circuit
        snapshot = await builder.build([TYPO], strict=False)
        error = snapshot.errors[TYPO]
        assert type(error) is ResourceNotFoundError
        assert error.failures[0].error_type == "ResourceNotFound"
        assert error.failures[0].attempts == 1
    assert users.calls == [TYPO] * 3  # one call per build: no retry
    assert await builder.get(KNOWN) == {"name": "ada"}  # the circuit stayed closed
    await builder.aclose()


async def test_a_real_failure_still_opens_the_circuit(clock: VirtualClock) -> None:
    users = Users(error=ConnectionError("db down"))
    builder = builder_of(source("db", users), clock=clock)
    with pytest.raises(ResourceResolutionError) as caught:
        await builder.get(TYPO)
    assert not isinstance(caught.value, ResourceNotFoundError)
    with pytest.raises(ResourceResolutionError, match="CircuitOpenError"):
        await builder.get(KNOWN)
    await builder.aclose()


async def test_a_not_found_key_in_a_snapshot(clock: VirtualClock) -> None:
    builder = builder_of(source("db", Users()), clock=clock)
    snapshot = await builder.build([KNOWN, TYPO], strict=False)
    assert snapshot.value(KNOWN) == {"name": "ada"}
    with pytest.raises(KeyError) as caught:
        snapshot.value(TYPO)  # B-VAL-5: a KeyError, chained to the key's error
    assert isinstance(caught.value.__cause__, ResourceNotFoundError)
    assert snapshot.maybe_value(TYPO) is None
    assert isinstance(snapshot.error_for(TYPO), ResourceResolutionError)
    assert str(snapshot.errors[TYPO]) == (
        "Resource users:profile:adaa not found: db: ResourceNotFound(no user adaa; attempts=1)"
    )
    assert snapshot.errors[TYPO].to_dict()["error_type"] == "ResourceNotFoundError"
    with pytest.raises(ResourceNotFoundError):
        await builder.get(TYPO)
    await builder.aclose()


async def test_lower_sources_are_still_asked(clock: VirtualClock) -> None:
    primary, archive = Users(known=()), Users(known=("adaa",))
    builder = builder_of(
        source("primary", primary, 20), source("archive", archive, 10), clock=clock
    )
    assert await builder.get(TYPO) == {"name": "adaa"}
    assert primary.calls == archive.calls == [TYPO]
    await builder.aclose()


async def test_not_found_only_when_every_source_said_so(clock: VirtualClock) -> None:
    primary = Users(known=())
    broken = Users(known=(), error=ConnectionError("archive down"))
    builder = builder_of(source("primary", primary, 20), source("archive", broken, 10), clock=clock)
    snapshot = await builder.build([TYPO], strict=False)
    error = snapshot.errors[TYPO]
    assert type(error) is ResourceResolutionError  # the archive might have had it
    assert [f.error_type for f in error.failures] == ["ResourceNotFound", "ConnectionError"]
    both = builder_of(source("a", Users(), 20), source("b", Users(), 10), clock=clock)
    assert type((await both.build([TYPO], strict=False)).errors[TYPO]) is ResourceNotFoundError
    await builder.aclose()
    await both.aclose()


async def test_negative_caching_remembers_not_found_for_its_ttl(clock: VirtualClock) -> None:
    users = Users()
    builder = builder_of(source("db", users), clock=clock, not_found_ttl_seconds=30.0)
    assert builder.not_found_ttl_seconds == 30.0
    for _ in range(3):
        with pytest.raises(ResourceNotFoundError) as caught:
            await builder.get(TYPO)
        assert caught.value.key == TYPO
    assert users.calls == [TYPO]  # remembered: no source call within the TTL
    await asyncio.sleep(30.0)
    with pytest.raises(ResourceNotFoundError):
        await builder.get(TYPO)
    assert users.calls == [TYPO, TYPO]  # expired: asked again
    users.known.add("adaa")
    builder.forget_not_found([TYPO])
    assert await builder.get(TYPO) == {"name": "adaa"}
    await builder.aclose()


async def test_without_a_ttl_nothing_is_remembered(clock: VirtualClock) -> None:
    users = Users()
    builder = builder_of(source("db", users), clock=clock)
    assert builder.not_found_ttl_seconds is None
    for _ in range(2):
        await builder.build([TYPO], strict=False)
    assert users.calls == [TYPO, TYPO]
    await builder.aclose()


async def test_a_published_value_wins_over_a_remembered_not_found(clock: VirtualClock) -> None:
    users = Users()
    builder = builder_of(source("db", users), clock=clock, not_found_ttl_seconds=30.0)
    await builder.build([TYPO], strict=False)
    await builder.publisher.publish(TYPO, {"name": "new"}, source="signup")
    assert await builder.get(TYPO) == {"name": "new"}
    builder.forget_not_found()  # every key
    await builder.aclose()


async def test_a_not_found_key_is_not_served_stale(clock: VirtualClock) -> None:
    users = Users(known=("adaa",))
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0, allow_stale_on_error=True)
    builder = builder_of(source("db", users), clock=clock, default_policy=policy)
    assert await builder.get(TYPO) == {"name": "adaa"}
    users.known.clear()  # deleted upstream
    await asyncio.sleep(10.0)
    with pytest.raises(ResourceNotFoundError):
        await builder.get(TYPO)  # not the stale copy: the resource is gone
    await builder.aclose()


async def test_metrics_count_not_found_apart_from_failures(clock: VirtualClock) -> None:
    metrics = InMemoryMetrics()
    builder = builder_of(source("db", Users()), clock=clock, metrics=metrics)
    await builder.build([TYPO], strict=False)
    assert metrics.counter("source_fetch_total", source="db", status="not_found") == 1
    assert metrics.counter("source_fetch_total", source="db", status="failure") == 0
    await builder.aclose()


@pytest.mark.parametrize(("ttl", "error"), [(0, ValueError), (-1.0, ValueError), ("5", TypeError)])
def test_not_found_ttl_is_checked(ttl: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="not_found_ttl_seconds"):
        SnapshotBuilder([source("db", Users())], not_found_ttl_seconds=ttl)  # type: ignore[arg-type]


def test_resource_not_found_is_an_answer_not_an_outage() -> None:
    assert not isinstance(ResourceNotFound(), SourceUnavailableError)
    assert not RetryPolicy().is_retryable(ResourceNotFound("x"))
    assert str(ResourceNotFound("no user")) == "no user"
    assert issubclass(ResourceNotFoundError, ResourceResolutionError)


# -- batch sources -------------------------------------------------------------------------------


def batch(name: str, known: set[str], calls: list[tuple[ResourceKey, ...]], **options: Any) -> Any:
    async def fetch(keys: Collection[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        calls.append(tuple(keys))
        return {key: {"name": key.subject} for key in keys if key.subject in known}

    return CallableBatchSource(
        name=name,
        priority=10,
        supports=lambda _k: True,
        fetcher=fetch,
        resilience_policy=STRICT_CIRCUIT,
        **options,
    )


async def test_a_batch_omission_is_a_failure_by_default(clock: VirtualClock) -> None:
    calls: list[tuple[ResourceKey, ...]] = []
    builder = builder_of(batch("db", {"ada"}, calls), clock=clock)
    snapshot = await builder.build([TYPO], strict=False)
    error = snapshot.errors[TYPO]
    assert type(error) is ResourceResolutionError  # B-SRC-4
    assert error.failures[0].error_type == "SourceUnavailableError"
    again = await builder.build([KNOWN], strict=False)  # B-SRC-5: it counted: circuit open
    assert again.errors[KNOWN].failures[0].error_type == "CircuitOpenError"
    await builder.aclose()


async def test_a_batch_source_may_say_omitted_means_not_found(clock: VirtualClock) -> None:
    calls: list[tuple[ResourceKey, ...]] = []
    source_ = batch("db", {"ada"}, calls, omitted_means_not_found=True)
    assert source_.omitted_means_not_found is True
    builder = builder_of(source_, clock=clock, not_found_ttl_seconds=30.0)
    snapshot = await builder.build([TYPO], strict=False)
    error = snapshot.errors[TYPO]
    assert type(error) is ResourceNotFoundError
    assert error.failures[0].error_type == "ResourceNotFound"
    assert error.failures[0].message == "batch source db omitted resource users:profile:adaa"
    snapshot = await builder.build([KNOWN, TYPO], strict=False)  # the circuit stayed closed
    assert snapshot.value(KNOWN) == {"name": "ada"}
    assert calls == [(TYPO,), (KNOWN,)]  # TYPO was remembered as not found
    await builder.aclose()
