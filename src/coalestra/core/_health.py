"""The builder's aggregated, source-free health view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, final

from ._validation import EMPTY_MAPPING, check_bool, check_int, check_optional_int, frozen_mapping


@final
@dataclass(frozen=True, slots=True)
class BuilderHealth:
    """A cheap, immutable view of a builder's state; gathering it never calls a source.

    It holds aggregates only (no subjects, qualifiers or payloads). Counters are process-local
    and cumulative since the builder was made.
    """

    closed: bool
    background_refreshes: int
    singleflight_in_flight: int
    source_support_cache_entries: int
    capacity: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)
    cache: Any | None = None
    circuits: Mapping[Any, Any] = field(default_factory=lambda: EMPTY_MAPPING)
    active_dispatch_workers: int = 0
    waiting_for_capacity: int = 0
    queue_timeout_count: int = 0
    source_timeout_count: int = 0
    deadline_exceeded_count: int = 0
    revalidation_attempt_count: int = 0
    revalidation_failure_count: int = 0
    pending_submissions: int = 0
    max_pending_submissions: int | None = None

    def __post_init__(self) -> None:
        check_bool("closed", self.closed)
        for name in (
            "background_refreshes",
            "singleflight_in_flight",
            "source_support_cache_entries",
            "active_dispatch_workers",
            "waiting_for_capacity",
            "queue_timeout_count",
            "source_timeout_count",
            "deadline_exceeded_count",
            "revalidation_attempt_count",
            "revalidation_failure_count",
            "pending_submissions",
        ):
            check_int(name, getattr(self, name), minimum=0)
        check_optional_int("max_pending_submissions", self.max_pending_submissions, minimum=1)
        object.__setattr__(self, "capacity", frozen_mapping("capacity", self.capacity))
        object.__setattr__(self, "circuits", frozen_mapping("circuits", self.circuits))
