"""How the memory cache judges a stored value's copies (``PayloadCopies.copy_flags``): a small
dict is judged large-or-flat in one pass, and says exactly what ``is_large`` and ``is_flat``
say of it."""

from __future__ import annotations

from typing import Any

import pytest
from tests.doubles import fresh_value

from coalestra.cache._copying import LARGE_PAYLOAD_ITEMS, PayloadCopies, is_large
from coalestra.cache._store import FLAT, SLOW_COPY, is_flat
from coalestra.core import PayloadIsolator, ResourceKey

KEY = ResourceKey("market", "price", "AAPL")
BIG = list(range(LARGE_PAYLOAD_ITEMS + 1))

PAYLOADS: list[Any] = [
    {"bid": 1.0, "venue": "x"},  # flat
    {"symbol": "x", "price": 101.5, "levels": [1, 2, 3]},  # small, not flat
    {"rows": BIG},  # a small dict holding a large table
    {"a": [1] * 200, "b": [2] * 60},  # large only counted together
    {(1, 2): 3},  # a key that is no shared atom: not flat
    {str(n): n for n in range(20)},  # more items than one pass looks at: flat
    {str(n): [n] * 40 for n in range(20)},  # sampled, large
    [1, 2, 3],
    list(range(LARGE_PAYLOAD_ITEMS + 5)),
]


def expected(payload: Any, offload_large: bool) -> int:
    if offload_large and is_large(payload):
        return SLOW_COPY
    return FLAT if is_flat(payload) else 0


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("run_in_thread", [None, False])
def test_copy_flags_say_what_is_large_and_is_flat_say(
    payload: Any, run_in_thread: bool | None
) -> None:
    copies = PayloadCopies(PayloadIsolator(), run_in_thread=run_in_thread, max_concurrency=1)
    value = fresh_value(KEY, payload, 0.0)
    assert copies.copy_flags(value) == expected(payload, run_in_thread is None)


def test_every_copy_is_slow_when_every_copy_runs_in_a_thread() -> None:
    copies = PayloadCopies(PayloadIsolator(), run_in_thread=True, max_concurrency=1)
    assert copies.copy_flags(fresh_value(KEY, {"bid": 1.0}, 0.0)) == SLOW_COPY


def test_mutable_metadata_makes_a_copy_slow() -> None:
    copies = PayloadCopies(PayloadIsolator(), run_in_thread=None, max_concurrency=1)
    value = fresh_value(KEY, {"bid": 1.0}, 0.0, metadata={"tags": ["a"]})
    assert copies.copy_flags(value) == SLOW_COPY


def test_a_value_noted_as_copied_inline_is_only_judged_flat() -> None:
    copies = PayloadCopies(PayloadIsolator(), run_in_thread=None, max_concurrency=1)
    value = fresh_value(KEY, {"rows": BIG}, 0.0)
    copies.kept_inline(value)
    assert copies.copy_flags(value) == 0  # not judged large again: known to copy inline
    assert copies.copy_flags(value) == SLOW_COPY  # the note is used once


@pytest.mark.parametrize("container", [list, tuple, set, frozenset, dict.fromkeys])
@pytest.mark.parametrize(
    ("inner", "large"), [(LARGE_PAYLOAD_ITEMS - 8, False), (LARGE_PAYLOAD_ITEMS - 7, True)]
)
def test_a_small_dict_counts_its_items_and_those_of_every_container_in_it(
    container: Any, inner: int, large: bool
) -> None:
    payload: dict[str, Any] = {str(n): n for n in range(7)}
    payload["rows"] = container(range(inner))  # the eighth item: every value is looked at
    assert is_large(payload) is large
