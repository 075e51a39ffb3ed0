"""Bad input (DESIGN "Bad input"): every entry point refuses it with a clear error naming the
argument, before any source is called, and leaves the builder fully usable."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tests.orchestration.conftest import Single, assert_quiet, keys, make_builder

from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    CacheLookup,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    SnapshotRequest,
    SnapshotValue,
    SourceAuthorityPolicy,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import SourceResiliencePolicy
from coalestra.testing import VirtualClock

A, B = keys("A", "B")


class PlainCache:
    """A minimal AsyncCache that does not validate source authority."""

    def __init__(self) -> None:
        self.inner = AsyncMemoryCache()

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        return await self.inner.get(key, now=now, policy=policy)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await self.inner.set(value)

    async def invalidate(self, key: ResourceKey) -> None:
        await self.inner.invalidate(key)

    async def clear(self) -> None:
        await self.inner.clear()


class NoFetch:
    name = "nofetch"
    priority = 1

    def supports(self, _key: ResourceKey) -> bool:
        return True


class SyncFetch(NoFetch):
    name = "syncfetch"

    def fetch(self, key: ResourceKey, _context: FetchContext) -> str:
        return "sync"


class AsyncFetch(NoFetch):
    name = "asyncfetch"

    async def fetch(self, key: ResourceKey, _context: FetchContext) -> str:
        return "ok"


class StrPriority(AsyncFetch):
    name = "strpriority"
    priority = "10"  # type: ignore[assignment]


class BoolPriority(AsyncFetch):
    name = "boolpriority"
    priority = True


class NoName(AsyncFetch):
    name = "  "


# --- the builder ------------------------------------------------------------------------------


def test_duplicate_source_names_are_refused(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match=r"^source names must be unique$"):  # B-SRC-1
        SnapshotBuilder([Single("rest", 1), Single("rest", 2)], clock=clock)


def test_unknown_source_in_source_concurrency(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match=r"source_concurrency.*'ghost'"):
        SnapshotBuilder([Single("rest", 1)], clock=clock, source_concurrency={"ghost": 2})


def test_unknown_source_in_source_resilience(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match=r"source_resilience.*'ghost'"):
        SnapshotBuilder(
            [Single("rest", 1)],
            clock=clock,
            source_resilience={"ghost": SourceResiliencePolicy()},
        )


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"max_concurrency": -3}, ValueError, "max_concurrency"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency"),
        ({"max_pending_tasks": 0}, ValueError, "max_pending_tasks"),
        ({"source_concurrency": {"rest": 0}}, ValueError, "source concurrency limit"),
    ],
)
def test_limits_below_one_are_refused(
    clock: VirtualClock, options: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        SnapshotBuilder([Single("rest", 1)], clock=clock, **options)


def test_a_source_without_a_fetch_method(clock: VirtualClock) -> None:
    with pytest.raises(TypeError, match="nofetch"):
        SnapshotBuilder([NoFetch()], clock=clock)  # type: ignore[list-item]


def test_a_source_with_a_sync_fetch_method(clock: VirtualClock) -> None:
    with pytest.raises(TypeError, match=r"syncfetch.*fetch"):
        SnapshotBuilder([SyncFetch()], clock=clock)  # type: ignore[list-item]


@pytest.mark.parametrize("source", [StrPriority(), BoolPriority()], ids=["str", "bool"])
def test_a_source_with_a_non_int_priority(clock: VirtualClock, source: Any) -> None:
    with pytest.raises(TypeError, match="priority"):
        SnapshotBuilder([source], clock=clock)


def test_a_source_with_a_blank_name(clock: VirtualClock) -> None:
    with pytest.raises((TypeError, ValueError), match="name"):
        SnapshotBuilder([NoName()], clock=clock)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("timeout_seconds", 0.0),
        ("timeout_seconds", math.nan),
        ("queue_timeout_seconds", -1.0),
        ("max_concurrency", 0),
    ],
)
def test_a_source_with_a_bad_limit(clock: VirtualClock, attribute: str, value: Any) -> None:
    source = Single("rest", 1)
    setattr(source, attribute, value)

    with pytest.raises(ValueError, match=attribute):
        SnapshotBuilder([source], clock=clock)


def test_authority_rules_need_a_cache_that_validates_them(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="validates_source_authority"):
        SnapshotBuilder(
            [Single("rest", 1)],
            clock=clock,
            cache=PlainCache(),  # type: ignore[arg-type]
            authority_policy=SourceAuthorityPolicy({"rest": 10}),
        )


async def test_a_plain_cache_works_without_authority_rules(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([Single("rest", 1)], clock=clock, cache=PlainCache())  # type: ignore[arg-type]

    assert (await builder.build([A])).value(A)["subject"] == "A"


# --- builds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-1.0, ValueError),
        (0.0, ValueError),
        (0, ValueError),
        ("3", TypeError),
        (True, TypeError),
    ],
)
async def test_a_bad_deadline_is_refused_before_any_source_is_called(
    clock: VirtualClock, deadline: Any, error: type[Exception]
) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)

    with pytest.raises(error, match="deadline_seconds"):
        await builder.build([A], deadline_seconds=deadline)
    with pytest.raises(error, match="deadline_seconds"):
        await builder.build_request(SnapshotRequest(required=[A]), deadline_seconds=deadline)

    assert source.calls == []
    assert source.supports_calls == 0
    await assert_quiet(builder)
    assert (await builder.build([A])).value(A)["subject"] == "A"


@pytest.mark.parametrize(
    "bad_keys",
    [
        pytest.param([A, "market:price:B"], id="string-in-list"),
        pytest.param([A, None], id="none-in-list"),
        pytest.param([A, [B]], id="unhashable-in-list"),
        pytest.param(A, id="bare-key"),
        pytest.param("market:price:A", id="string"),
        pytest.param(None, id="none"),
    ],
)
async def test_bad_keys_are_refused_before_any_source_is_called(
    clock: VirtualClock, bad_keys: Any
) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)

    with pytest.raises(TypeError, match="keys"):
        await builder.build(bad_keys)

    assert source.calls == []
    assert source.supports_calls == 0
    await assert_quiet(builder)


async def test_an_empty_request_is_refused(clock: VirtualClock) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)

    with pytest.raises(ValueError, match="request"):
        await builder.build_request(SnapshotRequest())

    assert source.calls == []


async def test_a_non_request_is_refused(clock: VirtualClock) -> None:
    builder = make_builder([Single("rest", 1)], clock)

    with pytest.raises(TypeError, match="request"):
        await builder.build_request([A])  # type: ignore[arg-type]


async def test_an_empty_key_list_is_refused(clock: VirtualClock) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)

    with pytest.raises(ValueError, match=r"^at least one resource key is required$"):  # B-TIME-5
        await builder.build([])

    assert source.calls == []


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"strict": 1}, TypeError, "strict"),
        ({"metadata": ["not", "a", "mapping"]}, TypeError, "metadata"),
        ({"snapshot_id": 42}, TypeError, "snapshot_id"),
    ],
)
async def test_bad_build_options_are_refused(
    clock: VirtualClock, options: dict[str, Any], error: type[Exception], named: str
) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)

    with pytest.raises(error, match=named):
        await builder.build([A], **options)

    assert source.calls == []
    await assert_quiet(builder)
