"""Argument checks shared by every public constructor and method.

Each helper raises a ``TypeError`` or ``ValueError`` whose message names the argument and the
accepted range, so bad input fails at the call that made it, never later on the hot path.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import FrozenInstanceError
from enum import Enum
from typing import Any, NoReturn, TypeVar, cast

E = TypeVar("E", bound=Enum)
C = TypeVar("C", bound=type)
T = TypeVar("T")


def _type_name(value: object) -> str:
    return type(value).__name__


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` when it is a real ``bool``; ints are refused to catch swapped arguments."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a boolean, got {_type_name(value)}")
    return value


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_type_name(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_optional_int(name: str, value: object, *, minimum: int | None = None) -> int | None:
    """Like :func:`check_int`, letting ``None`` through."""
    return None if value is None else check_int(name, value, minimum=minimum)


def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = 0.0,
    positive: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a finite float (``inf`` only with ``allow_inf``) in range.

    ``minimum`` is inclusive; ``positive=True`` additionally refuses zero. The messages use the
    0.6.4 phrasings: ``"<name> must be finite"`` (NaN or inf), or ``"<name> cannot be NaN"``
    where ``inf`` is a valid value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {_type_name(value)}")
    result = float(value)
    if math.isnan(result) and allow_inf:
        raise ValueError(f"{name} cannot be NaN")
    if not allow_inf and not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result!r}")
    if positive and result <= 0.0:
        raise ValueError(f"{name} must be > 0, got {result!r}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result!r}")
    return result


def check_optional_float(
    name: str, value: object, *, minimum: float | None = 0.0, positive: bool = False
) -> float | None:
    """Like :func:`check_float`, letting ``None`` through."""
    if value is None:
        return None
    return check_float(name, value, minimum=minimum, positive=positive)


def check_timestamp(name: str, value: object) -> float:
    """Return ``value`` converted with ``float()``; it must be finite (so ``123`` -> ``123.0``).

    Timestamps and time spans accept whatever ``float()`` accepts (ints, Decimals, numpy
    scalars), as the 0.5 API did, so only unconvertible and non-finite values are refused.
    """
    # ``x - x == 0.0`` holds only for a finite float: one cheap test covers the common case.
    if value.__class__ is float and value - value == 0.0:
        return value
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a finite number") from None
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite")
    return result


def check_optional_timestamp(name: str, value: object) -> float | None:
    """Like :func:`check_timestamp`, letting ``None`` through."""
    return None if value is None else check_timestamp(name, value)


def check_source_name(value: object) -> str:
    """Return a source name stripped of surrounding whitespace; blank names are refused."""
    if not isinstance(value, str):
        raise TypeError(f"source name must be a str, got {_type_name(value)}")
    name = value.strip()
    if not name:
        raise ValueError("source name cannot be empty")
    return name


def check_str(name: str, value: object, *, allow_empty: bool = False) -> str:
    """Return ``value`` when it is a string (non-blank unless ``allow_empty``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {_type_name(value)}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


def tuple_of(
    name: str, value: object, kind: type[T], *, holds: str = "contain only"
) -> tuple[T, ...]:
    """Return the items of ``value``, an iterable of ``kind`` instances (not a string, nor one
    ``kind`` on its own), as a tuple.

    Raises:
        TypeError: ``"<name> must be an iterable of <kind>"``, or for a wrong item
            ``"<name> must <holds> <kind>, got <type>"``.
    """
    if isinstance(value, (str, bytes, kind)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of {kind.__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, kind):
            raise TypeError(f"{name} must {holds} {kind.__name__}, got {_type_name(item)}")
    return items


def check_enum(name: str, value: object, enum_type: type[E]) -> E:
    """Return ``value`` as a member of ``enum_type``; its string value is accepted too."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        accepted = ", ".join(repr(member.value) for member in enum_type)
        raise ValueError(f"{name} must be one of {accepted}, got {value!r}") from None


def check_callable(name: str, value: object) -> Any:
    """Return ``value`` when it can be called."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {_type_name(value)}")
    return value


K = TypeVar("K")
V = TypeVar("V")


class ReadOnlyDict(dict[K, V]):
    """A dict that refuses mutation: as fast to read as a dict, and unlike ``MappingProxyType``
    it can be pickled and deep-copied (snapshots and errors travel between processes)."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("this mapping is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __copy__(self) -> ReadOnlyDict[K, V]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadOnlyDict[K, V]:
        return ReadOnlyDict(copy.deepcopy(dict(self), memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReadOnlyDict, (dict(self),))

    def __repr__(self) -> str:
        return f"ReadOnlyDict({dict.__repr__(self)})"


EMPTY_MAPPING: Mapping[Any, Any] = ReadOnlyDict()


def frozen_mapping(name: str, value: object) -> Mapping[Any, Any]:
    """Return a read-only copy of ``value`` (a mapping), so later caller edits change nothing."""
    if value is None:
        return EMPTY_MAPPING
    kind = type(value)
    if kind is ReadOnlyDict:
        return cast("ReadOnlyDict[Any, Any]", value)  # private and immutable: share it
    if kind is dict:
        return ReadOnlyDict(cast("dict[Any, Any]", value)) if value else EMPTY_MAPPING
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, got {_type_name(value)}")
    if not value:
        return EMPTY_MAPPING
    return ReadOnlyDict(value)


def frozen_table(
    name: str, value: object, check_entry: Callable[[str, Any], object]
) -> Mapping[str, Any]:
    """:func:`frozen_mapping` of a table keyed by non-blank strings; each entry is checked by
    ``check_entry(label, entry)``, the label being ``name[key]``."""
    table = frozen_mapping(name, value)
    for key, entry in table.items():
        check_str(f"{name} key", key)
        check_entry(f"{name}[{key!r}]", entry)
    return table


def _refuse_setattr(self: object, name: str, value: object) -> NoReturn:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_delattr(self: object, name: str) -> NoReturn:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def frozen_generic(cls: C) -> C:
    """Make a ``dataclass(frozen=True, slots=True)`` generic refuse every assignment with
    ``FrozenInstanceError`` (an ``AttributeError``).

    Apply it above ``@dataclass``. On CPython 3.11 the generated ``__setattr__`` still refers to
    the class as it was before ``slots=True`` rebuilt it, so assigning any non-field attribute
    raised ``TypeError`` from ``super()``. ``typing`` assigns ``__orig_class__`` after
    ``SourcePayload[int](...)`` and tolerates only ``AttributeError``, so subscripted
    construction of a generic value type failed.
    """
    type.__setattr__(cls, "__setattr__", _refuse_setattr)
    type.__setattr__(cls, "__delattr__", _refuse_delattr)
    return cls


# -- checks in the shape ``(name, value) -> value`` (the builder's option checks) --------------


def at_least_one(name: str, value: object) -> int:
    """A limit: an int of at least 1."""
    return _limit(name, value, optional=False)  # type: ignore[return-value]  # not optional


def at_least_one_or_none(name: str, value: object) -> int | None:
    """An optional limit: ``None`` or an int of at least 1."""
    return _limit(name, value, optional=True)


def _limit(name: str, value: object, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        accepted = "an integer or None" if optional else "an integer"
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1" + (" or None" if optional else ""))
    return value


def positive_seconds_or_none(name: str, value: object) -> float | None:
    """``None`` or a finite number of seconds ``> 0``."""
    return check_optional_float(name, value, positive=True)


def seconds_or_none(name: str, value: object) -> float | None:
    """``None`` or a finite number of seconds ``>= 0``."""
    return check_optional_float(name, value, positive=False)


def seconds(name: str, value: object) -> float:
    """A finite number of seconds ``>= 0`` (a grace)."""
    return check_float(name, value, minimum=0.0)


def instance_or_none(kind: type[T]) -> Callable[[str, object], T | None]:
    """A check: ``None`` or an instance of ``kind``."""

    def check(name: str, value: object) -> T | None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        return value

    return check
