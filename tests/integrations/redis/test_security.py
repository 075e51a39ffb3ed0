"""A shared Redis must never be a way to run code here: serializers and hostile entries."""

from __future__ import annotations

import enum
import math
import os
import pickle
import re
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from tests.integrations.redis.conftest import LONG, key, value

from coalestra.integrations.redis import JsonSerializer, PickleSerializer, RedisCache, Serializer

SIGNING_KEY = b"k" * 32


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Color(enum.IntEnum):
    RED = 1


class Exploit:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_the_serializers_implement_the_protocol() -> None:
    assert isinstance(JsonSerializer(), Serializer)
    assert isinstance(PickleSerializer(SIGNING_KEY), Serializer)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (Point(1, 2), " is a Point"),
        ({"a": [1, (2, Point(1, 2))]}, "['a'][1][1] is a Point"),
        (Color.RED, " is a Color"),  # a subclass of int would come back as an int
        (datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC")), " is a datetime"),
    ],
)
def test_json_refuses_what_would_not_come_back_unchanged(payload: object, where: str) -> None:
    with pytest.raises(TypeError, match="^" + re.escape("$['v']" + where)):
        JsonSerializer().dumps({"v": payload}, context=b"")


def test_json_round_trips_the_common_python_types_exactly() -> None:
    payload = {
        "tuple": (1, (2, "x")),
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "when": datetime(2024, 1, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        "naive": datetime(2024, 1, 1, 12, 30, 15, 5),
        "day": date(2024, 2, 29),
        "price": Decimal("1.10"),
        "blob": b"\x00\xff",
        "id": uuid.UUID(int=7),
        "floats": [math.inf, -math.inf, 1.5],
        "int keys": {1: "one", (2, 3): "pair"},
        "$t": "a key that looks like a tag",
        "nested": [{"$t": "tuple", "v": []}],
    }
    serializer = JsonSerializer()
    back = serializer.loads(serializer.dumps({"v": payload}, context=b""), context=b"")["v"]
    assert back == payload
    assert {name: type(item) for name, item in back.items()} == {
        name: type(item) for name, item in payload.items()
    }
    assert type(back["tuple"][1]) is tuple
    nan = serializer.loads(serializer.dumps({"v": math.nan}, context=b""), context=b"")["v"]
    assert math.isnan(nan)
    with pytest.raises(ValueError, match="unknown tagged value"):
        serializer.loads(b'{"v": {"$t": "exec", "v": "rm -rf"}}', context=b"")


async def test_the_default_serializer_refuses_non_json_naming_the_key(cache: RedisCache) -> None:
    from coalestra.core import PayloadIsolationError

    with pytest.raises(PayloadIsolationError, match="market:price:BTC") as caught:
        await cache.set(value(key("BTC"), Point(1, 2)))
    assert "cannot encode" in str(caught.value)
    with pytest.raises(PayloadIsolationError, match=r"\$\['m'\]"):
        await cache.set(value(key("BTC"), 1, metadata={"at": Point(1, 2)}))


async def test_pickle_round_trips_any_picklable_payload(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix, serializer=PickleSerializer(SIGNING_KEY))
    stored = value(key("BTC"), {"point": Point(1, 2), "tags": ("a", "b")})
    await cache.set(stored)
    found = (await cache.get(key("BTC"), now=time.time(), policy=LONG)).value
    assert found is not None
    assert found.value == stored.value
    await cache.aclose()


async def _pickled(
    redis_url: str, prefix: str, tmp_path: Path, raw: Redis
) -> tuple[RedisCache, Path, str]:
    cache = RedisCache(redis_url, prefix=prefix, serializer=PickleSerializer(SIGNING_KEY))
    await cache.set(value(key("BTC"), "honest"))
    return cache, tmp_path / "pwned", f"{prefix}:v:market:price:BTC"


async def test_a_tampered_pickle_entry_is_refused_and_never_unpickled(
    redis_url: str, prefix: str, tmp_path: Path, raw: Redis
) -> None:
    cache, marker, name = await _pickled(redis_url, prefix, tmp_path, raw)
    honest = await raw.get(name)
    assert honest is not None
    header_end = honest.index(b"\n") + 1
    mac_end = header_end + 2 + 32
    evil = pickle.dumps({"v": Exploit(marker), "s": "x", "f": 0.0, "l": 0.0, "a": 1, "m": {}})
    await raw.set(name, honest[:mac_end] + evil)  # the honest signature over another body
    lookup = await cache.get(key("BTC"), now=time.time(), policy=LONG)
    assert lookup.value is None
    assert not marker.exists()
    await raw.set(name, honest[:header_end] + evil)  # no signature at all
    assert (await cache.get(key("BTC"), now=time.time(), policy=LONG)).value is None
    assert not marker.exists()
    assert (await cache.stats()).rejected_entries == 2
    await cache.aclose()


async def test_a_signed_entry_moved_to_another_key_or_re_headed_is_refused(
    redis_url: str, prefix: str, tmp_path: Path, raw: Redis
) -> None:
    cache, _marker, name = await _pickled(redis_url, prefix, tmp_path, raw)
    honest = await raw.get(name)
    assert honest is not None
    await raw.set(f"{prefix}:v:market:price:ETH", honest)  # replayed under another key
    assert (await cache.get(key("ETH"), now=time.time(), policy=LONG)).value is None
    forged = honest.replace(b"c1 0 ", b"c1 9 ", 1)  # authority raised in the header
    await raw.set(name, forged)
    assert (await cache.get(key("BTC"), now=time.time(), policy=LONG)).value is None
    assert (await cache.stats()).rejected_entries == 2
    await cache.aclose()


async def test_another_signing_key_and_the_json_reader_refuse_the_entry(
    redis_url: str, prefix: str, tmp_path: Path, raw: Redis
) -> None:
    cache, _marker, _name = await _pickled(redis_url, prefix, tmp_path, raw)
    for serializer in (PickleSerializer(b"o" * 32), JsonSerializer()):
        await cache.set(value(key("BTC"), "honest"))  # (a refused entry is dropped)
        reader = RedisCache(redis_url, prefix=prefix, serializer=serializer)
        assert (await reader.get(key("BTC"), now=time.time(), policy=LONG)).value is None
        assert (await reader.stats()).rejected_entries == 1
        await reader.aclose()
    await cache.aclose()


async def test_garbage_entries_are_misses(cache: RedisCache, raw: Redis, prefix: str) -> None:
    for garbage in (b"", b"junk", b"c1 x y z 0\n{}", b"c1 0 1.0 v 0\n[1]", b"c1 0 1.0 v 0\n{}"):
        await raw.set(f"{prefix}:v:market:price:BTC", garbage)
        assert (await cache.get(key("BTC"), now=time.time(), policy=LONG)).value is None
    # A newer honest write replaces an unreadable entry.
    assert (await cache.set_if_newer(value(key("BTC"), 1))).stored


@pytest.mark.parametrize(
    ("signing_key", "error"),
    [("text", TypeError), (b"short", ValueError), (None, TypeError)],
)
def test_pickle_needs_a_real_signing_key(signing_key: object, error: type) -> None:
    with pytest.raises(error, match="signing_key"):
        PickleSerializer(signing_key)  # type: ignore[arg-type]


def test_pickle_protocol_is_checked() -> None:
    with pytest.raises(ValueError, match="protocol"):
        PickleSerializer(SIGNING_KEY, protocol=99)
    assert "k" * 8 not in repr(PickleSerializer(SIGNING_KEY))  # the key never shows
