"""An exact least-recently-used table in two plain dicts: :class:`LruTable`.

Why not an ``OrderedDict``: it costs a 32-byte link per entry plus 8 bytes per slot of its
table, about 53 bytes per entry at 100,000 entries -- an eighth of what a cached entry retains.
A plain dict keeps insertion order, and "use" is a pop and an insert again (two lookups, as an
``OrderedDict`` get and ``move_to_end``); but a plain dict cannot drop its *oldest* key cheaply:
``next(iter(d))`` scans the deleted slots at its front every time (microseconds per eviction).

So the table has two generations::

    older (in queue order) -> recent (in dict order)
    ^ least recently used                 most recently used ^

* ``recent``: every entry used (read or written) since the last rotation, oldest use first.
* ``older``: the entries not used since then. Their order is ``queue[cursor:]`` (the LRU order
  at the rotation): the first of those still in ``older`` is the least recently used entry.
  Using an entry moves it from ``older`` to the end of ``recent``.
* Rotation: an eviction that finds ``older`` empty makes ``recent`` the new ``older`` (one
  ``list`` of its keys, in C): each entry then leaves ``older`` once -- evicted, used or
  removed -- so evictions cost O(1) amortized.

``tail``: ``(keys, entries)``, the keys a build was last served when they are known to be the
most recently used entries in that order (else ``None``), and once looked up, their entries in
the same order. Serving them again in that order would leave the order as it is, so
``cache._serving.serve`` then only reads the entries (no dict operation per key). Every change
of the order or of an entry, but that serve's, resets it.

The hot loops use ``recent`` and ``older`` directly: ``cache._serving.serve`` and
``MemoryStore.read``, ``put_many`` and ``decide_many`` (``cache._store``); a change to these
rules must be made there too (and each that changes the order resets ``tail``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar, final

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@final
class LruTable(Generic[K, V]):
    """Entries in least-recently-used order (see the module docstring). Values are never
    ``None``: ``None`` means absent."""

    __slots__ = ("_cursor", "_queue", "older", "recent", "tail")

    def __init__(self) -> None:
        self.recent: dict[K, V] = {}
        self.older: dict[K, V] = {}
        self._queue: list[K] = []
        self._cursor = 0
        self.tail: tuple[tuple[K, ...], list[V | None] | None] | None = None

    def get(self, key: K) -> V | None:
        """The value held for ``key``, or ``None``; the order is unchanged."""
        found = self.recent.get(key)
        return self.older.get(key) if found is None else found

    def use(self, key: K, value: V) -> None:
        """Hold ``value`` for ``key`` as the most recently used entry."""
        self.tail = None
        if self.recent.pop(key, None) is None and self.older:
            self.older.pop(key, None)
        self.recent[key] = value

    def pop(self, key: K) -> V | None:
        """Remove ``key``; the value it held, or ``None``."""
        self.tail = None
        found = self.recent.pop(key, None)
        return self.older.pop(key, None) if found is None and self.older else found

    def pop_oldest(self) -> K:
        """Remove the least recently used entry and return its key (the table is not empty)."""
        self.tail = None
        if not self.older:
            self.older, self.recent = self.recent, {}
            self._queue = list(self.older)
            self._cursor = 0
        older, queue = self.older, self._queue
        while True:  # keys used or removed since the rotation are no longer in older: skipped
            key = queue[self._cursor]
            self._cursor += 1
            if older.pop(key, None) is not None:
                return key

    def oldest_first(self) -> list[K]:
        """Every key, least recently used first."""
        older = self.older
        return [key for key in self._queue[self._cursor :] if key in older] + list(self.recent)

    def entries_oldest_first(self) -> list[tuple[K, V]]:
        """Every entry, least recently used first."""
        older = self.older
        aged = [(key, older[key]) for key in self._queue[self._cursor :] if key in older]
        return aged + list(self.recent.items())

    def clear(self) -> None:
        """Remove every entry."""
        self.recent, self.older, self._queue, self._cursor, self.tail = {}, {}, [], 0, None

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)
