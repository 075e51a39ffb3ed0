"""Which revision a write keeps: the compare-and-write rules of the memory cache (B-CACHE),
shared by its writes, the publisher's batches and (in Lua) the Redis tier's scripts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core import CacheWriteStatus, ResourceKey, SnapshotValue


def decide_write(
    existing: SnapshotValue[Any] | None,
    offered: SnapshotValue[Any],
    *,
    force: bool,
    replace_equal: bool,
) -> CacheWriteStatus:
    """Decide a conditional write, by the rules in this order.

    ``force`` or nothing cached: stored. A higher cached ``authority_rank``: ignored; a lower
    one: stored (whatever the timestamps). Same rank: a newer ``observed_at`` is stored, an older
    one ignored, an equal one is a duplicate unless ``replace_equal`` -- or unless it is a derived
    value computed from other dependency versions: a derived value is stamped with its oldest
    input's ``observed_at``, so a re-derivation after one input changed often carries the same
    timestamp, yet it is the newer revision.
    """
    if force or existing is None:
        return CacheWriteStatus.STORED
    if existing.authority_rank != offered.authority_rank:
        if existing.authority_rank > offered.authority_rank:
            return CacheWriteStatus.IGNORED_LOWER_AUTHORITY
        return CacheWriteStatus.STORED
    if offered.observed_at > existing.observed_at:
        return CacheWriteStatus.STORED
    if offered.observed_at < existing.observed_at:
        return CacheWriteStatus.IGNORED_OLDER
    if replace_equal or (
        offered.dependency_versions and offered.dependency_versions != existing.dependency_versions
    ):
        return CacheWriteStatus.STORED
    return CacheWriteStatus.IGNORED_DUPLICATE


def _beats(offered: SnapshotValue[Any], holder: SnapshotValue[Any]) -> bool:
    """Within one batch: a higher rank wins, then the newer ``observed_at``, then the later."""
    if offered.authority_rank != holder.authority_rank:
        return offered.authority_rank > holder.authority_rank
    return offered.observed_at >= holder.observed_at


def reduce_batch(values: Iterable[SnapshotValue[Any]]) -> list[SnapshotValue[Any]]:
    """One value per key, in order of first appearance: the highest ``authority_rank``, then
    the newest ``observed_at``, then the later value in the batch."""
    values = list(values)  # a list of its own: the caller's collection is never handed back
    # Distinct keys, the common case: one set of the keys shows it, and the batch is the answer.
    if len({value.key for value in values}) == len(values):
        return values
    winners: dict[ResourceKey, SnapshotValue[Any]] = {}
    first = winners.setdefault  # one hash per distinct key
    for value in values:
        holder = first(value.key, value)
        if holder is not value and _beats(value, holder):
            winners[value.key] = value  # keeps the key's place: its first appearance
    return list(winners.values())
