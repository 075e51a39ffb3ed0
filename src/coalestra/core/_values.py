"""Immutable values that flow through a build: payloads, snapshot values, fetch context (cache
results: :mod:`._lookups`)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, final

from ._clock import Clock
from ._keys import ResourceKey
from ._validation import (
    EMPTY_MAPPING,
    check_bool,
    check_float,
    check_int,
    check_optional_timestamp,
    check_str,
    check_timestamp,
    frozen_generic,
    frozen_mapping,
)

T = TypeVar("T")

# Versions are opaque: a per-process random prefix plus a counter is unique across processes
# (for shared cache tiers) and costs a counter step, not a uuid, per write (the revisions of
# distinct keys written together share one: see core._versions).
_VERSION_PREFIX = os.urandom(5).hex()
_version_counter = itertools.count(1)


def _reseed_versions() -> None:
    # A forked child inherits the prefix *and* the counter position, so parent and child would
    # hand out identical versions (e.g. multiprocessing workers sharing a cache tier, where a
    # derived value's dependency version could then match a different revision). New prefix.
    global _VERSION_PREFIX, _version_counter
    _VERSION_PREFIX = os.urandom(5).hex()
    _version_counter = itertools.count(1)


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_reseed_versions)


def new_version() -> str:
    """Return a new opaque resource version, unique across processes."""
    return f"{_VERSION_PREFIX}-{next(_version_counter):x}"


def _check_key(value: object) -> ResourceKey:
    if not isinstance(value, ResourceKey):
        raise TypeError(f"key must be a ResourceKey, got {type(value).__name__}")
    return value


def _check_version(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"version must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("version cannot be empty")
    return value


@final
@frozen_generic  # so that SourcePayload[T](...) works, see frozen_generic
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
                self, "observed_at", check_timestamp("observed_at", self.observed_at)
            )
        object.__setattr__(self, "metadata", frozen_mapping("metadata", self.metadata))


def wrap_payload(value: Any) -> SourcePayload[Any]:
    """``SourcePayload(value)`` without validation (nothing to validate): sources often return
    bare values, and the miss path wraps one per key. The fields are filled in through their
    slot descriptors: half the cost of ``object.__setattr__`` on the frozen class."""
    payload: SourcePayload[Any] = _new(SourcePayload)
    _set_payload_value(payload, value)
    _set_payload_observed_at(payload, None)
    _set_payload_metadata(payload, EMPTY_MAPPING)
    return payload


_set_payload_value = SourcePayload.__dict__["value"].__set__
_set_payload_observed_at = SourcePayload.__dict__["observed_at"].__set__
_set_payload_metadata = SourcePayload.__dict__["metadata"].__set__


@final
@frozen_generic  # so that SnapshotValue[T](...) works, see frozen_generic
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
        latency_ms: how long the source call that produced the value took (kept on cache hits;
            0 for publications).
        attempts: source attempts made (retries included).
        metadata: read-only source metadata.
        authority_rank: the authority rank the revision was written with.
        version: an opaque revision identifier: a new revision of the key gets a version the
            key never had (revisions of other keys written with it may share it).
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
    # Revision bookkeeping, not content: two values that differ only here compare equal.
    authority_rank: int = field(default=0, compare=False)
    version: str = field(default_factory=new_version, compare=False)
    dependency_versions: Mapping[ResourceKey, str] = field(
        default_factory=lambda: EMPTY_MAPPING, compare=False
    )

    def __post_init__(self) -> None:
        _check_key(self.key)
        check_str("source", self.source)
        setattr_ = object.__setattr__
        setattr_(self, "observed_at", check_timestamp("observed_at", self.observed_at))
        setattr_(self, "fetched_at", check_timestamp("fetched_at", self.fetched_at))
        check_float("age_seconds", self.age_seconds, minimum=None)
        check_bool("stale", self.stale)
        check_bool("from_cache", self.from_cache)
        check_float("latency_ms", self.latency_ms)
        check_int("attempts", self.attempts, minimum=0)
        check_int("authority_rank", self.authority_rank, minimum=None)
        _check_version(self.version)
        setattr_(self, "metadata", frozen_mapping("metadata", self.metadata))
        versions = frozen_mapping("dependency_versions", self.dependency_versions)
        for dep, version in versions.items():
            _check_key(dep)
            check_str("dependency version", version)
        setattr_(self, "dependency_versions", versions)

    @classmethod
    def _trusted(
        cls,
        key: ResourceKey,
        value: Any,
        source: str,
        observed_at: float,
        fetched_at: float,
        age_seconds: float,
        stale: bool,
        latency_ms: float,
        attempts: int,
        metadata: Mapping[str, Any],
        authority_rank: int,
        dependency_versions: Mapping[ResourceKey, str],
        version: str | None = None,
    ) -> SnapshotValue[Any]:
        """Build a fresh (not from cache) value from parts the engine already validated.

        The miss path makes one value per key; skipping ``__post_init__`` there saves most of
        its cost. ``metadata`` and ``dependency_versions`` must already be read-only. ``version``
        (default: a new one) may be shared only with new revisions of *other* keys.
        """
        # Filled in as a mutable draft and retyped (see _evolve): ~4x cheaper than 14
        # object.__setattr__ calls, and the publisher makes one value per publication.
        new = _SnapshotValueDraft()
        new.key = key
        new.value = value
        new.source = source
        new.observed_at = observed_at
        new.fetched_at = fetched_at
        new.age_seconds = age_seconds
        new.stale = stale
        new.from_cache = False
        new.latency_ms = latency_ms
        new.attempts = attempts
        new.metadata = metadata
        new.authority_rank = authority_rank
        if version is None:
            version = f"{_VERSION_PREFIX}-{next(_version_counter):x}"  # new_version(), inline
        new.version = version
        new.dependency_versions = dependency_versions
        new.__class__ = cls
        return new  # type: ignore[no-any-return]  # retyped: a SnapshotValue

    def _evolve(
        self, value: Any, *, age_seconds: float, stale: bool, from_cache: bool
    ) -> SnapshotValue[Any]:
        """Copy with a new payload object and read-time fields, skipping validation.

        The hot cache-hit path calls this once per key. ``object.__setattr__`` on a frozen slotted
        dataclass costs ~90 ns per field (1.4 us for 14 fields), so the copy is filled in as a
        mutable draft of identical slot layout and then retyped (see ``_SnapshotValueDraft``).
        """
        new = _SnapshotValueDraft()
        new.key = self.key
        new.value = value
        new.source = self.source
        new.observed_at = self.observed_at
        new.fetched_at = self.fetched_at
        new.age_seconds = age_seconds
        new.stale = stale
        new.from_cache = from_cache
        new.latency_ms = self.latency_ms
        new.attempts = self.attempts
        new.metadata = self.metadata
        new.authority_rank = self.authority_rank
        new.version = self.version
        new.dependency_versions = self.dependency_versions
        new.__class__ = SnapshotValue
        return new  # type: ignore[no-any-return]  # retyped: a SnapshotValue

    def _served(
        self,
        now: float,
        age_seconds: float,
        stale: bool,
        metadata: Mapping[str, Any] | None = None,
    ) -> SnapshotValue[Any]:
        """This cached revision as a build serves it at ``now``: ``from_cache=True``,
        ``fetched_at=now``, the given age and staleness, ``latency_ms=0.0``, and ``metadata``
        (already read-only) when given; payload and every other field shared unchanged (hot
        path: no validation, see :meth:`_evolve`)."""
        new = _SnapshotValueDraft()
        new.key = self.key
        new.value = self.value
        new.source = self.source
        new.observed_at = self.observed_at
        new.fetched_at = now
        new.age_seconds = age_seconds
        new.stale = stale
        new.from_cache = True
        new.latency_ms = 0.0
        new.attempts = self.attempts
        new.metadata = self.metadata if metadata is None else metadata
        new.authority_rank = self.authority_rank
        new.version = self.version
        new.dependency_versions = self.dependency_versions
        new.__class__ = SnapshotValue
        return new  # type: ignore[no-any-return]  # retyped: a SnapshotValue

    @staticmethod
    def _draft_type() -> type[Any]:
        """The draft of this class (see ``_SnapshotValueDraft``): a subclass of the same layout
        taking plain stores. Call it, fill in every field, then set ``__class__`` to
        ``SnapshotValue``; only for a value nobody else holds yet."""
        return _SnapshotValueDraft


_new = object.__new__


def draft_of(frozen: type[Any]) -> type[Any]:
    """A draft of a frozen slotted dataclass: a subclass of the same layout (no slot added)
    that takes plain attribute stores. The fast constructors call it (``__init__`` is
    object's: ~35 ns less than ``object.__new__``), fill in every field, then set
    ``__class__`` to the frozen class; only for a value nobody else holds yet.

    Plain stores on it are ~10x cheaper than ``object.__setattr__`` on the frozen class. Why a
    subclass rather than a twin class of the same slots: CPython compares a twin's slots with
    the class's on every ``__class__`` assignment, and skips that for a subclass adding none
    (~22 ns instead of ~60 per value). The frozen class's (refusing) ``__setattr__`` and
    ``__delattr__`` are replaced by object's: stores are then the plain slot stores CPython
    specializes (both must go for the type's setattr slot to be plain).
    """
    namespace = {
        "__slots__": (),
        "__init__": object.__init__,
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
        "__doc__": f"A {frozen.__name__} while it is filled in (see draft_of).",
    }
    return type(f"_{frozen.__name__}Draft", (frozen,), namespace)


_SnapshotValueDraft = draft_of(SnapshotValue)


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
        setattr_ = object.__setattr__
        setattr_(self, "requested_at", check_timestamp("requested_at", self.requested_at))
        setattr_(self, "deadline_at", check_optional_timestamp("deadline_at", self.deadline_at))
        setattr_(
            self,
            "deadline_monotonic",
            check_optional_timestamp("deadline_monotonic", self.deadline_monotonic),
        )
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
