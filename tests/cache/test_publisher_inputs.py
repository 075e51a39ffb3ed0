"""ResourcePublisher: payload isolation and bad input (nothing written, nothing reported)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from tests.doubles import RecordingSink

from coalestra.cache import AsyncMemoryCache, ResourcePublisher, ResourceUpdate
from coalestra.core import (
    CacheLookup,
    FreshnessPolicy,
    PayloadIsolationError,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    SourceProtocolError,
)
from coalestra.testing import VirtualClock

KEY = ResourceKey("market", "price", "BTC")
OTHER = ResourceKey("market", "price", "ETH")
FOREVER = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9)


class Policies:
    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        return FOREVER


class ReferenceCache:
    """A plain AsyncCache that stores and returns the very objects it is given."""

    def __init__(self) -> None:
        self.data: dict[ResourceKey, SnapshotValue[Any]] = {}

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        found = self.data.get(key)
        return CacheLookup(found, found is not None, False, None)

    async def set(self, value: SnapshotValue[Any]) -> None:
        self.data[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        self.data.pop(key, None)

    async def clear(self) -> None:
        self.data.clear()


class Uncopyable:
    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise RuntimeError("no copies")


def make(
    clock: VirtualClock, cache: Any, **options: Any
) -> tuple[ResourcePublisher, RecordingSink]:
    sink = RecordingSink()
    publisher = ResourcePublisher(
        cache=cache,
        clock=clock,
        policy_resolver=Policies(),
        metrics=sink,
        events=sink,
        **options,
    )
    return publisher, sink


async def read(cache: Any, key: ResourceKey, clock: VirtualClock) -> Any:
    lookup = await cache.get(key, now=clock.now(), policy=FOREVER)
    return None if lookup.value is None else lookup.value.value


CACHES = [AsyncMemoryCache, ReferenceCache]


# -- payload isolation ------------------------------------------------------------------------


@pytest.mark.parametrize("cache_type", CACHES)
async def test_mutating_the_input_after_publishing_changes_nothing(
    clock: VirtualClock, cache_type: type
) -> None:
    cache = cache_type()
    publisher, _sink = make(clock, cache)
    payload = {"levels": [[1, 2]]}
    metadata = {"trace": ["a"]}
    result = await publisher.publish(KEY, payload, source="s", metadata=metadata)
    payload["levels"].append([3, 4])
    metadata["trace"].append("b")
    assert await read(cache, KEY, clock) == {"levels": [[1, 2]]}
    assert result.value.value == {"levels": [[1, 2]]}
    assert result.value.value is not payload
    assert result.value.metadata == {"trace": ["a"], "published": True}


@pytest.mark.parametrize("cache_type", CACHES)
async def test_mutating_results_changes_nothing_cached(
    clock: VirtualClock, cache_type: type
) -> None:
    cache = cache_type()
    publisher, _sink = make(clock, cache)
    first = await publisher.publish(KEY, {"n": [1]}, source="s", metadata={"m": [1]})
    first.value.value["n"].append(2)
    first.value.metadata["m"].append(2)
    second = await publisher.publish(KEY, {"n": [5]}, source="s", observed_at=clock.now() - 1)
    assert second.previous is not None
    assert second.previous.value == {"n": [1]}
    second.previous.value["n"].append(3)
    second.value.value["n"].append(6)
    assert await read(cache, KEY, clock) == {"n": [1]}
    stored = (await cache.get(KEY, now=clock.now(), policy=FOREVER)).value
    assert stored.metadata == {"m": [1], "published": True}


@pytest.mark.parametrize("cache_type", CACHES)
async def test_publish_many_isolates_inputs_and_results(
    clock: VirtualClock, cache_type: type
) -> None:
    cache = cache_type()
    publisher, _sink = make(clock, cache)
    payload = [1, 2]
    results = await publisher.publish_many([ResourceUpdate(KEY, payload, "s")])
    payload.append(3)
    results[KEY].value.value.append(4)
    assert await read(cache, KEY, clock) == [1, 2]


@pytest.mark.parametrize("cache_type", CACHES)
async def test_uncopyable_payload_names_the_key_and_writes_nothing(
    clock: VirtualClock, cache_type: type
) -> None:
    cache = cache_type()
    publisher, sink = make(clock, cache)
    with pytest.raises(PayloadIsolationError, match="market:price:BTC"):
        await publisher.publish(KEY, Uncopyable(), source="s")
    with pytest.raises(PayloadIsolationError, match="market:price:BTC"):
        await publisher.publish(KEY, 1, source="s", metadata={"bad": Uncopyable()})
    with pytest.raises(PayloadIsolationError, match="market:price:ETH"):
        await publisher.publish_many(
            [ResourceUpdate(KEY, 1, "s"), ResourceUpdate(OTHER, Uncopyable(), "s")]
        )
    assert await read(cache, KEY, clock) is None
    assert sink.calls == []


async def test_publisher_copier_is_used_for_caches_it_does_not_trust(clock: VirtualClock) -> None:
    copies: list[object] = []

    def copier(payload: Any) -> Any:
        copies.append(payload)
        return copy.deepcopy(payload)

    cache = ReferenceCache()
    publisher, _sink = make(clock, cache, payload_copier=copier)
    payload = {"x": 1}
    await publisher.publish(KEY, payload, source="s")
    assert copies
    assert all(item == {"x": 1} for item in copies)
    assert cache.data[KEY].value is not payload


async def test_payload_isolator_option(clock: VirtualClock) -> None:
    copies: list[object] = []

    def copier(payload: Any) -> Any:
        copies.append(payload)
        return copy.deepcopy(payload)

    publisher, _sink = make(clock, ReferenceCache(), payload_isolator=PayloadIsolator(copier))
    await publisher.publish(KEY, [1], source="s")
    assert copies != []


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "name"),
    [
        ({"key": "market:price:BTC"}, TypeError, "key"),
        ({"source": ""}, ValueError, "source"),
        ({"source": "   "}, ValueError, "source"),
        ({"source": 3}, TypeError, "source"),
        ({"observed_at": math.nan}, ValueError, "observed_at"),
        ({"observed_at": math.inf}, ValueError, "observed_at"),
        ({"observed_at": -math.inf}, ValueError, "observed_at"),
        ({"observed_at": "now"}, ValueError, "observed_at must be a finite number"),
        ({"observed_at": object()}, ValueError, "observed_at must be a finite number"),
        ({"metadata": [("a", 1)]}, TypeError, "metadata"),
        ({"force": 1}, TypeError, "force"),
        ({"replace_equal": "yes"}, TypeError, "replace_equal"),
    ],
)
@pytest.mark.parametrize("cache_type", CACHES)
async def test_publish_rejects_bad_input_before_writing(
    clock: VirtualClock,
    cache_type: type,
    arguments: dict[str, Any],
    error: type[Exception],
    name: str,
) -> None:
    cache = cache_type()
    publisher, sink = make(clock, cache)
    call: dict[str, Any] = {"key": KEY, "value": {"p": 1}, "source": "s"} | arguments
    key, value = call.pop("key"), call.pop("value")
    with pytest.raises(error, match=name):
        await publisher.publish(key, value, **call)
    assert await read(cache, KEY, clock) is None
    assert sink.calls == []


async def test_resource_update_validates_its_fields() -> None:
    with pytest.raises(TypeError, match="key"):
        ResourceUpdate("k", 1, "s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source"):
        ResourceUpdate(KEY, 1, "")
    with pytest.raises(ValueError, match="observed_at"):
        ResourceUpdate(KEY, 1, "s", observed_at=math.nan)
    with pytest.raises(TypeError, match="metadata"):
        ResourceUpdate(KEY, 1, "s", metadata=["x"])  # type: ignore[arg-type]


async def test_publish_update_and_many_reject_bad_input(clock: VirtualClock) -> None:
    cache = AsyncMemoryCache()
    publisher, sink = make(clock, cache)
    good = ResourceUpdate(KEY, 1, "s")
    with pytest.raises(TypeError, match="update"):
        await publisher.publish_update((KEY, 1, "s"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="force"):
        await publisher.publish_update(good, force=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="updates"):
        await publisher.publish_many(good)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="updates item"):
        await publisher.publish_many([good, (OTHER, 2, "s")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="replace_equal"):
        await publisher.publish_many([good], replace_equal=0)  # type: ignore[arg-type]
    future = ResourceUpdate(OTHER, 2, "s", observed_at=clock.now() + 30)
    with pytest.raises(SourceProtocolError):
        await publisher.publish_many([good, future])
    assert await cache.size() == 0
    assert sink.calls == []


async def test_invalidate_rejects_bad_input(clock: VirtualClock) -> None:
    cache = AsyncMemoryCache()
    publisher, sink = make(clock, cache)
    await publisher.publish(KEY, 1, source="s")
    sink.calls.clear()
    with pytest.raises(TypeError, match="key"):
        await publisher.invalidate(str(KEY))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason"):
        await publisher.invalidate(KEY, reason=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        await publisher.invalidate_many(KEY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys item"):
        await publisher.invalidate_many([KEY, "x"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="reason"):
        await publisher.invalidate_many([KEY], reason=5)  # type: ignore[arg-type]
    assert await cache.size() == 1
    assert sink.calls == []


class NotAClock:
    def now(self) -> float:
        return 0.0


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"cache": object()}, TypeError, "cache"),
        ({"clock": NotAClock()}, TypeError, "clock"),
        ({"policy_resolver": FOREVER}, TypeError, "policy_resolver"),
        ({"metrics": object()}, TypeError, "metrics"),
        ({"events": object()}, TypeError, "events"),
        ({"observation_policy": 1.0}, TypeError, "observation_policy"),
        ({"lock_stripes": 0}, ValueError, "lock_stripes"),
        ({"lock_stripes": 1.5}, TypeError, "lock_stripes"),
        ({"max_pending_tasks": 0}, ValueError, "max_pending_tasks"),
        ({"max_pending_tasks": "8"}, TypeError, "max_pending_tasks"),
        ({"payload_copier": 42}, TypeError, "payload_copier"),
        ({"payload_isolator": copy.deepcopy}, TypeError, "payload_isolator"),
        (
            {"payload_copier": copy.deepcopy, "payload_isolator": PayloadIsolator()},
            ValueError,
            "payload_copier",
        ),
        ({"authority_resolver": {"stream": 1}}, TypeError, "authority_resolver"),
    ],
)
def test_constructor_rejects_bad_arguments(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    sink = RecordingSink()
    arguments: dict[str, Any] = {
        "cache": AsyncMemoryCache(),
        "clock": VirtualClock(),
        "policy_resolver": Policies(),
        "metrics": sink,
        "events": sink,
    } | options
    with pytest.raises(error, match=name):
        ResourcePublisher(**arguments)
