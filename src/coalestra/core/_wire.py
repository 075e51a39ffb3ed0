"""Turning health values into JSON-safe data: the normalization ``BuilderHealth.to_dict`` uses.

The rules are part of the wire format (schema ``coalestra.builder-health`` version 1): the result
of :func:`to_wire` always passes ``json.dumps(..., allow_nan=False)``, whatever a custom cache or
sink put into a health snapshot.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence, Set
from enum import Enum
from typing import Any, Final

_NON_FINITE: Final = {math.inf: "infinity", -math.inf: "-infinity"}


def qualified_name(value: object) -> str:
    """``"<module>.<qualname>"`` of ``value``'s type: how an opaque value is shown."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def to_wire(value: object) -> Any:
    """``value`` as plain JSON data (see the module docstring and ``docs/health.md``).

    ``None``/str/int/bool as is; finite floats as is, NaN and the infinities as the strings
    ``"nan"``, ``"infinity"``, ``"-infinity"``; enums as their value; mappings as dicts keyed
    by ``str(key)`` in that string's order; dataclasses as dicts by field; sets as sorted
    lists; other sequences as lists; anything else as ``{"type": "<module>.<qualname>"}``; a
    container met again inside itself as ``{"type": ..., "cycle": True}``.
    """
    return _normalize(value, set())


def _normalize(value: object, path: set[int]) -> Any:
    # Enums first: a str or int enum would otherwise pass as its base type.
    if isinstance(value, Enum):
        return _normalize(value.value, path)
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return _NON_FINITE.get(value, value)
    if not _is_container(value):
        return {"type": qualified_name(value)}
    if id(value) in path:
        return {"type": qualified_name(value), "cycle": True}
    path.add(id(value))
    try:
        return _container(value, path)
    finally:
        path.discard(id(value))


def _is_container(value: object) -> bool:
    if isinstance(value, (Mapping, Set)):
        return True
    if isinstance(value, Sequence):
        return not isinstance(value, (bytes, bytearray))  # str never gets here
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _container(value: object, path: set[int]) -> Any:
    if isinstance(value, Mapping):
        items = {str(key): item for key, item in value.items()}
        return {key: _normalize(items[key], path) for key in sorted(items)}
    if isinstance(value, Set):
        return _sorted([_normalize(item, path) for item in value])
    if isinstance(value, Sequence):
        return [_normalize(item, path) for item in value]
    return {
        field.name: _normalize(getattr(value, field.name), path)
        for field in dataclasses.fields(value)  # type: ignore[arg-type]
    }


def _sorted(items: list[Any]) -> list[Any]:
    """Sorted when the items compare (one kind), else by their ``repr`` (mixed kinds)."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)
