"""Snapshots, the requests that make them, and per-build diagnostics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast, final, overload

from ._acceptance import SnapshotAcceptancePolicy
from ._key_tuple import key_tuple as key_tuple  # re-exported: entry points import it here
from ._keys import ResourceKey
from ._policies import SnapshotConsistencyPolicy
from ._validation import (
    EMPTY_MAPPING,
    ReadOnlyDict,
    check_float,
    check_int,
    check_str,
    check_timestamp,
    frozen_mapping,
)
from ._values import SnapshotValue

T = TypeVar("T")


@final
@dataclass(frozen=True, slots=True)
class SnapshotDiagnostics:
    """What one build did: counts, per-source calls and latency, duration and observation skew."""

    duration_ms: float = 0.0
    requested_resources: int = 0
    resolved_resources: int = 0
    failed_resources: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_batch_reads: int = 0
    cache_batch_writes: int = 0
    stale_values: int = 0
    coalesced_requests: int = 0
    source_calls: int = 0
    batch_calls: int = 0
    derived_calls: int = 0
    refresh_scheduled: int = 0
    refresh_completed: int = 0
    refresh_failed: int = 0
    support_cache_hits: int = 0
    support_cache_misses: int = 0
    retries: int = 0
    batch_chunks: int = 0
    future_timestamp_rejections: int = 0
    observation_skew_ms: float = 0.0
    source_calls_by_source: Mapping[str, int] = field(default_factory=lambda: EMPTY_MAPPING)
    source_latency_ms_by_source: Mapping[str, float] = field(default_factory=lambda: EMPTY_MAPPING)

    def __post_init__(self) -> None:
        # The numeric fields are listed once (below the class), in order: a build's diagnostics
        # are checked without scanning the dataclass fields each time.
        for name, counter in _NUMBERS:
            if counter:
                check_int(name, getattr(self, name), minimum=0)
            else:
                check_float(name, getattr(self, name))
        setattr_ = object.__setattr__
        setattr_(
            self,
            "source_calls_by_source",
            frozen_mapping("source_calls_by_source", self.source_calls_by_source),
        )
        setattr_(
            self,
            "source_latency_ms_by_source",
            frozen_mapping("source_latency_ms_by_source", self.source_latency_ms_by_source),
        )


_COUNTERS = tuple(item.name for item in fields(SnapshotDiagnostics) if item.type == "int")
_NUMBERS = tuple(
    (item.name, item.type == "int")
    for item in fields(SnapshotDiagnostics)
    if item.type in ("int", "float")
)


class DiagnosticsCollector:
    """Mutable per-build counters, frozen into :class:`SnapshotDiagnostics` at the end.

    One collector belongs to one build (or one session stage); the engine reports into it with
    plain attribute increments, which cost nothing measurable on the hot path.
    """

    # Not slotted: every counter starts as the class's 0 (set below), so a new collector
    # assigns nothing but its two tables; the first increment of a counter makes it its own.

    requested_resources: int
    resolved_resources: int
    failed_resources: int
    cache_hits: int
    cache_misses: int
    cache_batch_reads: int
    cache_batch_writes: int
    stale_values: int
    coalesced_requests: int
    source_calls: int
    batch_calls: int
    derived_calls: int
    refresh_scheduled: int
    refresh_completed: int
    refresh_failed: int
    support_cache_hits: int
    support_cache_misses: int
    retries: int
    batch_chunks: int
    future_timestamp_rejections: int

    def __init__(self) -> None:
        self.source_calls_by_source: dict[str, int] = {}
        self.source_latency_ms_by_source: dict[str, float] = {}

    def add(self, counter: str, amount: int = 1) -> None:
        """Add ``amount`` to the named counter."""
        setattr(self, counter, getattr(self, counter) + amount)

    def record_source_call(self, source: str, latency_ms: float) -> None:
        """Count one call to ``source`` that took ``latency_ms``."""
        calls = self.source_calls_by_source
        calls[source] = calls.get(source, 0) + 1
        latency = self.source_latency_ms_by_source
        latency[source] = latency.get(source, 0.0) + latency_ms

    def freeze(self, *, duration_ms: float, observation_skew_ms: float) -> SnapshotDiagnostics:
        """Return the immutable diagnostics for the finished build."""
        # Built without SnapshotDiagnostics' checks (every counter here is an int the engine
        # counted) as a mutable twin of its slots, then retyped: plain stores cost a quarter of
        # object.__setattr__ on the frozen class (a build's largest fixed cost otherwise).
        draft: Any = _new(_DiagnosticsDraft)
        draft.duration_ms = max(float(duration_ms), 0.0)
        draft.requested_resources = self.requested_resources
        draft.resolved_resources = self.resolved_resources
        draft.failed_resources = self.failed_resources
        draft.cache_hits = self.cache_hits
        draft.cache_misses = self.cache_misses
        draft.cache_batch_reads = self.cache_batch_reads
        draft.cache_batch_writes = self.cache_batch_writes
        draft.stale_values = self.stale_values
        draft.coalesced_requests = self.coalesced_requests
        draft.source_calls = self.source_calls
        draft.batch_calls = self.batch_calls
        draft.derived_calls = self.derived_calls
        draft.refresh_scheduled = self.refresh_scheduled
        draft.refresh_completed = self.refresh_completed
        draft.refresh_failed = self.refresh_failed
        draft.support_cache_hits = self.support_cache_hits
        draft.support_cache_misses = self.support_cache_misses
        draft.retries = self.retries
        draft.batch_chunks = self.batch_chunks
        draft.future_timestamp_rejections = self.future_timestamp_rejections
        draft.observation_skew_ms = max(float(observation_skew_ms), 0.0)
        calls, latency = self.source_calls_by_source, self.source_latency_ms_by_source
        draft.source_calls_by_source = ReadOnlyDict(calls) if calls else EMPTY_MAPPING
        draft.source_latency_ms_by_source = ReadOnlyDict(latency) if latency else EMPTY_MAPPING
        draft.__class__ = SnapshotDiagnostics
        return draft  # type: ignore[no-any-return]  # retyped above (typing.cast is a call)


class _DiagnosticsDraft:
    """The mutable twin of :class:`SnapshotDiagnostics` (same slots, in the same order)."""

    __slots__ = SnapshotDiagnostics.__slots__


for _name in _COUNTERS:
    setattr(DiagnosticsCollector, _name, 0)

_new, _set = object.__new__, object.__setattr__


_EMPTY_DIAGNOSTICS = SnapshotDiagnostics()


@final
@dataclass(frozen=True, slots=True, eq=False)
class Snapshot(Mapping[ResourceKey, SnapshotValue[Any]]):
    """An immutable, consistent view of many resources: a mapping ``key -> SnapshotValue``.

    Attributes:
        snapshot_id: the build's id.
        created_at: wall-clock time the build started.
        resources: the resolved values.
        errors: why each unresolved key failed.
        diagnostics: what the build did.
    """

    snapshot_id: str
    created_at: float
    resources: Mapping[ResourceKey, SnapshotValue[Any]]
    errors: Mapping[ResourceKey, Exception] = field(default_factory=lambda: EMPTY_MAPPING)
    diagnostics: SnapshotDiagnostics = field(default_factory=lambda: _EMPTY_DIAGNOSTICS)

    def __post_init__(self) -> None:
        check_str("snapshot_id", self.snapshot_id, allow_empty=True)
        setattr_ = object.__setattr__
        setattr_(self, "created_at", check_timestamp("created_at", self.created_at))
        setattr_(self, "resources", frozen_mapping("resources", self.resources))
        setattr_(self, "errors", frozen_mapping("errors", self.errors))
        if not isinstance(self.diagnostics, SnapshotDiagnostics):
            raise TypeError("diagnostics must be SnapshotDiagnostics")

    @classmethod
    def _assembled(
        cls,
        snapshot_id: str,
        created_at: float,
        resources: Mapping[ResourceKey, SnapshotValue[Any]],
        errors: Mapping[ResourceKey, Exception],
        diagnostics: SnapshotDiagnostics,
    ) -> Snapshot:
        """A snapshot the engine assembled from what it made itself (a checked id, a clock
        reading, read-only tables of its own values and errors, frozen diagnostics): nothing
        to check, so nothing is (a build's fixed cost; a snapshot made by anyone else is)."""
        snapshot = _new(cls)
        _set(snapshot, "snapshot_id", snapshot_id)
        _set(snapshot, "created_at", created_at)
        _set(snapshot, "resources", resources)
        _set(snapshot, "errors", errors)
        _set(snapshot, "diagnostics", diagnostics)
        return snapshot

    def __getitem__(self, key: ResourceKey) -> SnapshotValue[Any]:
        return self.resources[key]

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(self.resources)

    def __len__(self) -> int:
        return len(self.resources)

    def __contains__(self, key: object) -> bool:
        return key in self.resources

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            self.snapshot_id == other.snapshot_id
            and dict(self.resources) == dict(other.resources)
            and dict(self.errors) == dict(other.errors)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def complete(self) -> bool:
        """True when no requested key failed."""
        return not self.errors

    @property
    def stale_keys(self) -> tuple[ResourceKey, ...]:
        """The keys whose values are stale, in ``resources`` order."""
        return tuple(key for key, value in self.resources.items() if value.stale)

    def error_for(self, key: ResourceKey) -> Exception | None:
        """Return why ``key`` failed, or ``None``."""
        return self.errors.get(key)

    @overload
    def value(self, key: ResourceKey, expected_type: type[T]) -> T: ...
    @overload
    def value(self, key: ResourceKey, expected_type: None = None) -> Any: ...

    # Implementation annotations as in the public API contract (``-> T`` / ``-> T | None``).
    def value(self, key: ResourceKey, expected_type: type[T] | None = None) -> T:
        """Return the payload of ``key``.

        Raises:
            KeyError: ``key`` is not in ``resources`` (not requested, or failed: a failed key's
                error is in ``errors[key]`` and ``error_for(key)``, and is chained as the
                ``KeyError``'s cause).
            TypeError: the payload is not an instance of ``expected_type``.
        """
        resolved = self.resources.get(key)
        if resolved is None:
            raise KeyError(key) from self.errors.get(key)
        return _typed(key, resolved.value, expected_type)

    @overload
    def maybe_value(self, key: ResourceKey, expected_type: type[T]) -> T | None: ...
    @overload
    def maybe_value(self, key: ResourceKey, expected_type: None = None) -> Any: ...

    def maybe_value(self, key: ResourceKey, expected_type: type[T] | None = None) -> T | None:
        """Return the payload of ``key``, or ``None`` when it is absent or failed.

        Raises:
            TypeError: the payload is present but not an instance of ``expected_type``.
        """
        resolved = self.resources.get(key)
        if resolved is None:
            return None
        return _typed(key, resolved.value, expected_type)


def _typed(key: ResourceKey, value: Any, expected_type: type[T] | None) -> T | Any:
    if expected_type is not None and not isinstance(value, expected_type):
        raise TypeError(
            f"Resource {key} contains {type(value).__name__}, expected {expected_type.__name__}"
        )
    return cast("T", value) if expected_type is not None else value


@final
@dataclass(frozen=True, slots=True, init=False)
class SnapshotRequest:
    """Which keys a build must resolve (``required``) and which it may miss (``optional``).

    Only required failures raise :class:`SnapshotBuildError`. Duplicates are dropped (the first
    occurrence wins). ``consistency_policy`` optionally bounds the
    observation skew of the resolved group; ``acceptance_policy`` optionally decides whether the
    resolved values are good enough to use (every key it names must be in the request).

    Raises:
        ValueError: a key is both required and optional, or the request names no key.
        TypeError: a key is not a ResourceKey, or a policy has the wrong type.
    """

    required: tuple[ResourceKey, ...]
    optional: tuple[ResourceKey, ...]
    consistency_policy: SnapshotConsistencyPolicy | None
    acceptance_policy: SnapshotAcceptancePolicy | None

    def __init__(
        self,
        *,
        required: Iterable[ResourceKey] = (),
        optional: Iterable[ResourceKey] = (),
        consistency_policy: SnapshotConsistencyPolicy | None = None,
        acceptance_policy: SnapshotAcceptancePolicy | None = None,
    ) -> None:
        required_keys = key_tuple("required", required)
        optional_keys = key_tuple("optional", optional)
        both = set(required_keys).intersection(optional_keys)
        if both:
            listed = ", ".join(str(key) for key in sorted(both))
            raise ValueError(f"resource keys cannot be both required and optional: {listed}")
        if not required_keys and not optional_keys:
            raise ValueError("snapshot request must contain at least one resource key")
        if consistency_policy is not None and not isinstance(
            consistency_policy, SnapshotConsistencyPolicy
        ):
            raise TypeError("consistency_policy must be a SnapshotConsistencyPolicy or None")
        _check_acceptance(acceptance_policy, {*required_keys, *optional_keys})
        setattr_ = object.__setattr__
        setattr_(self, "required", required_keys)
        setattr_(self, "optional", optional_keys)
        setattr_(self, "consistency_policy", consistency_policy)
        setattr_(self, "acceptance_policy", acceptance_policy)

    @property
    def keys(self) -> tuple[ResourceKey, ...]:
        """All keys: required first, then optional."""
        return self.required + self.optional

    def is_required(self, key: ResourceKey) -> bool:
        """True when ``key`` is required."""
        return key in self.required


def _check_acceptance(policy: object, requested: set[ResourceKey]) -> None:
    if policy is None:
        return
    if not isinstance(policy, SnapshotAcceptancePolicy):
        raise TypeError(
            f"acceptance_policy must be a SnapshotAcceptancePolicy or None, got "
            f"{type(policy).__name__}"
        )
    unknown = [key for key in policy.referenced_keys if key not in requested]
    if unknown:
        raise ValueError(
            "acceptance_policy names keys that are not in the request: "
            + ", ".join(str(key) for key in unknown)
        )
