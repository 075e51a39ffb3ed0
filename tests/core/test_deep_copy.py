"""The built-in payload copier (``deepcopy_payload``) against ``copy.deepcopy``.

The copier walks JSON-shaped data itself and hands anything else to ``copy.deepcopy``; these
properties pin that the results are the same: equal values of the same types, containers shared
or aliased exactly where ``copy.deepcopy`` shares or aliases them (cycles included), and no
mutable container of the original reachable from the copy.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    FreshnessPolicy,
    PayloadIsolationError,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    deepcopy_payload,
)

# Types copy.deepcopy returns as they are: both copiers must return the very object.
_ATOMIC = (type(None), bool, int, float, complex, str, bytes)
# Immutable types the built-in copier may share where copy.deepcopy makes an equal new object.
_IMMUTABLE = (datetime, Decimal, frozenset)


class Point:
    """A custom object: copied by copy.deepcopy (through __reduce_ex__)."""

    def __init__(self, x: Any) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


class Tagged(dict[str, Any]):
    """A dict subclass: not JSON-shaped, so copied by copy.deepcopy."""


class Hooked:
    """Counts its __deepcopy__ calls: a fallback must still call the hook, once per object."""

    calls = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> Hooked:
        Hooked.calls += 1
        return Hooked()


class KeyObject:
    """A hashable custom object (identity hash): copy.deepcopy makes a new, unequal key."""


atoms = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=5)
    | st.binary(max_size=3)
    | st.complex_numbers(allow_nan=False)
)
others = (
    st.sampled_from([datetime(2026, 1, 2, tzinfo=timezone.utc), Decimal("1.5")])
    | st.frozensets(st.integers(), max_size=3)
    | st.sets(st.integers(), max_size=3)
    | st.integers().map(Point)
    | st.just(KeyObject())
)
keys = st.text(max_size=4) | st.integers() | st.tuples(st.integers(), st.text(max_size=2))


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.dictionaries(keys, children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3), children, max_size=3).map(Tagged)
        | st.dictionaries(st.text(max_size=3), children, max_size=3).map(OrderedDict)
        | children.map(Point)
    )


json_like = st.recursive(atoms, containers, max_leaves=20)
payloads = st.recursive(atoms | others, containers, max_leaves=20)


def _mutables(value: Any, found: dict[int, Any]) -> dict[int, Any]:
    """Every mutable container reachable from ``value`` (by id), cycles included."""
    if type(value) in _ATOMIC or id(value) in found:
        return found
    if isinstance(value, (dict, list, set, Point, KeyObject)):
        found[id(value)] = value
    if isinstance(value, dict):
        for key, item in value.items():
            _mutables(key, found)
            _mutables(item, found)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _mutables(item, found)
    elif isinstance(value, Point):
        _mutables(value.x, found)
    return found


def _deeply_immutable(value: Any) -> bool:
    if isinstance(value, (_ATOMIC, _IMMUTABLE)):
        return True
    return type(value) is tuple and all(_deeply_immutable(item) for item in value)


def assert_same_result(
    original: Any, expected: Any, actual: Any, pairs: dict[int, Any] | None = None
) -> None:
    """``actual`` has the types, values and reference structure of ``expected``: where
    ``expected`` returns a part of ``original`` as it is, or reaches one copy twice, so does
    ``actual`` (an immutable part may be shared by ``actual`` alone)."""
    pairs = {} if pairs is None else pairs
    assert type(actual) is type(expected)
    if isinstance(expected, _IMMUTABLE) and not isinstance(expected, frozenset):
        # Shared or copied, an immutable atom is equal; its identity says nothing (the JSON
        # walk shares it, copy.deepcopy inside a custom object may copy it).
        assert actual == expected
        return
    if id(expected) in pairs:  # reached before: the same copy again (aliasing, cycles)
        assert pairs[id(expected)] is actual
        return
    pairs[id(expected)] = actual
    if isinstance(expected, _ATOMIC):
        assert actual is expected is original
        return
    if actual is original:
        # A tuple of immutables is shared where copy.deepcopy rebuilds it around copied atoms.
        assert expected is original or _deeply_immutable(original)
    else:
        assert expected is not original
    if isinstance(expected, dict):
        assert len(actual) == len(expected)
        for (ok, ov), (ek, ev), (ak, av) in zip(
            original.items(), expected.items(), actual.items(), strict=True
        ):
            assert_same_result(ok, ek, ak, pairs)
            assert_same_result(ov, ev, av, pairs)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for triple in zip(original, expected, actual, strict=True):
            assert_same_result(*triple, pairs)
    elif isinstance(expected, Point):
        assert_same_result(original.x, expected.x, actual.x, pairs)
    elif not isinstance(expected, KeyObject):  # sets, frozensets: equal members
        assert actual == expected


def add_references(value: Any, data: st.DataObject) -> Any:
    """Make ``value`` refer to its own containers again: shared references and cycles."""
    mutable = [item for item in _mutables(value, {}).values() if type(item) in (list, dict)]
    if mutable:
        for _ in range(data.draw(st.integers(0, 3))):
            target = data.draw(st.sampled_from(mutable))
            reference = data.draw(st.sampled_from(mutable))
            if type(target) is list:
                target.append(reference)
            else:
                target[f"ref{len(target)}"] = reference
    return value


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_json_payloads_copy_as_deepcopy_does(payload: Any) -> None:
    assert_same_result(payload, copy.deepcopy(payload), deepcopy_payload(payload))


@settings(max_examples=300, deadline=None)
@given(payloads, st.data())
def test_shared_references_and_cycles_copy_as_deepcopy_does(
    payload: Any, data: st.DataObject
) -> None:
    payload = add_references(payload, data)
    assert_same_result(payload, copy.deepcopy(payload), deepcopy_payload(payload))


@settings(max_examples=200, deadline=None)
@given(payloads, st.data())
def test_no_mutable_part_of_the_original_is_reachable_from_the_copy(
    payload: Any, data: st.DataObject
) -> None:
    payload = add_references(payload, data)
    original = _mutables(payload, {})
    copied = _mutables(deepcopy_payload(payload), {})
    assert not set(original) & set(copied)


@settings(max_examples=200, deadline=None)
@given(st.recursive(atoms, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c)))
def test_mutating_the_copy_leaves_the_original_as_it_was(payload: Any) -> None:
    before = copy.deepcopy(payload)
    clone = deepcopy_payload(payload)
    for container in _mutables(clone, {}).values():
        if type(container) is list:
            container.append("added")
        elif type(container) is dict:
            container["added"] = ["added"]
    assert repr(payload) == repr(before)


def test_flat_small_dict_is_a_new_equal_dict() -> None:
    payload = {"bid": 1.0, "ask": 1.1, "venue": "x", "ts": 123}
    clone = deepcopy_payload(payload)
    assert clone == payload
    assert clone is not payload
    assert list(clone) == list(payload)


def test_one_list_referenced_twice_is_copied_once() -> None:
    levels = [1, 2]
    clone = deepcopy_payload({"bids": levels, "asks": levels, "all": [levels]})
    assert clone["bids"] is clone["asks"] is clone["all"][0]
    assert clone["bids"] is not levels


def test_a_list_containing_itself_is_copied_once() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    clone = deepcopy_payload(loop)
    assert clone is not loop
    assert clone[1] is clone


def test_a_cycle_through_a_tuple_copies_as_deepcopy_does() -> None:
    inner: list[Any] = []
    record = (inner, "x")
    inner.append(record)
    clone = deepcopy_payload({"record": record})
    expected = copy.deepcopy({"record": record})
    assert_same_result({"record": record}, expected, clone)
    assert clone["record"][0][0] is clone["record"]


def test_tuples_of_atoms_are_shared_and_tuples_holding_lists_are_copied() -> None:
    frozen = (1, "a", (2.0, None))
    holding = (1, [2])
    clone = deepcopy_payload([frozen, holding])
    assert clone[0] is frozen
    assert clone[1] is not holding
    assert clone[1] == holding
    assert clone[1][1] is not holding[1]


def test_other_types_go_through_deepcopy_with_the_same_memo() -> None:
    Hooked.calls = 0
    hook = Hooked()
    clone = deepcopy_payload({"a": hook, "b": [hook], "tagged": Tagged(x=[1])})
    assert Hooked.calls == 1  # one object, one copy, shared by both references
    assert clone["a"] is clone["b"][0]
    assert type(clone["tagged"]) is Tagged
    assert clone["tagged"] == {"x": [1]}


def test_an_object_key_is_copied_as_deepcopy_does() -> None:
    key = KeyObject()
    clone = deepcopy_payload({key: 1})
    expected = copy.deepcopy({key: 1})
    assert_same_result({key: 1}, expected, clone)
    assert key not in clone


def test_an_uncopyable_part_raises_what_deepcopy_raises() -> None:
    class Uncopyable:
        def __deepcopy__(self, memo: dict[int, Any]) -> Any:
            raise RuntimeError("holds a socket")

    with pytest.raises(RuntimeError, match="socket"):
        deepcopy_payload({"rows": [1, {"socket": Uncopyable()}]})
    with pytest.raises(PayloadIsolationError) as caught:
        PayloadIsolator().copy([Uncopyable()], context="ctx")
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_cache_reads_return_independent_copies_of_nested_payloads() -> None:
    key = ResourceKey("market", "book", "BTC")
    levels = [[1.0, 2.0]]
    payload = {"bids": levels, "asks": levels, "venue": "x"}
    cache = AsyncMemoryCache()
    await cache.set(SnapshotValue(key, payload, "s", 1.0, 1.0, 0.0, False, False, 0.0))
    policy = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0)
    read = (await cache.get(key, now=2.0, policy=policy)).value
    assert read is not None
    assert read.value == payload
    assert read.value["bids"] is read.value["asks"]
    read.value["bids"][0].append(3.0)
    again = (await cache.get(key, now=2.0, policy=policy)).value
    assert again is not None
    assert again.value["bids"] == [[1.0, 2.0]]
    assert payload["bids"] == [[1.0, 2.0]]
