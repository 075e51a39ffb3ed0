"""CallableDerivedSource: validated dependency tuples and derivation from a snapshot."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from tests.doubles import fresh_value

from coalestra.adapters import CallableDerivedSource
from coalestra.core import (
    FetchContext,
    ResourceKey,
    Snapshot,
    SourcePayload,
    SourceProtocolError,
)
from coalestra.testing import VirtualClock

A = ResourceKey("inputs", "a")
B = ResourceKey("inputs", "b")
TOTAL = ResourceKey("derived", "total")


def derived(dependencies: Any = None, deriver: Any = None, **kwargs: Any) -> CallableDerivedSource:
    return CallableDerivedSource(
        name="calc",
        priority=50,
        supports=lambda key: key.namespace == "derived",
        dependencies=dependencies or (lambda _key: (A, B)),
        deriver=deriver or (lambda _k, snap, _c: snap.value(A) + snap.value(B)),
        **kwargs,
    )


def snapshot_of(clock: VirtualClock, values: dict[ResourceKey, Any]) -> Snapshot:
    now = clock.now()
    resources = {k: fresh_value(k, v, now, source="inputs") for k, v in values.items()}
    return Snapshot(snapshot_id="deps", created_at=now, resources=resources)


@pytest.fixture
def ctx() -> FetchContext:
    return FetchContext(requested_at=1_700_000_000.0)


# --- dependencies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "returned",
    [
        (A, B),
        [A, B],
        [A, B, A],  # duplicates are dropped, first occurrence kept
        {A: "x", B: "y"},  # any iterable of keys
    ],
)
def test_dependencies_are_a_tuple_of_distinct_keys(returned: Any) -> None:
    deps = derived(dependencies=lambda _key: returned).dependencies(TOTAL)
    assert deps == (A, B)
    assert isinstance(deps, tuple)


def test_dependencies_may_come_from_a_generator_and_see_the_key() -> None:
    seen: list[ResourceKey] = []

    def deps(key: ResourceKey) -> Any:
        seen.append(key)
        yield A

    assert derived(dependencies=deps).dependencies(TOTAL) == (A,)
    assert seen == [TOTAL]


def test_no_dependencies_is_an_empty_tuple() -> None:
    assert derived(dependencies=lambda _key: []).dependencies(TOTAL) == ()


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        (A, "ResourceKey"),  # a bare key instead of a collection of keys
        (None, "NoneType"),
        ("inputs:a", "str"),
        ([A, "inputs:b"], "str, not a ResourceKey"),
        ([A, None], "NoneType"),
    ],
)
def test_bad_dependencies_are_protocol_errors(returned: Any, match: str) -> None:
    with pytest.raises(SourceProtocolError, match=rf"'calc'.*{match}"):
        derived(dependencies=lambda _key: returned).dependencies(TOTAL)


def test_dependencies_returning_a_coroutine_is_a_protocol_error_without_warnings() -> None:
    async def deps(_key: ResourceKey) -> tuple[ResourceKey, ...]:
        return (A,)

    with pytest.raises(SourceProtocolError, match="coroutine"):
        derived(dependencies=lambda key: deps(key)).dependencies(TOTAL)


def test_dependencies_refuses_a_non_key() -> None:
    with pytest.raises(TypeError, match="key"):
        derived().dependencies("derived:total")  # type: ignore[arg-type]


# --- derive -----------------------------------------------------------------------------------


async def test_sync_deriver_gets_key_snapshot_and_context_in_a_thread(
    clock: VirtualClock, ctx: FetchContext
) -> None:
    calls: list[tuple[ResourceKey, Snapshot, FetchContext, int]] = []
    deps = snapshot_of(clock, {A: 2, B: 3})

    def deriver(key: ResourceKey, snap: Snapshot, context: FetchContext) -> int:
        calls.append((key, snap, context, threading.get_ident()))
        return int(snap.value(A, int) * snap.value(B, int))

    payload = await derived(deriver=deriver).derive(TOTAL, deps, ctx)
    assert payload == SourcePayload(6)
    [(key, snap, context, thread)] = calls
    assert (key, snap, context) == (TOTAL, deps, ctx)
    assert thread != threading.get_ident()


async def test_sync_deriver_inline(clock: VirtualClock, ctx: FetchContext) -> None:
    threads: list[int] = []

    def deriver(_key: ResourceKey, snap: Snapshot, _c: FetchContext) -> int:
        threads.append(threading.get_ident())
        return 0

    src = derived(deriver=deriver, run_sync_in_thread=False)
    await src.derive(TOTAL, snapshot_of(clock, {A: 1, B: 1}), ctx)
    assert threads == [threading.get_ident()]


async def test_async_deriver(clock: VirtualClock, ctx: FetchContext) -> None:
    async def deriver(_key: ResourceKey, snap: Snapshot, _c: FetchContext) -> SourcePayload[int]:
        await asyncio.sleep(0.3)
        return SourcePayload(snap.value(A, int) + 100, metadata={"derived": True})

    payload = await derived(deriver=deriver).derive(TOTAL, snapshot_of(clock, {A: 1, B: 0}), ctx)
    assert payload.value == 101
    assert dict(payload.metadata) == {"derived": True}


async def test_default_deriver_sums_and_wraps(clock: VirtualClock, ctx: FetchContext) -> None:
    payload = await derived().derive(TOTAL, snapshot_of(clock, {A: 4, B: 5}), ctx)
    assert payload == SourcePayload(9)


async def test_deriver_exceptions_propagate(clock: VirtualClock, ctx: FetchContext) -> None:
    def deriver(_key: ResourceKey, snap: Snapshot, _c: FetchContext) -> int:
        raise ArithmeticError("bad input")

    with pytest.raises(ArithmeticError, match="bad input"):
        await derived(deriver=deriver).derive(TOTAL, snapshot_of(clock, {}), ctx)


async def test_derive_refuses_a_non_key(clock: VirtualClock, ctx: FetchContext) -> None:
    with pytest.raises(TypeError, match="key"):
        await derived().derive(None, snapshot_of(clock, {}), ctx)  # type: ignore[arg-type]
