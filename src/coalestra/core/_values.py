"""Immutable values that flow through a build: payloads, snapshot values, cache results, context."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar, final

from ._clock import Clock
from ._keys import ResourceKey
from ._validation import (
    EMPTY_MAPPING,
    check_bool,
    check_enum,
    check_float,
    check_int,
    check_optional_float,
    check_str,
    frozen_mapping,
)

T = TypeVar("T")

# Versions are opaque: a per-process random prefix plus a counter is unique across processes
# (for shared cache tiers) and costs a counter step, not a uuid, per value.
_VERSION_PREFIX = os.urandom(5).hex()
_version_counter = itertools.count(1)


def new_version() -> str:
    """Return a new opaque resource version, unique across processes."""
    return f"{_VERSION_PREFIX}-{next(_version_counter):x}"


def _check_key(value: object) -> ResourceKey:
    if not isinstance(value, ResourceKey):
        raise TypeError(f"key must be a ResourceKey, got {type(value).__name__}")
    return value


def _check_timestamp(name: str, value: object) -> float:
    return check_float(name, value, minimum=None)


@final
@dataclass(frozen=True, slots=True)
class SourcePayload(Generic[T]):
    """What a source returns for one key: the value, when it was observed, and metadata.

    ``observed_at`` is wall-clock seconds; ``None`` means "now" (the fetch time). Sources may also
    return a bare value, which is wrapped as ``SourcePayload(value)``.
    """

    value: T
    observed_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)

    def __post_init__(self) -> None:
        if self.observed_at is not None:
            object.__setattr__(
                self, "observed_at", _check_timestamp("observed_at", self.observed_at)
            )
        object.__setattr__(self, "metadata", frozen_mapping("metadata", self.metadata))


@final
@dataclass(frozen=True, slots=True)
class SnapshotValue(Generic[T]):
    """One resolved resource with its provenance.

    Attributes:
        key: the resource.
        value: the payload (isolated: mutating it changes no cache entry or other snapshot).
        source: the source (or publisher) that produced it.
        observed_at: wall-clock time the source observed the value.
        fetched_at: wall-clock time it was fetched or published.
        age_seconds: ``now - observed_at`` when it was put in this snapshot.
        stale: it was past its TTL (served within the stale window or on error).
        from_cache: it came from the cache rather than a source call in this build.
        latency_ms: how long the source call took (0 for cache hits and publications).
        attempts: source attempts made (retries included).
        metadata: read-only source metadata.
        authority_rank: the authority rank the revision was written with.
        version: an opaque revision identifier; a new revision gets a new version.
        dependency_versions: for derived values, the version of each dependency used.
    """

    key: ResourceKey
    value: T
    source: str
    observed_at: float
    fetched_at: float
    age_seconds: float
    stale: bool
    from_cache: bool
    latency_ms: float
    attempts: int = 1
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)
    authority_rank: int = 0
    version: str = field(default_factory=new_version)
    dependency_versions: Mapping[ResourceKey, str] = field(default_factory=lambda: EMPTY_MAPPING)

    def __post_init__(self) -> None:
        _check_key(self.key)
        check_str("source", self.source)
        _check_timestamp("observed_at", self.observed_at)
        _check_timestamp("fetched_at", self.fetched_at)
        check_float("age_seconds", self.age_seconds, minimum=None)
        check_bool("stale", self.stale)
        check_bool("from_cache", self.from_cache)
        check_float("latency_ms", self.latency_ms)
        check_int("attempts", self.attempts, minimum=0)
        check_int("authority_rank", self.authority_rank, minimum=None)
        check_str("version", self.version)
        setattr_ = object.__setattr__
        setattr_(self, "metadata", frozen_mapping("metadata", self.metadata))
        versions = frozen_mapping("dependency_versions", self.dependency_versions)
        for dep, version in versions.items():
            _check_key(dep)
            check_str("dependency version", version)
        setattr_(self, "dependency_versions", versions)

    def _evolve(
        self, value: Any, *, age_seconds: float, stale: bool, from_cache: bool
    ) -> SnapshotValue[Any]:
        """Copy with a new payload object and read-time fields, skipping validation.

        The hot cache-hit path calls this once per key, so it sets slots directly instead of going
        through ``dataclasses.replace`` (which re-runs ``__init__`` and ``__post_init__``).
        """
        new: SnapshotValue[Any] = object.__new__(SnapshotValue)
        setattr_ = object.__setattr__
        setattr_(new, "key", self.key)
        setattr_(new, "value", value)
        setattr_(new, "source", self.source)
        setattr_(new, "observed_at", self.observed_at)
        setattr_(new, "fetched_at", self.fetched_at)
        setattr_(new, "age_seconds", age_seconds)
        setattr_(new, "stale", stale)
        setattr_(new, "from_cache", from_cache)
        setattr_(new, "latency_ms", self.latency_ms)
        setattr_(new, "attempts", self.attempts)
        setattr_(new, "metadata", self.metadata)
        setattr_(new, "authority_rank", self.authority_rank)
        setattr_(new, "version", self.version)
        setattr_(new, "dependency_versions", self.dependency_versions)
        return new


@final
@dataclass(frozen=True, slots=True)
class CacheLookup:
    """The answer of a cache read for one key.

    ``value`` is ``None`` on a miss. ``fresh`` means within TTL; ``usable_stale`` means past TTL
    but within the stale window. ``age_seconds`` is the value's age at the read.
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


def make_lookup(
    value: SnapshotValue[Any], fresh: bool, usable_stale: bool, age: float
) -> CacheLookup:
    """Build a :class:`CacheLookup` from already-valid parts without re-validating (hot path)."""
    lookup: CacheLookup = object.__new__(CacheLookup)
    setattr_ = object.__setattr__
    setattr_(lookup, "value", value)
    setattr_(lookup, "fresh", fresh)
    setattr_(lookup, "usable_stale", usable_stale)
    setattr_(lookup, "age_seconds", age)
    return lookup


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

    @property
    def stored(self) -> bool:
        """True when the offered value was written."""
        return self.status is CacheWriteStatus.STORED


@final
@dataclass(frozen=True, slots=True)
class FetchContext:
    """Per-build context handed to every source call.

    Attributes:
        requested_at: wall-clock time the build started.
        deadline_at: wall-clock deadline, or ``None`` for no deadline.
        deadline_monotonic: the same deadline on the monotonic clock (what waits use).
        metadata: read-only caller metadata (``build(metadata=...)``).
        snapshot_id: the id of the snapshot being built.
    """

    requested_at: float
    deadline_at: float | None = None
    deadline_monotonic: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)
    snapshot_id: str = ""

    def __post_init__(self) -> None:
        _check_timestamp("requested_at", self.requested_at)
        check_optional_float("deadline_at", self.deadline_at, minimum=None)
        check_optional_float("deadline_monotonic", self.deadline_monotonic, minimum=None)
        check_str("snapshot_id", self.snapshot_id, allow_empty=True)
        object.__setattr__(self, "metadata", frozen_mapping("metadata", self.metadata))

    def remaining_seconds(self, clock: Clock) -> float | None:
        """Seconds left before the deadline (never negative), or ``None`` without a deadline."""
        if self.deadline_monotonic is None:
            return None
        return max(0.0, self.deadline_monotonic - clock.monotonic())

    def expired(self, clock: Clock) -> bool:
        """True once the deadline has passed."""
        remaining = self.remaining_seconds(clock)
        return remaining is not None and remaining <= 0.0
