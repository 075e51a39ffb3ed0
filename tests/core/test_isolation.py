"""Payload isolation: immutables are shared, everything else is copied or refused."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, NoReturn
from uuid import UUID

import pytest

from coalestra.core import (
    PayloadIsolationError,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    deepcopy_payload,
)

KEY = ResourceKey("market", "price", "BTCUSDT")


class Uncopyable:
    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise RuntimeError("this object holds a socket")


class Recorder:
    """A custom copier that records what it was asked to copy."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, value: Any) -> Any:
        self.calls.append(value)
        return copy.deepcopy(value)


def make_value(payload: Any, metadata: dict[str, Any] | None = None) -> SnapshotValue[Any]:
    return SnapshotValue(
        KEY,
        payload,
        "rest",
        100.0,
        101.0,
        1.0,
        False,
        False,
        2.0,
        metadata=metadata or {},
        version="v-7",
        dependency_versions={ResourceKey("exchange", "info"): "v-3"},
    )


IMMUTABLES: list[Any] = [
    None,
    0,
    -12,
    10**40,
    1.5,
    True,
    "text",
    b"bytes",
    (),
    (1, "a", b"b", None),
    ((1, 2), ("x", (None, 3.5))),
    frozenset({1, "a"}),
    frozenset({(1, 2), frozenset({3})}),
    (frozenset({1}), ("nested", ("deeper", ("deepest",)))),
    Decimal("1.10"),
    Fraction(1, 3),
    UUID(int=7),
    date(2024, 1, 2),
    datetime(2024, 1, 2, 3, 4, tzinfo=timezone.utc),
    timedelta(seconds=5),
    1 + 2j,
    range(3),
]


@pytest.mark.parametrize("payload", IMMUTABLES, ids=repr)
def test_immutables_are_shared_by_the_builtin_copier_and_given_to_a_custom_one(
    payload: Any,
) -> None:
    assert PayloadIsolator().copy(payload, context="ctx") is payload
    assert not PayloadIsolator().needs_copy(payload)
    copier = Recorder()  # B-CACHE-11: a custom copier sees every payload, immutable ones too
    isolator = PayloadIsolator(copier)
    isolator.copy(payload, context="ctx")
    assert copier.calls == [payload]
    assert isolator.needs_copy(payload)


MUTABLES: list[Any] = [
    [1, 2],
    {"price": "1"},
    {1, 2},
    bytearray(b"abc"),
    ([1], 2),
    (1, (2, [3])),
    ({"a": 1},),
    frozenset({(1, 2)}) | frozenset({("x", Recorder)}),  # a class is not a proven atom
]


@pytest.mark.parametrize("payload", MUTABLES, ids=repr)
def test_mutable_payloads_are_copied(payload: Any) -> None:
    isolator = PayloadIsolator()
    clone = isolator.copy(payload, context="ctx")
    assert clone == payload
    assert clone is not payload
    assert isolator.needs_copy(payload)


def test_copies_are_deep_and_independent() -> None:
    payload: dict[str, Any] = {"levels": [[1, 2], [3, 4]], "meta": {"tags": {"a"}}}
    clone = PayloadIsolator().copy(payload, context="ctx")
    clone["levels"][0].append(99)
    clone["meta"]["tags"].add("b")
    assert payload == {"levels": [[1, 2], [3, 4]], "meta": {"tags": {"a"}}}


def test_tuple_holding_a_list_is_copied_deeply() -> None:
    inner = [1]
    payload = ("label", inner)
    clone = PayloadIsolator().copy(payload, context="ctx")
    assert clone is not payload
    assert clone[1] is not inner
    assert clone == payload


def test_subclasses_of_immutable_types_are_copied() -> None:
    class Tagged(str):
        pass

    class Record(tuple[int, int]):
        pass

    for payload in (Tagged("x"), Record((1, 2))):
        assert PayloadIsolator().needs_copy(payload)


def test_large_tuples_are_copied_rather_than_walked() -> None:
    # Proving immutability is bounded; beyond the bound a tuple is handed to the copier,
    # which must still return an equal payload.
    copier = Recorder()
    payload = tuple(range(10_000))
    clone = PayloadIsolator(copier).copy(payload, context="ctx")
    assert clone == payload
    assert copier.calls == [payload]


def test_custom_copier_is_used_for_mutable_payloads() -> None:
    calls: list[object] = []

    def copier(value: Any) -> Any:
        calls.append(value)
        return {"copied": True}

    payload = {"original": True}
    isolator = PayloadIsolator(copier)
    assert isolator.copy(payload, context="ctx") == {"copied": True}
    assert calls == [payload]
    assert isolator.copier is copier


def test_default_copier_is_deepcopy_payload() -> None:
    assert PayloadIsolator().copier is deepcopy_payload


def test_copier_must_be_callable() -> None:
    with pytest.raises(TypeError, match="payload_copier"):
        PayloadIsolator("deepcopy")  # type: ignore[arg-type]


def test_uncopyable_payload_raises_payload_isolation_error() -> None:
    payload = {"connection": Uncopyable()}
    with pytest.raises(PayloadIsolationError) as caught:
        PayloadIsolator().copy(payload, context="source 'rest' for market:price:BTCUSDT")
    error = caught.value
    assert error.context == "source 'rest' for market:price:BTCUSDT"
    assert error.value_type == "dict"
    assert "source 'rest' for market:price:BTCUSDT" in str(error)
    assert "dict" in str(error)
    assert isinstance(error.__cause__, RuntimeError)


def test_failing_custom_copier_raises_payload_isolation_error() -> None:
    def copier(value: Any) -> Any:
        raise ValueError("model_copy failed")

    with pytest.raises(PayloadIsolationError, match="publisher") as caught:
        PayloadIsolator(copier).copy([1], context="publisher")
    assert caught.value.value_type == "list"


def test_deepcopy_payload() -> None:
    payload = {"a": [1, {"b": 2}]}
    clone = deepcopy_payload(payload)
    assert clone == payload
    assert clone is not payload
    assert clone["a"] is not payload["a"]
    with pytest.raises(RuntimeError):
        deepcopy_payload(Uncopyable())


# --- metadata ----------------------------------------------------------------------------------


def test_copy_metadata_returns_a_new_dict_of_isolated_values() -> None:
    metadata = {"sequence": 7, "tags": ["a"], "frame": (1, 2)}
    copied = PayloadIsolator().copy_metadata(metadata, context="ctx")
    assert copied == metadata
    assert type(copied) is dict
    assert copied is not metadata
    assert copied["tags"] is not metadata["tags"]
    assert copied["frame"] is metadata["frame"]
    copied["tags"].append("b")
    assert metadata["tags"] == ["a"]


def test_copy_metadata_names_the_failing_entry() -> None:
    with pytest.raises(PayloadIsolationError) as caught:
        PayloadIsolator().copy_metadata({"ok": 1, "conn": Uncopyable()}, context="publish")
    assert caught.value.context == "publish metadata 'conn'"
    assert caught.value.value_type == "Uncopyable"


# --- clone_snapshot_value ----------------------------------------------------------------------


def test_clone_copies_the_payload_and_keeps_provenance() -> None:
    value = make_value({"price": "1"})
    clone = PayloadIsolator().clone_snapshot_value(value, context="ctx")
    assert clone == value
    assert clone is not value
    assert clone.value is not value.value
    clone.value["price"] = "2"
    assert value.value == {"price": "1"}
    assert clone.version == "v-7"
    assert clone.dependency_versions == value.dependency_versions


def test_clone_shares_immutable_payload_and_metadata() -> None:
    value = make_value(("a", 1), {"sequence": 7, "frame": ("x",)})
    clone = PayloadIsolator().clone_snapshot_value(value, context="ctx")
    assert clone.value is value.value
    assert clone.metadata is value.metadata


def test_clone_copies_mutable_metadata() -> None:
    value = make_value(1, {"sequence": 7, "tags": ["a"]})
    clone = PayloadIsolator().clone_snapshot_value(value, context="ctx")
    assert clone.metadata == value.metadata
    assert clone.metadata is not value.metadata
    assert clone.metadata["tags"] is not value.metadata["tags"]
    clone.metadata["tags"].append("b")
    assert value.metadata["tags"] == ["a"]
    with pytest.raises(TypeError):
        clone.metadata["sequence"] = 8  # type: ignore[index]


def test_clone_overrides_read_time_fields() -> None:
    value = make_value([1])
    clone = PayloadIsolator().clone_snapshot_value(
        value,
        context="ctx",
        fetched_at=200.0,
        age_seconds=9.0,
        stale=True,
        from_cache=True,
        latency_ms=0.0,
        metadata={"clock_skew_seconds": 0.25, "path": ["a"]},
    )
    assert clone.fetched_at == 200.0
    assert clone.age_seconds == 9.0
    assert clone.stale is True
    assert clone.from_cache is True
    assert clone.latency_ms == 0.0
    assert clone.metadata == {"clock_skew_seconds": 0.25, "path": ["a"]}
    assert (clone.observed_at, clone.source, clone.version) == (100.0, "rest", "v-7")
    assert value.fetched_at == 101.0
    assert value.stale is False


def test_clone_copies_given_metadata() -> None:
    given = {"path": ["a"]}
    clone = PayloadIsolator().clone_snapshot_value(make_value(1), context="ctx", metadata=given)
    given["path"].append("b")
    assert clone.metadata == {"path": ["a"]}


def test_clone_with_a_custom_copier() -> None:
    copier = Recorder()
    value = make_value([1], {"tags": ["x"]})
    clone = PayloadIsolator(copier).clone_snapshot_value(value, context="ctx")
    assert copier.calls == [[1]]  # metadata is deep-copied with copy.deepcopy, never the copier
    assert clone.metadata == {"tags": ["x"]}
    assert clone.metadata["tags"] is not value.metadata["tags"]


def test_clone_of_an_uncopyable_payload() -> None:
    value = make_value(Uncopyable())
    with pytest.raises(PayloadIsolationError) as caught:
        PayloadIsolator().clone_snapshot_value(value, context="cache read market:price")
    assert caught.value.context == "cache read market:price"


def test_clone_of_uncopyable_metadata_names_the_entry() -> None:
    value = make_value(1, {"conn": Uncopyable()})
    with pytest.raises(PayloadIsolationError) as caught:
        PayloadIsolator().clone_snapshot_value(value, context="cache read")
    assert caught.value.context == "cache read metadata 'conn'"
