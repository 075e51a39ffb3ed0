"""Value copies at ownership boundaries, with copies offloaded to bounded worker threads.

One copy is one :class:`SnapshotValue`: its payload (with the configured copier) and its
metadata (always ``copy.deepcopy``). Which copies go to a worker thread:

* ``run_in_thread=False``: none; every copy runs inline on the event loop.
* ``run_in_thread=None`` (default): large copies, and only with the built-in ``copy.deepcopy``
  copier (known to be thread-safe). Custom copiers stay inline: they may depend on thread
  affinity. A thread hop costs tens of microseconds, far more than copying a small dict, so
  small copies stay inline and the hit path stays fast.
* ``run_in_thread=True``: every copy, whatever its size and whatever the copier (the caller
  vouches it is thread-safe).

"Large" is a deliberately cheap estimate (:func:`is_large`): the item count of the payload plus
that of a few of the containers inside it, never a full walk. A dict holding a 60,000-row list
is large; a flat 10-key dict is not.

At most ``max_concurrency`` copies run in threads at once, in the owner's
:class:`~coalestra.core._copy_runner.PayloadCopyRunner` (which counts them and stops them at
shutdown). Cancelling a waiting caller does not stop a running thread, so its slot stays
reserved until the thread really finishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence, Sized
from functools import partial
from itertools import islice
from typing import Any, final

from ..core import PayloadIsolationError, PayloadIsolator, SnapshotValue
from ..core._copy_runner import PayloadCopyRunner
from ..core._deep_copy import SHARED
from ..core._isolation import isolation_error, located
from ._revisions import PUBLISHED
from ._store import FLAT, SLOW_COPY, is_flat

LARGE_PAYLOAD_ITEMS = 256
"""A payload estimated to hold more items than this is copied in a worker thread (if allowed)."""

_SAMPLED_CHILDREN = 8
"""How many of a container's items :func:`is_large` looks into (one level down)."""


_BUILTIN_CONTAINERS = frozenset({dict, list, tuple, set, frozenset})
_FLAT = frozenset({str, bytes, bytearray, int, float, bool, type(None)})


def _size(value: object) -> int:
    kind = type(value)
    if kind in _BUILTIN_CONTAINERS:
        return len(value)  # type: ignore[arg-type]
    if kind in _FLAT or not isinstance(value, Sized):
        return 0
    try:
        return len(value)
    except Exception:  # a broken __len__ only means "not known to be large"
        return 0


def is_large(value: object) -> bool:
    """True when ``value`` is estimated to hold more than :data:`LARGE_PAYLOAD_ITEMS` items.

    Counts the top-level items plus the items of the first few built-in containers inside
    (values of a dict, items of a list or tuple): cheap, bounded, and enough to see a table
    nested in a dict. Runs on every copy, so exact type checks, no ABC checks, in the common case.
    """
    kind = type(value)
    if kind is dict:
        total = len(value)  # type: ignore[arg-type]
        if total <= _SAMPLED_CHILDREN:  # the common small record: every value looked at
            containers = _BUILTIN_CONTAINERS
            for child in value.values():  # type: ignore[attr-defined]
                if type(child) in containers:
                    total += len(child)
            return total > LARGE_PAYLOAD_ITEMS
        children: Iterable[object] = value.values()  # type: ignore[attr-defined]
    elif kind is list or kind is tuple:
        children = value  # type: ignore[assignment]
    else:
        return _size(value) > LARGE_PAYLOAD_ITEMS
    total = len(value)  # type: ignore[arg-type]
    if total > LARGE_PAYLOAD_ITEMS:
        return True
    containers = _BUILTIN_CONTAINERS
    if total > _SAMPLED_CHILDREN:
        children = islice(children, _SAMPLED_CHILDREN)
    for child in children:
        if type(child) in containers:
            total += len(child)  # type: ignore[arg-type]
            if total > LARGE_PAYLOAD_ITEMS:
                return True
    return False


def _holding(
    value: SnapshotValue[Any], payload: Any, metadata: Mapping[str, Any]
) -> SnapshotValue[Any]:
    """A copy of ``value`` holding ``payload`` and ``metadata``, every other field unchanged."""
    clone = value._evolve(
        payload, age_seconds=value.age_seconds, stale=value.stale, from_cache=value.from_cache
    )
    if metadata is not value.metadata:
        # ``clone`` is brand new and not yet shared, so filling in a field is still safe.
        object.__setattr__(clone, "metadata", metadata)
    return clone


_set_payload = SnapshotValue.__dict__["value"].__set__
"""Fills in the payload of a value nobody else holds yet (cheaper than ``object.__setattr__``)."""


@final
class PayloadCopies:
    """Copies payloads for one owner (a cache or a publisher), offloading large copies.

    Args:
        isolator: does the copying (and decides what is immutable, hence shared).
        run_in_thread: see the module docstring.
        max_concurrency: the most copies running in worker threads at once (>= 1).
    """

    __slots__ = ("_flat_inline", "_inline", "_isolator", "_offload_all", "_offload_large", "runner")

    def __init__(
        self,
        isolator: PayloadIsolator,
        *,
        run_in_thread: bool | None,
        max_concurrency: int,
        component: str = "cache",
    ) -> None:
        self._isolator = isolator
        self._offload_all = run_in_thread is True
        self._offload_large = run_in_thread is None and isolator.uses_default_copier
        # Whether a flat payload's copies may be its copy(), made inline (copy_owned_flat).
        self._flat_inline = isolator.uses_default_copier and not self._offload_all
        # Values about to be stored that were judged to copy inline (see :meth:`kept_inline`),
        # by id; held until stored, so no id is reused meanwhile.
        self._inline: dict[int, SnapshotValue[Any]] = {}
        # Thread copies run in the owner's runner: bounded, counted, and stopped at shutdown.
        self.runner = PayloadCopyRunner(
            component,
            run_in_thread=self._offload_all or self._offload_large,
            max_concurrency=max_concurrency,
        )

    @property
    def isolator(self) -> PayloadIsolator:
        """The isolator doing the copies."""
        return self._isolator

    @property
    def shares_built(self) -> bool:
        """True when a build's own values may be kept without a copy: with the built-in
        copier nobody can tell a copy from the private original; a custom copier is called
        at every boundary (B-CACHE-11)."""
        return self._isolator.uses_default_copier

    def is_mutable(self, value: SnapshotValue[Any]) -> bool:
        """True when ``value``'s payload or metadata must go through a copy before sharing."""
        isolator = self._isolator
        if isolator.needs_copy(value.value):
            return True
        metadata = value.metadata
        return (
            bool(metadata) and metadata is not PUBLISHED and isolator.metadata_needs_copy(metadata)
        )

    def in_thread(self, value: SnapshotValue[Any]) -> bool:
        """True when copying ``value`` belongs in a worker thread (see the module docstring)."""
        return self._offload_all or (self._offload_large and is_large(value.value))

    def copy(self, value: SnapshotValue[Any], context: str) -> SnapshotValue[Any]:
        """One copy made now, on the calling thread (see :meth:`in_thread` first)."""
        return self._copy(value, context)

    def kept_inline(self, value: SnapshotValue[Any]) -> None:
        """Note that ``value``, which a write is about to store, was just judged to copy inline
        (its payload, or the payload it was copied from, is not large): :meth:`copy_flags`, which
        the store asks as it keeps it, then need not estimate its size again. The write calls
        :meth:`forget_inline` before it awaits or returns."""
        self._inline[id(value)] = value

    def forget_inline(self) -> None:
        """Drop the notes of :meth:`kept_inline` (a write is done, or goes on elsewhere)."""
        if self._inline:
            self._inline.clear()

    def copy_flags(self, value: SnapshotValue[Any]) -> int:
        """How a mutable ``value``'s copies are made, as the store's entry flags:
        :data:`SLOW_COPY` when more than its payload is copied inline (its metadata too, or
        the copy belongs in a worker thread); else :data:`FLAT` for a flat payload (its copy
        is its ``copy()``, see :func:`is_flat`), or 0. A small dict is judged in one pass."""
        metadata = value.metadata
        if metadata and self._isolator.metadata_needs_copy(metadata):
            return SLOW_COPY
        if self._offload_all:
            return SLOW_COPY
        payload = value.value
        if not self._offload_large or (
            self._inline and self._inline.pop(id(value), None) is value
        ):  # known small (see kept_inline), or never copied in a thread
            return FLAT if is_flat(payload) else 0
        if type(payload) is not dict or len(payload) > _SAMPLED_CHILDREN:
            if is_large(payload):
                return SLOW_COPY
            return FLAT if is_flat(payload) else 0
        # is_large and is_flat of a small dict, in one pass over its items.
        total, flat, shared, containers = len(payload), True, SHARED, _BUILTIN_CONTAINERS
        for key, item in payload.items():
            kind = type(item)
            if kind not in shared:
                flat = False
                if kind in containers:
                    total += len(item)
            elif flat and type(key) not in shared:  # keys only matter while it may be flat
                flat = False
        if total > LARGE_PAYLOAD_ITEMS:
            return SLOW_COPY
        return FLAT if flat else 0

    def copy_owned(self, value: SnapshotValue[Any], context: str) -> SnapshotValue[Any]:
        """For a value nobody else holds (see ``OWNED`` in :mod:`._memory_writes`): give it a
        private copy of its payload and return a copy of it (payload and metadata) for the
        caller, made from the original payload; the payload is judged once for both copies.

        Raises:
            PayloadIsolationError: the payload or metadata cannot be copied (``value`` is left
                as it was).
        """
        isolator = self._isolator
        payload = theirs = kept = value.value
        if isolator.needs_copy(payload):
            copier = isolator.payload_copier
            try:  # the error context is only made on failure: no text per copy otherwise
                theirs, kept = copier(payload), copier(payload)
            except Exception as error:
                raise isolation_error(f"{context} {value.key}", payload, error) from error
        metadata = value.metadata
        if metadata and isolator.metadata_needs_copy(metadata):
            try:
                metadata = isolator.freeze_metadata(metadata, context="")
            except PayloadIsolationError as error:
                raise located(error, f"{context} {value.key}") from error.__cause__
        clone = _holding(value, theirs, metadata)
        object.__setattr__(value, "value", kept)  # filling in a field of an unshared value
        return clone

    def copy_owned_flat(self, value: SnapshotValue[Any]) -> SnapshotValue[Any] | None:
        """:meth:`copy_owned` for the common publication, in one judgement of its payload: with
        the built-in copier, a flat payload (``_store.is_flat``: its deep copy is its own
        ``copy()``) small enough to copy inline, and metadata of atoms only (shared, not
        copied). ``None``, with nothing done, for any other value."""
        payload = value.value
        if (
            not self._flat_inline
            or not is_flat(payload)
            or (self._offload_large and len(payload) > LARGE_PAYLOAD_ITEMS)
        ):
            return None
        metadata = value.metadata
        if metadata is not PUBLISHED and metadata and self._isolator.metadata_needs_copy(metadata):
            return None
        clone = value._evolve(
            payload.copy(),
            age_seconds=value.age_seconds,
            stale=value.stale,
            from_cache=value.from_cache,
        )
        _set_payload(value, payload.copy())  # a field of an unshared value
        return clone

    async def isolate(
        self, values: Sequence[SnapshotValue[Any]], *, context: str
    ) -> list[tuple[SnapshotValue[Any], bool]]:
        """Return, for each value, a copy sharing no mutable payload or metadata with it, and
        whether it needed a copy at all.

        A value whose payload and metadata are all immutable (with the built-in copier) is
        returned as it is: the common case costs one type check per value. ``context`` says
        which boundary this is; error messages add the key.

        Raises:
            PayloadIsolationError: a payload or metadata value could not be copied; the first
                failing value in input order is reported, after every started thread copy has
                finished.
        """
        flags = [self.is_mutable(value) for value in values]
        if not any(flags):
            return [(value, False) for value in values]
        results: list[SnapshotValue[Any]] = list(values)
        offloaded: list[int] = []
        for index, (value, flag) in enumerate(zip(values, flags, strict=True)):
            if not flag:
                continue
            if self.in_thread(value):
                offloaded.append(index)
            else:
                results[index] = self._copy(value, context)
        if offloaded:
            copies = await asyncio.gather(
                *(self._copy_in_thread(values[index], context) for index in offloaded),
                return_exceptions=True,
            )
            for index, copied in zip(offloaded, copies, strict=True):
                if isinstance(copied, BaseException):
                    raise copied
                results[index] = copied
        return list(zip(results, flags, strict=True))

    async def isolate_values(
        self, values: Sequence[SnapshotValue[Any]], *, context: str
    ) -> list[SnapshotValue[Any]]:
        """Like :meth:`isolate`, without the flags."""
        return [value for value, _mutable in await self.isolate(values, context=context)]

    def _copy(self, value: SnapshotValue[Any], context: str) -> SnapshotValue[Any]:
        """One copy: the payload and the metadata of ``value``, every other field unchanged."""
        isolator = self._isolator
        try:  # the error context is only made on failure: no text per copy otherwise
            payload = isolator.copy(value.value, context="")
            metadata = value.metadata
            if isolator.metadata_needs_copy(metadata):
                metadata = isolator.freeze_metadata(metadata, context="")
        except PayloadIsolationError as error:
            raise located(error, f"{context} {value.key}") from error.__cause__
        return _holding(value, payload, metadata)

    async def _copy_in_thread(self, value: SnapshotValue[Any], context: str) -> SnapshotValue[Any]:
        return await self.runner.run(partial(self._copy, value, context))
