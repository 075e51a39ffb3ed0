"""The entry flags a store gives a value are the same whether it is stored alone (``put``) or
with others (``put_many``, which judges them inline): for every kind of value, with and without
a judge of copies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.doubles import fresh_value

from coalestra.cache._store import DERIVED, FLAT, MUTABLE, SLOW_COPY, MemoryStore
from coalestra.core import ResourceKey, SnapshotValue

KEYS = [ResourceKey("market", "price", str(n)) for n in range(4)]
DEP = ResourceKey("market", "price", "dep")


def judge(flags: int) -> Callable[[SnapshotValue[Any]], int]:
    return lambda _value: flags


@pytest.mark.parametrize("copy_flags", [None, judge(0), judge(FLAT), judge(SLOW_COPY)])
@pytest.mark.parametrize("deps", [None, {DEP: "v1"}])
def test_put_many_gives_each_value_the_flags_put_gives_it(
    copy_flags: Callable[[SnapshotValue[Any]], int] | None, deps: dict[ResourceKey, str] | None
) -> None:
    staged = [
        (fresh_value(key, {"n": [n]}, 0.0, deps=deps), mutable, flat)
        for n, (key, (mutable, flat)) in enumerate(
            zip(KEYS, [(True, False), (True, True), (False, False), (True, False)], strict=True)
        )
    ]
    alone, together = MemoryStore(None, copy_flags), MemoryStore(None, copy_flags)
    for value, mutable, flat in staged:
        alone.put(value, mutable, flat)
    together.put_many(staged)

    assert together._table.recent == alone._table.recent
    assert together.sets == alone.sets == 4
    first = together._table.recent[KEYS[0]]
    assert type(first) is tuple
    assert first[1] & MUTABLE
    assert bool(first[1] & DERIVED) is (deps is not None)
