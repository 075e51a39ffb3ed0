"""One build's single reading of every key it touches.

A build reads each key once: from the cache, or from the flight it owns or joins. Its
derivations take their dependencies from the same reading, never from a second cache read or
another flight, so a dependency is read once per build and every derived value in a snapshot was
computed from exactly the dependency revisions that snapshot shows. A derived value the build
did not compute itself (a joined flight, a cache hit, a stale fallback) is checked against that
reading before it is served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, final

from ..core import ResourceKey, SnapshotValue
from ._flights import Flight


@final
class BuildView:
    """What one build has read (a value) or claimed (a flight) for each key so far."""

    __slots__ = ("_lock", "entries", "first_read", "joined")

    def __init__(self, pinned: Mapping[ResourceKey, SnapshotValue[Any]] | None = None) -> None:
        # key -> the value read or pinned, or the flight owned or joined
        self.entries: dict[ResourceKey, SnapshotValue[Any] | Flight] = (
            {} if pinned is None else dict(pinned)
        )
        # The values the build's first cache read served, kept as they are (not copied into
        # ``entries``: the warm path of a build is that one read).
        self.first_read: Mapping[ResourceKey, SnapshotValue[Any]] = {}
        self.joined: set[ResourceKey] = set()  # keys whose flight another build owns
        self._lock: asyncio.Lock | None = None

    @property
    def empty(self) -> bool:
        """True before the build has read or claimed anything."""
        return not self.entries and not self.first_read

    def get(self, key: ResourceKey) -> SnapshotValue[Any] | Flight | None:
        """The build's reading of ``key``: a value, a flight, or None (not read yet)."""
        entry = self.entries.get(key)
        return self.first_read.get(key) if entry is None else entry

    def readings(self) -> dict[ResourceKey, SnapshotValue[Any]]:
        """Every value the build has read or resolved so far, its finished flights' included
        (a session keeps the revisions its derived values were computed from)."""
        found = dict(self.first_read)
        for key, entry in self.entries.items():
            if type(entry) is Flight:
                future = entry.future
                if not future.done() or future.cancelled() or future.exception() is not None:
                    continue
                outcome = future.result()
                if isinstance(outcome, SnapshotValue):
                    found[key] = outcome
            else:
                assert isinstance(entry, SnapshotValue)
                found[key] = entry
        return found

    def lock(self) -> asyncio.Lock:
        """Serializes the build's later lookups (its derivations'), so two of them never read
        or claim the same key twice; never held while waiting on a flight."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def version_of(self, key: ResourceKey) -> str | None:
        """The revision of ``key`` this build shows, if it has one yet."""
        entry = self.get(key)
        if entry is None:
            return None
        if type(entry) is Flight:
            future = entry.future
            if not future.done():
                return None
            outcome = future.result()
            return outcome.version if isinstance(outcome, SnapshotValue) else None
        assert isinstance(entry, SnapshotValue)
        return entry.version

    def mixed(self, value: SnapshotValue[Any]) -> bool:
        """True when ``value`` was derived from a revision other than the one this build shows."""
        for dep, version in value.dependency_versions.items():
            shown = self.version_of(dep)
            if shown is not None and shown != version:
                return True
        return False
