"""One build's single reading of every key it touches.

A build reads each key once: from the cache, or from the flight it owns or joins. Its
derivations take their dependencies from the same reading, never from a second cache read or
another flight, so a dependency is read once per build and every derived value in a snapshot was
computed from exactly the dependency revisions that snapshot shows. A derived value the build
did not compute itself (a joined flight, a cache hit, a stale fallback) is checked against that
reading before it is served.

A session stage's view also keeps the input revisions of the derived values it serves without
having read those inputs (see :mod:`._inputs`): they count as the stage's reading for those
checks and are remembered by the session, but they are not entries, so a derivation of the
stage still reads such a key itself.
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

    __slots__ = (
        "_lock",
        "entries",
        "first_read",
        "inputs",
        "joined",
        "lost",
        "session",
    )

    def __init__(
        self,
        pinned: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
        *,
        session: bool = False,
    ) -> None:
        # key -> the value read or pinned, or the flight owned or joined
        self.entries: dict[ResourceKey, SnapshotValue[Any] | Flight] = (
            {} if pinned is None else dict(pinned)
        )
        # The values the build's first cache read served, kept as they are (not copied into
        # ``entries``: the warm path of a build is that one read).
        self.first_read: Mapping[ResourceKey, SnapshotValue[Any]] = {}
        self.joined: set[ResourceKey] = set()  # keys whose flight another build owns
        self._lock: asyncio.Lock | None = None
        # A session stage's: it keeps the inputs of the derived values it serves (._inputs).
        self.session = session
        # Inputs the served derived values were computed from (or the revision now held).
        self.inputs: dict[ResourceKey, SnapshotValue[Any]] = {}
        # Inputs of served derived values that are no longer held at all.
        self.lost: set[ResourceKey] = set()

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
        (a session keeps the revisions its derived values were computed from), the inputs
        kept for its served derived values included."""
        found = {**self.inputs, **self.first_read}
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

    def value_of(self, key: ResourceKey) -> SnapshotValue[Any] | None:
        """The revision of ``key`` this build shows (a kept input's included), if it has one."""
        entry = self.entries.get(key)
        if entry is None:  # the first read holds values only
            entry = self.first_read.get(key)
        elif type(entry) is Flight:
            future = entry.future
            outcome = future.result() if future.done() else None
            entry = outcome if isinstance(outcome, SnapshotValue) else None
        if entry is None:
            return self.inputs.get(key) if self.inputs else None
        assert isinstance(entry, SnapshotValue)
        return entry

    def version_of(self, key: ResourceKey) -> str | None:
        """The version of :meth:`value_of`."""
        value = self.value_of(key)
        return None if value is None else value.version

    def mixed(self, value: SnapshotValue[Any]) -> bool:
        """True when ``value`` was derived from a revision other than the one this build shows
        (or from an input a session stage found no longer held). A session stage also checks
        the derived values it was computed from, transitively (:meth:`mixed_inputs`): a later
        stage may show them."""
        if not value.dependency_versions:
            return False
        nested = False  # an input shown at the recorded revision is itself derived
        for dep, version in value.dependency_versions.items():
            shown = self.value_of(dep)
            if shown is None:
                if dep in self.lost:
                    return True
            elif shown.version != version:
                return True
            elif shown.dependency_versions:
                nested = True
        return nested and self.session and bool(self.mixed_inputs(value))

    def mixed_inputs(self, value: SnapshotValue[Any]) -> list[ResourceKey]:
        """The derived values ``value`` was computed from, transitively, that this view holds
        at the recorded revision but that were themselves computed from another revision than
        the view shows: they must be derived again with it."""
        found: list[ResourceKey] = []
        seen: set[ResourceKey] = set()
        pending = [value]
        while pending:
            for dep, version in pending.pop().dependency_versions.items():
                if dep in seen:
                    continue
                seen.add(dep)
                held = self.value_of(dep)
                if held is None or held.version != version or not held.dependency_versions:
                    continue
                if self._mixed(held):
                    found.append(dep)
                pending.append(held)
        return found

    def _mixed(self, value: SnapshotValue[Any]) -> bool:
        for dep, version in value.dependency_versions.items():
            shown = self.version_of(dep)
            if shown is None:
                if dep in self.lost:
                    return True
            elif shown != version:
                return True
        return False
