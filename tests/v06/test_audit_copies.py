"""Audit of 0.6 section 5 through the public API: the copy shutdown timeout is a timeout like our
others (``docs/errors.md``: "Timeouts also derive from the builtin TimeoutError"), so a caller
that guards ``aclose()`` / ``close()`` with ``except TimeoutError`` catches it too."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from coalestra import (
    AsyncMemoryCache,
    CacheLookup,
    CallableSource,
    CoalestraError,
    FreshnessPolicy,
    ObservabilityShutdownTimeoutError,
    PayloadCopyShutdownTimeoutError,
    PayloadIsolationError,
    ResourceKey,
    SnapshotBuilder,
)
from coalestra.sync import SyncSnapshotBuilder

T = TypeVar("T")
A = ResourceKey("md", "quote", "A")
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


class Gate:
    """A copier blocked (in a worker thread) until :meth:`release`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, value: T) -> T:
        self.entered.set()
        self.opened.wait(10.0)
        return copy.deepcopy(value)

    def release(self) -> None:
        self.opened.set()


def gated_builder(gate: Gate) -> SnapshotBuilder:
    async def fetch(key: ResourceKey, _ctx: Any) -> Any:
        return {"v": key.subject}

    source = CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=fetch)
    return SnapshotBuilder(
        [source],
        default_policy=LONG,
        payload_copier=gate,
        run_payload_copies_in_thread=True,
        cache=AsyncMemoryCache(run_payload_copies_in_thread=False),
    )


def test_copy_shutdown_timeout_error_is_a_timeout_error_like_the_observability_one() -> None:
    error = PayloadCopyShutdownTimeoutError(timeout_seconds=1, active_components={"builder": 1})
    assert isinstance(error, TimeoutError)
    assert isinstance(error, CoalestraError)
    assert issubclass(ObservabilityShutdownTimeoutError, TimeoutError)
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, PayloadCopyShutdownTimeoutError)
    assert isinstance(again, TimeoutError)
    assert dict(again.active_components) == {"builder": 1}


def test_except_timeout_error_around_aclose_catches_the_copy_shutdown_timeout() -> None:
    gate = Gate()

    async def main() -> BaseException | None:
        builder = gated_builder(gate)
        pending = asyncio.ensure_future(builder.build([A]))
        while not gate.entered.is_set():  # noqa: ASYNC110 (set by a worker thread)
            await asyncio.sleep(0)
        caught: BaseException | None = None
        try:
            await builder.aclose(copy_shutdown_timeout_seconds=0.02)
        except TimeoutError as error:
            caught = error
        gate.release()
        await builder.wait_for_background_shutdown()
        await asyncio.gather(pending, return_exceptions=True)
        return caught

    loop = asyncio.new_event_loop()
    try:
        caught = loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    assert isinstance(caught, PayloadCopyShutdownTimeoutError)
    assert dict(caught.active_components) == {"builder": 1}


def test_sync_close_still_raises_the_copy_timeout_and_not_a_generic_timeout() -> None:
    # The facade treats its own outer TimeoutError as "refreshes outlived the budget"; the copy
    # shutdown timeout, now a TimeoutError too, must still reach the caller of close().
    gate = Gate()
    sync = SyncSnapshotBuilder(gated_builder(gate), shutdown_timeout_seconds=0.02)
    caller = threading.Thread(target=lambda: _quietly(sync.build, [A]))
    caller.start()
    assert gate.entered.wait(5.0)
    releaser = threading.Timer(0.05, gate.release)
    releaser.start()
    with pytest.raises(PayloadCopyShutdownTimeoutError) as caught:
        sync.close()
    releaser.join()
    caller.join(5.0)
    assert caught.value.timeout_seconds == 0.02
    assert sync.closed


def _quietly(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except BaseException:  # the close cancels the build in flight
        return


class KeepingCache:
    """A custom cache that keeps the values it is given, without copies of its own."""

    def __init__(self) -> None:
        self.values: dict[ResourceKey, Any] = {}

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        value = self.values.get(key)
        if value is None:
            return CacheLookup(None, False, False)
        age = max(0.0, now - value.observed_at)
        return CacheLookup(value, age <= policy.ttl_seconds, True, age)

    async def set(self, value: Any) -> None:
        self.values[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        self.values.pop(key, None)

    async def clear(self) -> None:
        self.values.clear()


def counting_into(calls: list[object]) -> Callable[[T], T]:
    """A deep-copying payload copier that records each payload it is given."""

    def counting(value: T) -> T:
        calls.append(value)
        return copy.deepcopy(value)

    return counting


def rows_builder(cache: Any, copier: Callable[[Any], Any]) -> SnapshotBuilder:
    """One source serving ``{"rows": [1, 2]}``, on ``cache``, copying with ``copier``."""

    async def fetch(key: ResourceKey, _ctx: Any) -> Any:
        return {"rows": [1, 2]}

    source = CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=fetch)
    return SnapshotBuilder([source], default_policy=LONG, cache=cache, payload_copier=copier)


async def test_custom_cache_hit_is_copied_at_the_boundary() -> None:
    """public-api-0.6.md section 5 and B-CACHE-11: a hit read from a cache passed in is copied
    before it is handed out, so a reader's change never reaches what the cache holds."""
    calls: list[object] = []

    builder = rows_builder(KeepingCache(), counting_into(calls))
    await builder.build([A])
    before = len(calls)
    hit = await builder.build([A])
    hit.value(A)["rows"].append("changed by a reader")
    again = await builder.build([A])
    assert len(calls) > before  # B-CACHE-11: the copier sees every payload at every boundary
    assert again.value(A) == {"rows": [1, 2]}


async def test_a_cache_declaring_private_copies_is_not_copied_again() -> None:
    calls: list[object] = []

    class PrivateCache(KeepingCache):
        returns_private_copies = True

    builder = rows_builder(PrivateCache(), counting_into(calls))
    await builder.build([A])
    before = len(calls)
    hit = await builder.build([A])
    assert hit.value(A) == {"rows": [1, 2]}
    assert hit[A].from_cache
    assert len(calls) == before  # declared private: the builder trusts the cache's own copies


async def test_a_custom_cache_hit_that_cannot_be_copied_names_the_key() -> None:
    copies = {"allowed": 2}  # the source boundary and the reader's copy of the cold build

    def failing_later(value: T) -> T:
        if copies["allowed"] == 0:
            raise RuntimeError("no copy")
        copies["allowed"] -= 1
        return copy.deepcopy(value)

    builder = rows_builder(KeepingCache(), failing_later)
    await builder.build([A])
    with pytest.raises(PayloadIsolationError) as caught:
        await builder.build([A])
    assert caught.value.context == f"cache read of {A}"
