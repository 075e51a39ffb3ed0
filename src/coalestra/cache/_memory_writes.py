"""The write path of :class:`~coalestra.cache.AsyncMemoryCache`: decide, copy, commit.

A write is first *staged*: decided against the entry held (:func:`~._store.decide_write`) and its
copies made -- the private copy the cache keeps and the copy the caller gets back, or a copy of
the revision that is kept when the write loses. Then it is *committed*. When every copy runs
inline nothing awaits between the two, so the decision still holds at commit, and a batch is
all staged before anything is committed (a copy failure writes nothing). A copy that belongs in a
worker thread (a large payload, see :mod:`._copying`) sends the whole call down the awaiting
path, which decides again after its copies, since other writes may land meanwhile.

A caller that never reads a stored write's value (the builder's own writes: it serves its value)
passes ``copy_result=False``: the decision, the copy kept and the commit are the same, but a
stored result carries the candidate itself instead of a copy made only to be thrown away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias, final

from ..core import CacheWriteResult, CacheWriteStatus, ResourceKey, SnapshotValue
from ._copying import PayloadCopies
from ._store import MUTABLE, Entry, MemoryStore

_WRITE = "cache write of"
_READ = "cache read of"

Held: TypeAlias = "SnapshotValue[Any] | None"
Written: TypeAlias = tuple[CacheWriteStatus, SnapshotValue[Any], Held]
"""A write's outcome: status, the result's value, the previous revision."""
Staged: TypeAlias = tuple[CacheWriteStatus, SnapshotValue[Any], Held, Held, bool]
"""A decided write with its copies made: status, the result's value, the previous revision,
the revision to store (``None`` for a loser) and whether it is mutable."""


@final
class MemoryWrites:
    """Conditional writes into one :class:`MemoryStore`, with their copies.

    Args:
        store: the entries.
        copies: makes the copies (inline, or in worker threads where due).
    """

    __slots__ = ("_copies", "_store")

    def __init__(self, store: MemoryStore, copies: PayloadCopies) -> None:
        self._store = store
        self._copies = copies

    def write_now(
        self,
        candidate: SnapshotValue[Any],
        force: bool,
        replace_equal: bool,
        *,
        owned: bool,
        copy_result: bool = True,
    ) -> Written | None:
        """Write one candidate without awaiting; ``None`` (nothing written) when a copy
        belongs in a worker thread: then :meth:`write_all` does it.

        ``owned``: the caller made ``candidate`` for this write, holds it no longer and its
        metadata is private, so the cache may keep the value itself with a copy of its payload
        (one copy of the value less). The publisher's revisions are such values.
        ``copy_result``: see the module docstring (never ``False`` with ``owned``).
        """
        staged = self._stage(candidate, force, replace_equal, owned, copy_result)
        return None if staged is None else self._commit(staged)

    async def write_all(
        self,
        candidates: Sequence[SnapshotValue[Any]],
        force: bool,
        replace_equal: bool,
        *,
        owned: bool,
        copy_result: bool = True,
    ) -> list[Written]:
        """Write candidates of distinct keys, every one staged before any is committed: the
        outcome of each, in order. ``owned``, ``copy_result``: as for :meth:`write_now`, for
        every candidate."""
        staged: list[Staged] = []
        for candidate in candidates:
            stage = self._stage(candidate, force, replace_equal, owned, copy_result)
            if stage is None:
                found = await self._write_offloaded(candidates, force, replace_equal, copy_result)
                results = [found[candidate.key] for candidate in candidates]
                return [(result.status, result.value, result.previous) for result in results]
            staged.append(stage)
        commit = self._commit
        return [commit(stage) for stage in staged]

    def _stage(
        self,
        candidate: SnapshotValue[Any],
        force: bool,
        replace_equal: bool,
        owned: bool,
        copy_result: bool,
    ) -> Staged | None:
        """Decide ``candidate``'s write now and make its copies inline, storing nothing;
        ``None`` when a copy belongs in a worker thread. ``owned``, ``copy_result``: see
        :meth:`write_now`."""
        status, held = self._store.decide(candidate, force=force, replace_equal=replace_equal)
        copies = self._copies
        if status is CacheWriteStatus.STORED:
            before = None if held is None else held[0]
            if not copies.is_mutable(candidate):
                return status, candidate, before, candidate, False
            if copies.in_thread(candidate):
                return None
            # One copy for the result (the caller may mutate what it gets back), one to keep.
            theirs = copies.copy(candidate, _WRITE) if copy_result else candidate
            if not owned:
                return status, theirs, before, copies.copy(candidate, _WRITE), True
            assert copy_result  # else the result would be the very value kept
            # Nobody else holds ``candidate`` and its metadata is private: it is kept itself,
            # holding a copy of the payload (filling in a field of an unshared value is safe).
            where = f"{_WRITE} {candidate.key}"
            object.__setattr__(
                candidate, "value", copies.isolator.copy(candidate.value, context=where)
            )
            return status, theirs, before, candidate, True
        assert held is not None  # only a held revision can make a write lose
        kept, flags = held
        if flags & MUTABLE:
            if copies.in_thread(kept):
                return None
            kept = copies.copy(kept, _READ)
        return status, kept, kept, None, False

    def _commit(self, staged: Staged) -> Written:
        """Store a staged winner (nothing for a loser)."""
        status, value, previous, private, mutable = staged
        if private is not None:
            self._store.put(private, mutable)
        return status, value, previous

    async def _write_offloaded(
        self,
        candidates: Sequence[SnapshotValue[Any]],
        force: bool,
        replace_equal: bool,
        copy_result: bool,
    ) -> dict[ResourceKey, CacheWriteResult]:
        """Decide, copy the winners (in threads where due), decide again and commit.
        ``copy_result``: see :meth:`write_now`."""
        store = self._store
        copies = self._copies
        ignored: dict[ResourceKey, tuple[CacheWriteStatus, Entry]] = {}
        winners: list[SnapshotValue[Any]] = []
        for candidate in candidates:
            status, held = store.decide(candidate, force=force, replace_equal=replace_equal)
            if status is CacheWriteStatus.STORED:
                winners.append(candidate)
            else:
                assert held is not None  # only a held revision can make a write lose
                ignored[candidate.key] = (status, held)
        # The stored copy and the result's copy of each winner, in one batch of copies.
        mutable = [winner for winner in winners if copies.is_mutable(winner)]
        private: dict[int, SnapshotValue[Any]] = {}
        for_result: dict[int, SnapshotValue[Any]] = {}
        if mutable:
            wanted = mutable + mutable if copy_result else mutable
            copied = iter(await copies.isolate_values(wanted, context=_WRITE))
            private = {id(winner): next(copied) for winner in mutable}
            if copy_result:
                for_result = {id(winner): next(copied) for winner in mutable}
        stored: dict[ResourceKey, CacheWriteResult] = {}
        for winner in winners:
            mine = private.get(id(winner), winner)
            status, held = store.put_if_newer(
                mine, id(winner) in private, force=force, replace_equal=replace_equal
            )
            if status is CacheWriteStatus.STORED:
                # The replaced revision left the cache, so nobody shares it: no copy needed.
                before = None if held is None else held[0]
                stored[winner.key] = CacheWriteResult(
                    status, for_result.get(id(winner), winner), before
                )
            else:  # another write won while this one was being copied
                assert held is not None
                ignored[winner.key] = (status, held)
        kept = await self._isolate_entries([entry for _status, entry in ignored.values()])
        if not ignored:
            return stored  # every candidate stored: results already in candidate order
        results: dict[ResourceKey, CacheWriteResult] = {}
        for candidate in candidates:
            key = candidate.key
            if key in stored:
                results[key] = stored[key]
            else:
                results[key] = CacheWriteResult(ignored[key][0], kept[key], kept[key])
        return results

    async def _isolate_entries(self, entries: list[Entry]) -> dict[ResourceKey, SnapshotValue[Any]]:
        """Copies of the revisions the cache keeps (entries of immutable values are shared)."""
        if not entries:
            return {}
        mutable = [entry[0] for entry in entries if entry[1] & MUTABLE]
        copies = (
            iter(await self._copies.isolate_values(mutable, context=_READ)) if mutable else None
        )
        kept: dict[ResourceKey, SnapshotValue[Any]] = {}
        for value, flags in entries:
            kept[value.key] = next(copies) if copies is not None and flags & MUTABLE else value
        return kept
