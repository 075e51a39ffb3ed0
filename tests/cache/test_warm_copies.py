"""A build's warm hits of mutable payloads are private copies, whichever way they are copied:
a flat dict or list by its own ``copy()`` (with the built-in copier), anything else by the
copier -- and a custom copier is still called for every payload (B-CACHE-11)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from coalestra.adapters import CallableSource
from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey
from coalestra.orchestration import SnapshotBuilder
from coalestra.testing import VirtualClock

KEY = ResourceKey("warm", "copy", "one")
LONG = FreshnessPolicy(ttl_seconds=1e6, max_stale_seconds=1e6)


def builder_of(payload: Any, **options: Any) -> SnapshotBuilder:
    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> Any:
        return payload

    source = CallableSource(name="memory", priority=1, supports=lambda _k: True, fetcher=fetch)
    return SnapshotBuilder([source], clock=VirtualClock(), default_policy=LONG, **options)


@pytest.mark.parametrize(
    "payload",
    [
        {"bid": 1.0, "ask": 1.1, "venue": "x", "ts": 123, "ok": True, "none": None},
        [1, 2.5, "three", None],
        {"levels": [1, 2, 3], "symbol": "BTC"},  # not flat: a nested list
        {"pair": ("a", "b")},  # not flat: a tuple is copied by the copier
        OrderedDict(a=1),  # not flat: a dict subclass
        [{"row": 1}],
    ],
)
async def test_a_warm_hit_is_a_private_copy_equal_to_the_stored_one(payload: Any) -> None:
    async with builder_of(payload) as builder:
        await builder.build([KEY])
        served = (await builder.build([KEY]))[KEY]
        assert served.from_cache
        assert served.value == payload
        assert type(served.value) is type(payload)
        assert served.value is not payload
        if isinstance(served.value, dict):
            served.value.clear()
        else:
            served.value.append("mutated")
        again = (await builder.build([KEY]))[KEY]
        assert again.from_cache
        assert again.value == payload


async def test_a_nested_container_of_a_warm_hit_is_copied_too() -> None:
    payload = {"levels": [1, 2, 3]}
    async with builder_of(payload) as builder:
        await builder.build([KEY])
        (await builder.build([KEY]))[KEY].value["levels"].append(4)
        assert (await builder.build([KEY]))[KEY].value == {"levels": [1, 2, 3]}


async def test_a_custom_copier_is_called_for_a_flat_payload_on_every_warm_hit() -> None:
    copied: list[Any] = []

    def copier(value: Any) -> Any:
        copied.append(value)
        return dict(value)

    async with builder_of({"bid": 1.0}, payload_copier=copier) as builder:
        await builder.build([KEY])
        before = len(copied)
        served = (await builder.build([KEY]))[KEY]
        assert served.from_cache
        assert len(copied) == before + 1
