"""Value types of the cache area: cache statistics and the publisher's inputs and outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar, final

from ..core import ResourceKey, SnapshotValue
from ..core._validation import (
    EMPTY_MAPPING,
    check_enum,
    check_int,
    check_optional_int,
    check_optional_timestamp,
    check_source_name,
    frozen_mapping,
)

T = TypeVar("T")

_COUNTERS = (
    "size",
    "hits",
    "misses",
    "fresh_hits",
    "stale_hits",
    "sets",
    "invalidations",
    "evictions",
    "expirations",
)


@final
@dataclass(frozen=True, slots=True)
class CacheStats:
    """A point-in-time view of an :class:`~coalestra.cache.AsyncMemoryCache`.

    Counters are cumulative since the cache was made (``clear()`` does not reset them).

    Attributes:
        size: entries held now.
        max_entries: the LRU bound, or ``None`` when unbounded.
        hits: reads that returned a value (``fresh_hits + stale_hits``).
        misses: reads that returned nothing (absent, expired, or invalid derived value).
        fresh_hits: hits within TTL.
        stale_hits: hits past TTL but within the stale window.
        sets: values written (unconditional writes and stored conditional writes).
        invalidations: entries removed by invalidation, including derived values dropped
            because a dependency changed.
        evictions: entries removed to respect ``max_entries``.
        expirations: entries removed because they were past TTL plus stale window.

    Raises:
        TypeError, ValueError: a counter is not a non-negative int.
    """

    size: int
    max_entries: int | None
    hits: int
    misses: int
    fresh_hits: int
    stale_hits: int
    sets: int
    invalidations: int
    evictions: int
    expirations: int

    def __post_init__(self) -> None:
        for name in _COUNTERS:
            check_int(name, getattr(self, name), minimum=0)
        check_optional_int("max_entries", self.max_entries, minimum=1)


@final
@dataclass(frozen=True, slots=True)
class ResourceUpdate(Generic[T]):
    """One event to publish: ``value`` for ``key`` as seen by ``source``.

    Args:
        key: the resource.
        value: the payload (copied by the publisher; later mutation changes nothing published).
        source: the stable name of the producer (used in metric labels and provenance).
        observed_at: wall-clock time the source observed the value; ``None`` means "now".
        metadata: extra provenance, kept read-only.

    Raises:
        TypeError, ValueError: ``key`` is not a ResourceKey, ``source`` is empty,
            ``observed_at`` is NaN or infinite, or ``metadata`` is not a mapping.
    """

    key: ResourceKey
    value: T
    source: str
    observed_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)

    def __post_init__(self) -> None:
        if not isinstance(self.key, ResourceKey):
            raise TypeError(f"key must be a ResourceKey, got {type(self.key).__name__}")
        object.__setattr__(self, "source", check_source_name(self.source))
        observed_at = check_optional_timestamp("observed_at", self.observed_at)
        object.__setattr__(self, "observed_at", observed_at)
        object.__setattr__(self, "metadata", frozen_mapping("metadata", self.metadata))


class PublishStatus(str, Enum):
    """What a publication did.

    * ``PUBLISHED``: the value is now the cached revision.
    * ``IGNORED_LOWER_AUTHORITY``: the cache holds a revision from a higher-ranked source.
    * ``IGNORED_OLDER``: the cache holds a revision observed later.
    * ``IGNORED_DUPLICATE``: the cache holds a revision observed at the same time.
    """

    PUBLISHED = "published"
    IGNORED_LOWER_AUTHORITY = "ignored_lower_authority"
    IGNORED_OLDER = "ignored_older"
    IGNORED_DUPLICATE = "ignored_duplicate"


@final
@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome of one publication.

    Attributes:
        status: what happened (see :class:`PublishStatus`).
        value: the revision that was offered (an isolated copy: it shares no mutable object
            with the cache or with the caller's input).
        previous: the revision the cache held before, isolated too, or ``None``.

    Raises:
        TypeError, ValueError: ``status`` is not a PublishStatus (or its value), or ``value``
            / ``previous`` is not a SnapshotValue.
    """

    status: PublishStatus
    value: SnapshotValue[Any]
    previous: SnapshotValue[Any] | None = None

    def __post_init__(self) -> None:
        if self.status.__class__ is not PublishStatus:  # the publisher's own: no lookup
            object.__setattr__(self, "status", check_enum("status", self.status, PublishStatus))
        if not isinstance(self.value, SnapshotValue):
            raise TypeError(f"value must be a SnapshotValue, got {type(self.value).__name__}")
        if self.previous is not None and not isinstance(self.previous, SnapshotValue):
            raise TypeError(
                f"previous must be a SnapshotValue or None, got {type(self.previous).__name__}"
            )

    @property
    def published(self) -> bool:
        """True when the offered value became the cached revision."""
        return self.status is PublishStatus.PUBLISHED
