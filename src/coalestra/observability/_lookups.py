"""What a build's first cache read reports: the cache access metric per answer, and each hit
(the read itself is ``orchestration._cache_access``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core._keys import ResourceKey
from ..core._values import SnapshotValue
from ._instrumentation import Instrumentation
from ._names import FRESH as _FRESH
from ._names import MISS as _MISS
from ._names import STALE_WHILE_REVALIDATE as _STALE_WHILE_REVALIDATE


def report_lookups(
    report: Instrumentation,
    keys: Sequence[ResourceKey],
    hits: Mapping[ResourceKey, SnapshotValue[Any]],
    needed: Sequence[ResourceKey],
    swr: Sequence[ResourceKey],
) -> None:
    """Report a build's first read: the cache access metric per answer, and each hit."""
    if report.metrics_on:
        count = report.count_by_type
        if needed or swr:
            swr_keys = set(swr)
            fresh = [key for key in hits if key not in swr_keys]
            report.cache_accesses(_FRESH, count(fresh))
            report.cache_accesses(_STALE_WHILE_REVALIDATE, count(swr))
            report.cache_accesses(_MISS, count(needed))
        else:  # every key was a fresh hit: the request's own (memoized) counts
            report.cache_accesses(_FRESH, count(keys))
    if report.events_on:
        report.cache_hits(hits, swr)
