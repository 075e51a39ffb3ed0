"""The write path of :class:`~coalestra.cache.AsyncMemoryCache`: decide, copy, commit.

A write is first *staged*: decided against the entry held (:func:`~._decisions.decide_write`)
and its copies made -- the private copy the cache keeps and the copy the caller gets back, or a
copy of the revision that is kept when the write loses. Then it is *committed*. When every copy runs
inline nothing awaits between the two, so the decision still holds at commit, and a batch is
all staged before anything is committed (a copy failure writes nothing). A copy that belongs in a
worker thread (a large payload, see :mod:`._copying`) sends the whole call down the awaiting
path, which decides again after its copies, since other writes may land meanwhile.

How a caller hands its candidates over decides which copies are needed (:data:`Handover`):

* :data:`LENT` (a public write): the caller keeps its value and may mutate it, so the cache keeps
  a copy and a stored result carries another.
* :data:`OWNED` (the publisher's revisions): made for this write and held by nobody else, so the
  cache keeps the value itself with a copy of its payload; the result still gets its own copy.
* :data:`BUILT` (a build's values): private to the builder, which never mutates them and hands
  every reader its own copy. With the built-in copier the cache keeps the value as it is, no
  copy at all (nobody can observe the difference: the copy would be equal and unshared); a
  custom copier is still called, since it runs at every boundary (B-CACHE-11). A stored result
  carries the candidate itself: the builder reads only its status. Only values fetched from a
  source (``attempts > 0``, as every value a build makes) are kept so.

A revision a stored write replaces is handed back as ``previous`` in a copy when it is mutable
and was fetched (``attempts > 0``): the build that wrote it, sharing it, may still be copying it
for its readers. A publication (``attempts == 0``) never is, so replacing one costs no copy; a
build's own write skips that copy too, since the builder does not read ``previous``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias, final

from ..core import (
    CacheWriteResult,
    CacheWriteStatus,
    ResourceKey,
    SnapshotValue,
)
from ._copying import PayloadCopies
from ._store import MUTABLE, Entry, MemoryStore

_WRITE = "cache write of"
_READ = "cache read of"
_FLAT_KINDS = frozenset((dict, list))
"""The payload types ``_store.is_flat`` can accept."""

Handover: TypeAlias = int
"""How a caller hands a write's candidates over: :data:`LENT`, :data:`OWNED` or :data:`BUILT`."""
LENT: Handover = 0
OWNED: Handover = 1
BUILT: Handover = 2

Held: TypeAlias = "SnapshotValue[Any] | None"
Written: TypeAlias = tuple[CacheWriteStatus, SnapshotValue[Any], Held]
"""A write's outcome: status, the result's value, the previous revision."""
Staged: TypeAlias = tuple[CacheWriteStatus, SnapshotValue[Any], Held, Held, bool, bool]
"""A decided write with its copies made: status, the result's value, the previous revision,
the revision to store (``None`` for a loser), whether it is mutable and whether it is known
flat (see ``MemoryStore.put``)."""


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
        handover: Handover,
    ) -> Written | None:
        """Write one candidate without awaiting; ``None`` (nothing written) when a copy
        belongs in a worker thread: then :meth:`write_all` does it. ``handover``: see the
        module docstring."""
        try:  # the notes of inline copies go even when staging fails (see kept_inline)
            staged = self._stage(candidate, force, replace_equal, handover)
            return None if staged is None else self._commit(staged)
        finally:
            self._copies.forget_inline()

    async def write_all(
        self,
        candidates: Sequence[SnapshotValue[Any]],
        force: bool,
        replace_equal: bool,
        handover: Handover,
    ) -> list[Written]:
        """Write candidates of distinct keys, every one staged before any is committed: the
        outcome of each, in order. ``handover``: as for :meth:`write_now`."""
        stage, copy_flat = self._stage_decided, self._copies.copy_owned_flat
        owned = handover == OWNED
        decisions = self._store.decide_many(candidates, force=force, replace_equal=replace_equal)
        # Staged in two lists: the winners to store (in one call) and the outcomes.
        winners: list[tuple[SnapshotValue[Any], bool, bool]] = []
        written: list[Written] = []
        offload = False
        try:  # the notes of inline copies go before any await, and when staging fails
            for candidate, (status, held) in zip(candidates, decisions, strict=True):
                # The common publication, a small flat dict of a new key, without _stage's call.
                if held is None and owned and type(candidate.value) in _FLAT_KINDS:
                    theirs = copy_flat(candidate)
                    if theirs is not None:
                        winners.append((candidate, True, True))
                        written.append((status, theirs, None))
                        continue
                decided = stage(candidate, status, held, handover)
                if decided is None:  # a copy for a worker thread: write_offloaded does all
                    offload = True
                    break
                status, value, previous, private, mutable, flat = decided
                if private is not None:
                    winners.append((private, mutable, flat))
                written.append((status, value, previous))
            else:
                self._store.put_many(winners)
        finally:
            self._copies.forget_inline()
        if offload:
            found = await self._write_offloaded(candidates, force, replace_equal, handover)
            results = [found[candidate.key] for candidate in candidates]
            return [(result.status, result.value, result.previous) for result in results]
        return written

    async def write_built(
        self, candidates: Sequence[SnapshotValue[Any]]
    ) -> dict[ResourceKey, CacheWriteResult] | None:
        """A build's write of its own values of distinct keys (``BUILT``, see the module
        docstring) when none needs a copy: every one decided, then the winners stored as they
        are; the result of each write that did not store (with a copy of the revision kept),
        none for a stored one. ``None``, with nothing written, when a value must be copied
        after all (a custom copier, or a mutable value that was not fetched): then
        :meth:`write_all` does it."""
        copies, store = self._copies, self._store
        if not copies.shares_built:
            return None
        is_mutable = copies.is_mutable
        stored = CacheWriteStatus.STORED
        decided = store.decide_many(candidates, force=False, replace_equal=False)
        winners: list[tuple[SnapshotValue[Any], bool, bool]] = []
        lost: dict[ResourceKey, tuple[CacheWriteStatus, Entry]] = {}
        for candidate, (status, held) in zip(candidates, decided, strict=True):
            if status is stored:
                if is_mutable(candidate):
                    if not candidate.attempts:
                        return None
                    winners.append((candidate, True, False))
                else:
                    winners.append((candidate, False, False))
            else:
                assert held is not None  # only a held revision can make a write lose
                lost[candidate.key] = (status, held)
        # Nothing to copy, so nothing can fail or wait between the decisions and the stores.
        store.put_many(winners)
        if not lost:
            return {}
        kept = await self._isolate_entries([entry for _status, entry in lost.values()])
        return {
            key: CacheWriteResult(status, kept[key], kept[key]) for key, (status, _) in lost.items()
        }

    def _stage(
        self, candidate: SnapshotValue[Any], force: bool, replace_equal: bool, handover: Handover
    ) -> Staged | None:
        """Decide ``candidate``'s write now and make its copies inline, storing nothing;
        ``None`` when a copy belongs in a worker thread. ``handover``: see the module
        docstring."""
        status, held = self._store.decide(candidate, force=force, replace_equal=replace_equal)
        return self._stage_decided(candidate, status, held, handover)

    def _stage_decided(
        self,
        candidate: SnapshotValue[Any],
        status: CacheWriteStatus,
        held: Entry | None,
        handover: Handover,
    ) -> Staged | None:
        """:meth:`_stage` once ``candidate``'s write is decided (``held``: the entry held)."""
        copies = self._copies
        if status is not CacheWriteStatus.STORED:
            assert held is not None  # only a held revision can make a write lose
            kept, flags = held
            if flags & MUTABLE:
                if copies.in_thread(kept):
                    return None
                kept = copies.copy(kept, _READ)
            return status, kept, kept, None, False, False
        before = None if held is None else held[0]
        # The common publication (a small flat dict replacing a publication or nothing) is
        # judged once, by copy_owned_flat, before is_mutable judges it again.
        shared = held is not None and held[1] & MUTABLE and held[0].attempts
        if handover == OWNED and not shared and type(candidate.value) in _FLAT_KINDS:
            theirs = copies.copy_owned_flat(candidate)
            if theirs is not None:  # two dict.copy()
                return status, theirs, before, candidate, True, True
        mutable = copies.is_mutable(candidate)
        if handover == BUILT and (not mutable or (copies.shares_built and candidate.attempts)):
            return status, candidate, before, candidate, mutable, False
        # A build sharing the replaced revision (mutable, fetched) may still read it.
        if shared:
            assert held is not None
            if copies.in_thread(held[0]):
                return None
            before = copies.copy(held[0], _READ)  # a build sharing it may still read it
        if not mutable:
            return status, candidate, before, candidate, False, False
        if handover == OWNED and shared:
            theirs = copies.copy_owned_flat(candidate)  # not tried above
            if theirs is not None:
                return status, theirs, before, candidate, True, True
        if copies.in_thread(candidate):
            return None
        # One copy for the result (the caller may mutate what it gets back), one to keep.
        if handover == OWNED:
            # Nobody else holds ``candidate`` and its metadata is private: it is kept itself,
            # holding a copy of the payload; the result gets its own copy.
            theirs, kept = copies.copy_owned(candidate, _WRITE), candidate
        else:
            theirs = candidate if handover == BUILT else copies.copy(candidate, _WRITE)
            kept = copies.copy(candidate, _WRITE)
        copies.kept_inline(kept)
        return status, theirs, before, kept, True, False

    def _commit(self, staged: Staged) -> Written:
        """Store a staged winner (nothing for a loser)."""
        status, value, previous, private, mutable, flat = staged
        if private is not None:
            self._store.put(private, mutable, flat)
        return status, value, previous

    async def _write_offloaded(
        self,
        candidates: Sequence[SnapshotValue[Any]],
        force: bool,
        replace_equal: bool,
        handover: Handover,
    ) -> dict[ResourceKey, CacheWriteResult]:
        """Decide, copy the winners (in threads where due), decide again and commit.
        ``handover``: see the module docstring."""
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
        private, for_result = await self._winner_copies(winners, handover)
        stored: dict[ResourceKey, CacheWriteResult] = {}
        replaced: list[Entry] = []
        for winner in winners:
            mine = private.get(id(winner), winner)
            mutable = mine is not winner or copies.is_mutable(winner)
            status, held = store.put_if_newer(
                mine, mutable, force=force, replace_equal=replace_equal
            )
            if status is CacheWriteStatus.STORED:
                # A build sharing the replaced revision (mutable, fetched) may still read it.
                fetched = held is not None and held[1] & MUTABLE and held[0].attempts
                if fetched and handover != BUILT:
                    assert held is not None
                    replaced.append(held)
                before = None if held is None else held[0]
                stored[winner.key] = CacheWriteResult(
                    status, for_result.get(id(winner), winner), before
                )
            else:  # another write won while this one was being copied
                assert held is not None
                ignored[winner.key] = (status, held)
        if replaced:  # a build sharing a replaced revision may still be reading it
            for key, before in (await self._isolate_entries(replaced)).items():
                stored[key] = CacheWriteResult(stored[key].status, stored[key].value, before)
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

    async def _winner_copies(
        self, winners: list[SnapshotValue[Any]], handover: Handover
    ) -> tuple[dict[int, SnapshotValue[Any]], dict[int, SnapshotValue[Any]]]:
        """The copy each mutable winner keeps and the copy its result carries (by the winner's
        ``id``), in one batch of copies; a build's values need neither (see the module
        docstring)."""
        copies = self._copies
        mutable = [winner for winner in winners if copies.is_mutable(winner)]
        if handover == BUILT and copies.shares_built:
            mutable = [winner for winner in mutable if not winner.attempts]
        if not mutable:
            return {}, {}
        copy_result = handover != BUILT
        wanted = mutable + mutable if copy_result else mutable
        copied = iter(await copies.isolate_values(wanted, context=_WRITE))
        private = {id(winner): next(copied) for winner in mutable}
        for_result = {id(winner): next(copied) for winner in mutable} if copy_result else {}
        return private, for_result

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
