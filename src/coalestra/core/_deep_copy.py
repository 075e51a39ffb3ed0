"""A deep copy specialised for JSON-shaped payloads, with the results of ``copy.deepcopy``.

Payloads are mostly dicts, lists and tuples of strings and numbers. ``copy.deepcopy`` copies
them through a generic dispatch (a memo lookup, a type lookup and a call per item), which makes
the copy the largest cost of a cache hit. :func:`deep_copy` walks exact ``dict``, ``list`` and
``tuple`` itself and shares the immutable atoms (``str``, ``int``, ``float``, ``bool``,
``None``, ``bytes`` ... the same objects ``copy.deepcopy`` returns as they are, plus dates,
decimals and UUIDs, which nobody can mutate). Anything else -- a subclass, a set, a custom
object -- goes to ``copy.deepcopy`` for that sub-value, so ``__deepcopy__`` hooks, ``__reduce__``
and their errors behave exactly as before.

Shared references and cycles come out as ``copy.deepcopy`` makes them: every container is
recorded in one memo (``id(original) -> copy``, the format ``copy.deepcopy`` uses, and the very
memo handed to it for the fallbacks), so two references to one list inside a payload stay two
references to one copied list, and a list that contains itself is copied once. The memo is only
made when a container holds another container: a flat container (atoms only, the common case)
can hold no reference twice nor itself, and is copied by one C-level shallow copy.
"""

from __future__ import annotations

import copy
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar
from uuid import UUID

T = TypeVar("T")

SHARED: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        range,
        Decimal,
        Fraction,
        UUID,
        date,
        datetime,
        time,
        timedelta,
    }
)
"""Immutable types shared instead of copied (exact types: a subclass may add mutable state)."""

_Memo = dict[int, Any]


def deep_copy(value: T) -> T:
    """Return a deep copy of ``value``, equal in result to ``copy.deepcopy(value)``.

    A dict of atoms (keys too) and flat lists or dicts (of atoms only), each held once -- a
    record with a list of levels, say -- is copied in one pass, each of those by its own
    ``copy()`` (as ``copy.deepcopy`` copies them: no container can appear twice or hold
    another), without a memo; any other container, by the general walk.

    Raises:
        Exception: whatever ``copy.deepcopy`` raises for a sub-value it cannot copy.
    """
    kind = type(value)
    shared = SHARED
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            if type(item) not in shared:
                return _copy_list(value, {})  # type: ignore[arg-type,return-value]
        return value.copy()  # type: ignore[attr-defined,no-any-return]
    if kind is not dict:
        return value if kind in shared else _copy(value, {})
    result = value.copy()  # type: ignore[attr-defined]
    held: int | set[int] | None = None  # the ids of the containers copied so far
    for key, item in value.items():  # type: ignore[attr-defined]
        kind = type(item)
        if kind in shared and type(key) in shared:
            continue
        if kind in shared or type(key) not in shared:
            return _copy_dict(value, {})  # type: ignore[arg-type,return-value]
        if kind is list:
            for inner in item:  # a plain loop: faster than issuperset(map(...)) on short lists
                if type(inner) not in shared:
                    return _copy_dict(value, {})  # type: ignore[arg-type,return-value]
        elif not (
            kind is dict
            and shared.issuperset(map(type, item.values()))
            and shared.issuperset(map(type, item))
        ):
            return _copy_dict(value, {})  # type: ignore[arg-type,return-value]
        ident = id(item)
        if held is None:
            held = ident
        else:
            if type(held) is int:
                held = {held}
            if ident in held:  # type: ignore[operator]
                return _copy_dict(value, {})  # type: ignore[arg-type,return-value]  # held twice
            held.add(ident)  # type: ignore[union-attr]
        result[key] = item.copy()
    return result  # type: ignore[no-any-return]


def _copy(value: Any, memo: _Memo) -> Any:
    """Copy a value that is not a shared atom, through ``memo``."""
    found = memo.get(id(value), memo)
    if found is not memo:
        return found
    kind = type(value)
    if kind is dict:
        return _copy_dict(value, memo)
    if kind is list:
        return _copy_list(value, memo)
    if kind is tuple:
        return _copy_tuple(value, memo)
    return copy.deepcopy(value, memo)


def _copy_dict(value: dict[Any, Any], memo: _Memo) -> dict[Any, Any]:
    shared = SHARED
    result: dict[Any, Any] = {}
    memo[id(value)] = result
    for key, item in value.items():
        if type(key) not in shared:
            key = _copy(key, memo)
        kind = type(item)
        if kind in shared:
            result[key] = item
        elif kind is list and id(item) not in memo:  # the common nesting, one call less
            result[key] = _copy_list(item, memo)
        else:
            result[key] = _copy(item, memo)
    return result


def _copy_list(value: list[Any], memo: _Memo) -> list[Any]:
    shared = SHARED
    result: list[Any] = []
    memo[id(value)] = result
    append = result.append
    for item in value:
        kind = type(item)
        if kind in shared:
            append(item)
        elif kind is dict and id(item) not in memo:  # a list of records, one call less each
            append(_copy_dict(item, memo))
        else:
            append(_copy(item, memo))
    return result


def _copy_tuple(value: tuple[Any, ...], memo: _Memo) -> tuple[Any, ...]:
    # As copy.deepcopy: a tuple whose items all copy to themselves is returned as it is, and a
    # tuple reached again while its items were copied (through a cycle) is that first copy.
    shared = SHARED
    items = [item if type(item) in shared else _copy(item, memo) for item in value]
    found = memo.get(id(value), memo)
    if found is not memo:
        return found  # type: ignore[no-any-return]
    for item, copied in zip(value, items, strict=True):
        if item is not copied:
            result = tuple(items)
            break
    else:
        return value  # its own copy: not memoized, as copy.deepcopy does
    memo[id(value)] = result
    return result
