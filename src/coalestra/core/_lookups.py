"""What a cache answers: :class:`CacheLookup` (a read) and :class:`CacheWriteResult` (a
conditional write)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, final

from ._validation import check_bool, check_enum, check_optional_float
from ._values import SnapshotValue

_new = object.__new__


@final
@dataclass(frozen=True, slots=True)
class CacheLookup:
    """The answer of a cache read for one key.

    ``value`` is ``None`` on a miss. ``fresh`` means within TTL (``age <= ttl_seconds``);
    ``usable_stale`` means the value may be served at all (``age <= max_stale_seconds``), so it
    is True on fresh hits too. ``age_seconds`` is the value's age at the read (also given on a
    miss that dropped an expired or invalid entry).
    """

    value: SnapshotValue[Any] | None
    fresh: bool
    usable_stale: bool
    age_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.value is not None and not isinstance(self.value, SnapshotValue):
            raise TypeError(f"value must be a SnapshotValue or None, got {type(self.value)}")
        check_bool("fresh", self.fresh)
        check_bool("usable_stale", self.usable_stale)
        check_optional_float("age_seconds", self.age_seconds, minimum=None)
        if self.value is None and (self.fresh or self.usable_stale):
            raise ValueError("a lookup without a value cannot be fresh or usable_stale")

    @property
    def hit(self) -> bool:
        """True when the value is usable (fresh or usable stale)."""
        return self.fresh or self.usable_stale


MISS = CacheLookup(None, False, False, None)


class _CacheLookupDraft:
    """A mutable twin of :class:`CacheLookup`, retyped once filled (as ``_SnapshotValueDraft``)."""

    __slots__ = CacheLookup.__slots__
    value: SnapshotValue[Any] | None
    fresh: bool
    usable_stale: bool
    age_seconds: float | None


def make_lookup(
    value: SnapshotValue[Any], fresh: bool, usable_stale: bool, age: float
) -> CacheLookup:
    """Build a :class:`CacheLookup` from already-valid parts without re-validating (hot path)."""
    lookup = _new(_CacheLookupDraft)
    lookup.value = value
    lookup.fresh = fresh
    lookup.usable_stale = usable_stale
    lookup.age_seconds = age
    lookup.__class__ = CacheLookup  # type: ignore[assignment]
    return lookup  # type: ignore[return-value]


class CacheWriteStatus(str, Enum):
    """What a conditional cache write did."""

    STORED = "stored"
    IGNORED_LOWER_AUTHORITY = "ignored_lower_authority"
    IGNORED_OLDER = "ignored_older"
    IGNORED_DUPLICATE = "ignored_duplicate"


@final
@dataclass(frozen=True, slots=True)
class CacheWriteResult:
    """The outcome of ``set_if_newer``: ``value`` is what the caller offered, ``previous`` what
    the cache held before (``None`` if nothing)."""

    status: CacheWriteStatus
    value: SnapshotValue[Any]
    previous: SnapshotValue[Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", check_enum("status", self.status, CacheWriteStatus))
        if not isinstance(self.value, SnapshotValue):
            raise TypeError("value must be a SnapshotValue")
        # ``previous`` is read by publishers and events; a wrong type would fail far from here.
        if self.previous is not None and not isinstance(self.previous, SnapshotValue):
            raise TypeError("previous must be a SnapshotValue or None")

    @property
    def stored(self) -> bool:
        """True when the offered value was written."""
        return self.status is CacheWriteStatus.STORED
