"""SourcePayload, SnapshotValue, CacheLookup, CacheWriteResult and FetchContext."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import pickle
from typing import Any

import pytest
from tests.doubles import in_forked_child, needs_fork

from coalestra.core import (
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    FetchContext,
    ResourceKey,
    SnapshotValue,
    SourcePayload,
)
from coalestra.testing import VirtualClock

KEY = ResourceKey("market", "price", "BTCUSDT")
DEP = ResourceKey("market", "price", "ETHUSDT")


def make_value(**overrides: Any) -> SnapshotValue[Any]:
    fields: dict[str, Any] = {
        "key": KEY,
        "value": {"price": "1"},
        "source": "rest",
        "observed_at": 100.0,
        "fetched_at": 101.0,
        "age_seconds": 1.0,
        "stale": False,
        "from_cache": False,
        "latency_ms": 5.0,
    }
    fields.update(overrides)
    return SnapshotValue(**fields)


class ManualClock:
    """A Clock whose time moves only when the test says so."""

    def __init__(self, now: float = 1000.0, monotonic: float = 50.0) -> None:
        self.wall = now
        self.mono = monotonic

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


# --- SourcePayload -----------------------------------------------------------------------------


def test_source_payload_defaults() -> None:
    payload = SourcePayload([1, 2])
    assert payload.value == [1, 2]
    assert payload.observed_at is None
    assert payload.metadata == {}


def test_source_payload_metadata_is_a_read_only_copy() -> None:
    metadata = {"sequence": 1}
    payload = SourcePayload("v", observed_at=5, metadata=metadata)
    metadata["sequence"] = 2
    assert payload.metadata == {"sequence": 1}
    with pytest.raises(TypeError):
        payload.metadata["sequence"] = 3  # type: ignore[index]
    assert payload.observed_at == 5.0
    assert isinstance(payload.observed_at, float)


@pytest.mark.parametrize("observed_at", [math.nan, math.inf, "soon", object()])
def test_source_payload_rejects_bad_observed_at(observed_at: Any) -> None:
    with pytest.raises(ValueError, match="observed_at"):
        SourcePayload("v", observed_at=observed_at)


def test_source_payload_rejects_non_mapping_metadata() -> None:
    with pytest.raises(TypeError, match="metadata"):
        SourcePayload("v", metadata=[("a", 1)])  # type: ignore[arg-type]


def test_source_payload_is_frozen() -> None:
    payload = SourcePayload("v")
    with pytest.raises(dataclasses.FrozenInstanceError):
        payload.value = "w"  # type: ignore[misc]


def test_subscripted_generic_construction() -> None:
    # typing sets __orig_class__ after SourcePayload[int](...); a frozen slots class must refuse
    # that with AttributeError (which typing ignores), not TypeError.
    assert SourcePayload[int](5).value == 5
    value = SnapshotValue[dict[str, str]](KEY, {"a": "b"}, "s", 1.0, 1.0, 0.0, False, False, 0.0)
    assert value.value == {"a": "b"}
    with pytest.raises(AttributeError):
        SourcePayload(1).other = 2  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del SourcePayload(1).value


# --- SnapshotValue -----------------------------------------------------------------------------


def test_snapshot_value_fields_and_defaults() -> None:
    value = make_value()
    assert value.key == KEY
    assert value.attempts == 1
    assert value.metadata == {}
    assert value.authority_rank == 0
    assert value.dependency_versions == {}
    assert isinstance(value.version, str)
    assert value.version


def test_versions_are_unique() -> None:
    versions = {make_value().version for _ in range(1000)}
    assert len(versions) == 1000


def test_explicit_version_is_kept() -> None:
    assert make_value(version="v-1").version == "v-1"


@needs_fork
def test_versions_are_unique_across_forked_processes() -> None:
    make_value()  # the parent has handed out versions before forking
    child_version = in_forked_child(lambda: make_value().version)
    parent_version = make_value().version
    assert child_version != parent_version


def test_metadata_is_read_only_and_copied_from_the_callers_dict() -> None:
    metadata: dict[str, Any] = {"sequence": 1}
    value = make_value(metadata=metadata)
    metadata["sequence"] = 2
    metadata["new"] = True
    assert value.metadata == {"sequence": 1}
    with pytest.raises(TypeError):
        value.metadata["sequence"] = 5  # type: ignore[index]
    with pytest.raises(TypeError):
        value.metadata.clear()  # type: ignore[attr-defined]


def test_dependency_versions_are_read_only_and_copied() -> None:
    versions = {DEP: "v1"}
    value = make_value(dependency_versions=versions)
    versions[DEP] = "v2"
    assert value.dependency_versions == {DEP: "v1"}
    with pytest.raises(TypeError):
        value.dependency_versions[DEP] = "v3"  # type: ignore[index]


def test_snapshot_value_is_frozen() -> None:
    value = make_value()
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.stale = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("key", "market:price", TypeError),
        ("source", "", ValueError),
        ("source", 5, TypeError),
        ("observed_at", math.nan, ValueError),
        ("observed_at", math.inf, ValueError),
        ("observed_at", "now", ValueError),
        ("fetched_at", math.nan, ValueError),
        ("fetched_at", None, ValueError),
        ("age_seconds", math.nan, ValueError),
        ("stale", 1, TypeError),
        ("from_cache", "yes", TypeError),
        ("latency_ms", -1.0, ValueError),
        ("latency_ms", math.inf, ValueError),
        ("attempts", -1, ValueError),
        ("attempts", 1.5, TypeError),
        ("attempts", True, TypeError),
        ("metadata", ["a"], TypeError),
        ("authority_rank", 1.0, TypeError),
        ("version", "", ValueError),
        ("version", 7, TypeError),
        ("dependency_versions", {"market:price": "v"}, TypeError),
        ("dependency_versions", {DEP: ""}, ValueError),
        ("dependency_versions", {DEP: 3}, TypeError),
    ],
)
def test_snapshot_value_validates_every_field(field: str, bad: Any, error: type[Exception]) -> None:
    # The message names the field (or, for dependency_versions entries, what is wrong).
    expected = {"dependency_versions": "dependency version|key"}.get(field, field)
    with pytest.raises(error, match=expected):
        make_value(**{field: bad})


def test_negative_authority_rank_is_allowed() -> None:
    assert make_value(authority_rank=-5).authority_rank == -5


def test_snapshot_value_pickles_and_deep_copies() -> None:
    value = make_value(metadata={"m": [1]}, dependency_versions={DEP: "v1"}, version="x")
    for clone in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
        assert clone == value
        assert clone.value is not value.value
        with pytest.raises(TypeError):
            clone.metadata["m"] = 2  # type: ignore[index]


def test_snapshot_value_field_order() -> None:
    assert [item.name for item in dataclasses.fields(SnapshotValue)] == [
        "key",
        "value",
        "source",
        "observed_at",
        "fetched_at",
        "age_seconds",
        "stale",
        "from_cache",
        "latency_ms",
        "attempts",
        "metadata",
        "authority_rank",
        "version",
        "dependency_versions",
    ]


# --- CacheLookup -------------------------------------------------------------------------------


def test_cache_lookup_hit_and_miss() -> None:
    value = make_value()
    fresh = CacheLookup(value, fresh=True, usable_stale=False, age_seconds=1.0)
    assert fresh.value is value
    stale = CacheLookup(value, fresh=False, usable_stale=True, age_seconds=9.0)
    assert stale.usable_stale
    miss = CacheLookup(None, fresh=False, usable_stale=False)
    assert miss.value is None
    assert miss.age_seconds is None
    expired = CacheLookup(value, fresh=False, usable_stale=False, age_seconds=99.0)
    assert expired.value is value


@pytest.mark.parametrize(("fresh", "usable_stale"), [(True, False), (False, True), (True, True)])
def test_a_miss_cannot_be_fresh_or_usable(fresh: bool, usable_stale: bool) -> None:
    with pytest.raises(ValueError, match="fresh"):
        CacheLookup(None, fresh=fresh, usable_stale=usable_stale)


def test_cache_lookup_validation() -> None:
    with pytest.raises(TypeError, match="value"):
        CacheLookup("payload", fresh=False, usable_stale=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fresh"):
        CacheLookup(make_value(), fresh=1, usable_stale=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="age_seconds"):
        CacheLookup(make_value(), fresh=True, usable_stale=False, age_seconds=math.nan)


# --- CacheWriteResult --------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(CacheWriteStatus))
def test_cache_write_result_stored_only_for_stored(status: CacheWriteStatus) -> None:
    result = CacheWriteResult(status, make_value())
    assert result.stored is (status is CacheWriteStatus.STORED)
    assert result.previous is None


def test_cache_write_result_accepts_the_status_value_and_previous() -> None:
    previous = make_value(observed_at=50.0)
    result = CacheWriteResult("ignored_older", make_value(), previous)  # type: ignore[arg-type]
    assert result.status is CacheWriteStatus.IGNORED_OLDER
    assert not result.stored
    assert result.previous is previous


def test_cache_write_result_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        CacheWriteResult("written", make_value())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        CacheWriteResult(CacheWriteStatus.STORED, "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="previous"):
        CacheWriteResult(CacheWriteStatus.STORED, make_value(), "old")  # type: ignore[arg-type]


def test_cache_write_status_members() -> None:
    assert {member.name: member.value for member in CacheWriteStatus} == {
        "STORED": "stored",
        "IGNORED_LOWER_AUTHORITY": "ignored_lower_authority",
        "IGNORED_OLDER": "ignored_older",
        "IGNORED_DUPLICATE": "ignored_duplicate",
    }
    assert CacheWriteStatus("stored") is CacheWriteStatus.STORED
    assert isinstance(CacheWriteStatus.STORED, str)


# --- FetchContext ------------------------------------------------------------------------------


def test_fetch_context_without_deadline() -> None:
    clock = ManualClock()
    context = FetchContext(requested_at=clock.now())
    assert context.remaining_seconds(clock) is None
    assert not context.expired(clock)
    clock.advance(1e9)
    assert not context.expired(clock)
    assert context.snapshot_id == ""
    assert context.metadata == {}


def test_fetch_context_remaining_and_expired_with_a_manual_clock() -> None:
    clock = ManualClock(now=1000.0, monotonic=50.0)
    context = FetchContext(
        requested_at=clock.now(), deadline_at=1003.0, deadline_monotonic=53.0, snapshot_id="s-1"
    )
    assert context.remaining_seconds(clock) == 3.0
    assert not context.expired(clock)
    clock.advance(2.5)
    assert context.remaining_seconds(clock) == 0.5
    assert not context.expired(clock)
    clock.advance(0.5)
    assert context.remaining_seconds(clock) == 0.0
    assert context.expired(clock)
    clock.advance(10.0)
    assert context.remaining_seconds(clock) == 0.0  # never negative
    assert context.expired(clock)


def test_fetch_context_reads_the_monotonic_clock_not_wall_time() -> None:
    clock = ManualClock(now=1000.0, monotonic=50.0)
    context = FetchContext(requested_at=1000.0, deadline_at=1003.0, deadline_monotonic=53.0)
    clock.wall -= 3600.0  # the wall clock jumps back: the deadline does not move
    assert context.remaining_seconds(clock) == 3.0
    clock.wall += 7200.0
    assert not context.expired(clock)


async def test_fetch_context_expires_on_virtual_time(clock: VirtualClock) -> None:
    context = FetchContext(
        requested_at=clock.now(),
        deadline_at=clock.now() + 2.0,
        deadline_monotonic=clock.monotonic() + 2.0,
    )
    await asyncio.sleep(1.5)
    assert context.remaining_seconds(clock) == pytest.approx(0.5)
    await asyncio.sleep(0.5)
    assert context.expired(clock)


def test_fetch_context_metadata_is_a_read_only_copy() -> None:
    metadata = {"tenant": "example"}
    context = FetchContext(requested_at=1.0, metadata=metadata)
    metadata["tenant"] = "other"
    assert context.metadata == {"tenant": "example"}
    with pytest.raises(TypeError):
        context.metadata["tenant"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("requested_at", math.nan, ValueError),
        ("requested_at", None, ValueError),
        ("deadline_at", math.inf, ValueError),
        ("deadline_monotonic", "soon", ValueError),
        ("snapshot_id", 5, TypeError),
        ("metadata", "tenant", TypeError),
    ],
)
def test_fetch_context_validation(field: str, bad: Any, error: type[Exception]) -> None:
    arguments: dict[str, Any] = {"requested_at": 1.0, field: bad}
    with pytest.raises(error, match=field):
        FetchContext(**arguments)


def test_fetch_context_pickles() -> None:
    context = FetchContext(requested_at=1.0, deadline_at=2.0, metadata={"a": 1}, snapshot_id="x")
    assert pickle.loads(pickle.dumps(context)) == context
