"""The cache area's public names and value types."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

import coalestra.cache
from coalestra.cache import CacheStats, PublishResult, PublishStatus, ResourceUpdate
from coalestra.core import ResourceKey, SnapshotValue

KEY = ResourceKey("market", "price", "BTC")
COUNTS: dict[str, Any] = {
    "size": 1,
    "max_entries": 10,
    "hits": 5,
    "misses": 2,
    "fresh_hits": 3,
    "stale_hits": 2,
    "sets": 4,
    "invalidations": 1,
    "evictions": 0,
    "expirations": 6,
}


def snapshot_value(payload: Any = 1) -> SnapshotValue[Any]:
    return SnapshotValue(KEY, payload, "s", 1.0, 1.0, 0.0, False, False, 0.0)


def test_public_names() -> None:
    assert coalestra.cache.__all__ == [
        "AsyncMemoryCache",
        "CacheStats",
        "PublishResult",
        "PublishStatus",
        "ResourcePublisher",
        "ResourceUpdate",
    ]
    for name in coalestra.cache.__all__:
        assert getattr(coalestra.cache, name).__module__.startswith("coalestra.cache._")


def test_cache_stats_fields_in_contract_order() -> None:
    assert [f.name for f in dataclasses.fields(CacheStats)] == list(COUNTS)
    stats = CacheStats(**COUNTS)
    assert stats.hits == 5
    assert stats.max_entries == 10
    assert CacheStats(**(COUNTS | {"max_entries": None})).max_entries is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.hits = 0  # type: ignore[misc]
    assert not hasattr(stats, "__dict__")
    assert pickle.loads(pickle.dumps(stats)) == stats


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("hits", -1, ValueError),
        ("size", 1.5, TypeError),
        ("evictions", True, TypeError),
        ("max_entries", 0, ValueError),
        ("max_entries", "10", TypeError),
    ],
)
def test_cache_stats_validates(field: str, bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=field):
        CacheStats(**(COUNTS | {field: bad}))


def test_publish_status_values() -> None:
    assert {member.name: member.value for member in PublishStatus} == {
        "PUBLISHED": "published",
        "IGNORED_LOWER_AUTHORITY": "ignored_lower_authority",
        "IGNORED_OLDER": "ignored_older",
        "IGNORED_DUPLICATE": "ignored_duplicate",
    }
    assert isinstance(PublishStatus.PUBLISHED, str)
    assert PublishStatus("ignored_older") is PublishStatus.IGNORED_OLDER


def test_publish_result() -> None:
    offered, before = snapshot_value(2), snapshot_value(1)
    result = PublishResult(PublishStatus.PUBLISHED, offered, before)
    assert [f.name for f in dataclasses.fields(PublishResult)] == ["status", "value", "previous"]
    assert result.published
    assert result.previous is before
    ignored = PublishResult("ignored_duplicate", offered)  # type: ignore[arg-type]
    assert ignored.status is PublishStatus.IGNORED_DUPLICATE
    assert not ignored.published
    assert ignored.previous is None
    with pytest.raises(ValueError, match="status"):
        PublishResult("stored", offered)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        PublishResult(PublishStatus.PUBLISHED, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="previous"):
        PublishResult(PublishStatus.PUBLISHED, offered, 1)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.status = PublishStatus.IGNORED_OLDER  # type: ignore[misc]


def test_resource_update_defaults_and_read_only_metadata() -> None:
    update: ResourceUpdate[dict[str, int]] = ResourceUpdate(KEY, {"p": 1}, "stream")
    assert [f.name for f in dataclasses.fields(ResourceUpdate)] == [
        "key",
        "value",
        "source",
        "observed_at",
        "metadata",
    ]
    assert update.observed_at is None
    assert update.metadata == {}
    meta = {"seq": 1}
    stamped = ResourceUpdate(KEY, 1, "stream", observed_at=5, metadata=meta)
    meta["seq"] = 2
    assert stamped.metadata == {"seq": 1}
    assert stamped.observed_at == 5.0
    assert isinstance(stamped.observed_at, float)
    with pytest.raises(TypeError):
        stamped.metadata["seq"] = 3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stamped.source = "other"  # type: ignore[misc]
