"""Test doubles shared across test folders (imported as ``tests.doubles``: the suite runs with
``--import-mode=importlib`` and the test folders have no ``__init__.py``)."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Collection, Mapping
from multiprocessing.connection import Connection
from typing import Any

import pytest

from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    CacheLookup,
    CacheWriteResult,
    FreshnessPolicy,
    ResourceKey,
    SnapshotValue,
)


def fresh_value(
    key: ResourceKey,
    payload: Any,
    observed_at: float,
    *,
    source: str = "rest",
    rank: int = 0,
    deps: Mapping[ResourceKey, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    latency_ms: float = 0.0,
) -> SnapshotValue[Any]:
    """A value fetched from ``source`` when it was observed: age 0, not stale, not cached."""
    return SnapshotValue(
        key=key,
        value=payload,
        source=source,
        observed_at=observed_at,
        fetched_at=observed_at,
        age_seconds=0.0,
        stale=False,
        from_cache=False,
        latency_ms=latency_ms,
        metadata=metadata or {},
        authority_rank=rank,
        dependency_versions=deps or {},
    )


class Events:
    """An event sink keeping every event, in order, as ``(event_type, payload)``."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        self.records.append((event_type, payload))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        """The payloads of the events of ``event_type``, in order."""
        return [payload for kind, payload in self.records if kind == event_type]


class RecordingSink:
    """A metrics and event sink keeping every call, in order, as ``(name, labels or payload)``
    (the values of metrics are left out)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.calls.append((metric, labels))

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self.calls.append((metric, labels))

    def emit(self, event_type: str, **payload: Any) -> None:
        self.calls.append((event_type, payload))


# -- caches forwarding to an AsyncMemoryCache ---------------------------------------------------
# A double picks the cache protocols it implements by its bases (the builder and the publisher
# choose their paths by the methods a cache has, and by ``validates_source_authority``), and
# observes or delays calls in ``before``.


class ForwardingCache:
    """The plain ``AsyncCache`` protocol (get, set, invalidate, clear), forwarded to ``inner``."""

    def __init__(self) -> None:
        self.inner = AsyncMemoryCache()

    async def before(self, call: str, count: int) -> None:
        """Runs before every forwarded ``call`` of ``count`` keys or values; does nothing here."""

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        await self.before("get", 1)
        return await self.inner.get(key, now=now, policy=policy)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await self.before("set", 1)
        await self.inner.set(value)

    async def invalidate(self, key: ResourceKey) -> None:
        await self.before("invalidate", 1)
        await self.inner.invalidate(key)

    async def clear(self) -> None:
        await self.before("clear", 0)
        await self.inner.clear()


class ForwardsSetIfNewer(ForwardingCache):
    """Adds ``set_if_newer`` (the atomic protocol)."""

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        await self.before("set_if_newer", 1)
        return await self.inner.set_if_newer(value, force=force, replace_equal=replace_equal)


class ForwardsGetMany(ForwardingCache):
    """Adds ``get_many``."""

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        await self.before("get_many", len(keys))
        return await self.inner.get_many(keys, now=now, policies=policies)


class ForwardsSetManyIfNewer(ForwardingCache):
    """Adds ``set_many_if_newer``."""

    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        await self.before("set_many_if_newer", len(values))
        return await self.inner.set_many_if_newer(values, force=force, replace_equal=replace_equal)


class ForwardsBatchWrites(ForwardingCache):
    """Adds ``set_many`` and ``invalidate_many``."""

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        await self.before("set_many", len(values))
        await self.inner.set_many(values)

    async def invalidate_many(self, keys: Collection[ResourceKey]) -> None:
        await self.before("invalidate_many", len(keys))
        await self.inner.invalidate_many(keys)


class ForwardingBatchAtomicCache(
    ForwardsGetMany, ForwardsBatchWrites, ForwardsSetIfNewer, ForwardsSetManyIfNewer
):
    """Every cache protocol: batch reads and writes, conditional writes."""


needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
"""Mark a test that runs :func:`in_forked_child`."""


def in_forked_child(produce: Callable[[], str]) -> str:
    """What ``produce`` returns in a forked child of this process (which must exit cleanly)."""

    def send(sender: Connection) -> None:
        sender.send(produce())
        sender.close()

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that runs threads; harmless here.
        warnings.simplefilter("ignore", DeprecationWarning)
        process = context.Process(target=send, args=(sender,))
        process.start()
    produced: str = receiver.recv()
    process.join()
    assert process.exitcode == 0
    return produced
