"""Payload isolation: no two owners (cache, snapshots, callers) share a mutable payload.

Deeply immutable payloads (numbers, strings, bytes, ``None`` and tuples/frozensets of them) are
shared as they are; everything else is copied with the configured copier (by default
:func:`deepcopy_payload`: the results of ``copy.deepcopy``, JSON-shaped data copied faster, see
:mod:`._deep_copy`). A payload that cannot be copied raises :class:`PayloadIsolationError`
naming where the copy was needed, instead of being shared by reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar, final

from ._deep_copy import SHARED, deep_copy
from ._errors import PayloadIsolationError
from ._keys import ResourceKey
from ._lookups import CacheLookup
from ._validation import EMPTY_MAPPING, ReadOnlyDict, check_callable
from ._values import SnapshotValue

T = TypeVar("T")

PayloadCopier: TypeAlias = Callable[[Any], Any]
"""A function returning an independent copy of a payload (``copy.deepcopy`` by default)."""

_ATOMS = SHARED

# Nested tuples deeper than this are copied rather than proven immutable: the proof is meant
# for small keys and records, not for walking large trees on every read.
_MAX_PROOF_ITEMS = 64


def deepcopy_payload(value: T) -> T:
    """Return ``copy.deepcopy(value)``: the default :data:`PayloadCopier`.

    The result is that of ``copy.deepcopy`` (equal values of the same types, shared references
    and cycles kept); dicts, lists and tuples are walked without ``copy.deepcopy``'s generic
    dispatch, and immutable atoms inside them are shared.
    """
    return deep_copy(value)


def located(error: PayloadIsolationError, where: str) -> PayloadIsolationError:
    """``error`` (raised with an empty context, so that no text is made per copy that succeeds)
    with ``where`` put in front of its context; raise it ``from error.__cause__``."""
    return PayloadIsolationError(context=where + error.context, value_type=error.value_type)


def isolation_error(context: str, value: object, cause: Exception) -> PayloadIsolationError:
    """The error of a failed copy of ``value`` at ``context``, caused by ``cause`` (what
    :meth:`PayloadIsolator.copy` raises, for callers that run the copier themselves)."""
    error = PayloadIsolationError(context=context, value_type=type(value).__name__)
    error.__cause__ = cause
    return error


def is_immutable(value: object) -> bool:
    """True when ``value`` is provably deeply immutable and so safe to share without a copy."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is tuple or kind is frozenset:
        budget = [_MAX_PROOF_ITEMS]
        return _immutable_items(value, budget)  # type: ignore[arg-type]
    return False


def _immutable_items(items: tuple[Any, ...] | frozenset[Any], budget: list[int]) -> bool:
    for item in items:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        kind = type(item)
        if kind in _ATOMS:
            continue
        if (kind is tuple or kind is frozenset) and _immutable_items(item, budget):
            continue
        return False
    return True


def _deepcopy_item(value: T, context: str) -> T:
    if type(value) in _ATOMS or is_immutable(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception as error:
        raise PayloadIsolationError(context=context, value_type=type(value).__name__) from error


@final
class PayloadIsolator:
    """Copies payloads and metadata at ownership boundaries.

    With the built-in copier (``copy.deepcopy``) deeply immutable payloads are shared, since no
    one can tell. A custom copier is called for every payload, immutable ones included: it may
    convert as well as copy. Metadata is always copied with ``copy.deepcopy``, never with a
    custom copier (which is written for payloads, e.g. ``lambda v: v.model_copy(deep=True)``).

    Args:
        copier: the copy function for payloads; ``None`` means ``copy.deepcopy``.
    """

    __slots__ = ("payload_copier", "uses_default_copier")

    def __init__(self, copier: PayloadCopier | None = None) -> None:
        self.uses_default_copier = copier is None
        # The function copying payloads, called as it is (internal, read-only by convention:
        # the miss path, the cache's read loop and its writes call it for payloads
        # :meth:`needs_copy` flagged, and report failures themselves). The default is called
        # without the public wrapper: one call less per copy; a plain attribute: no property
        # call per copy either.
        self.payload_copier: PayloadCopier = (
            deep_copy if copier is None else check_callable("payload_copier", copier)
        )

    @property
    def copier(self) -> PayloadCopier:
        """The copy function in use."""
        return deepcopy_payload if self.uses_default_copier else self.payload_copier

    def isolate_lookups(
        self, found: Mapping[ResourceKey, CacheLookup]
    ) -> dict[ResourceKey, CacheLookup]:
        """``found`` with a private copy of every value's payload (and mutable metadata): the
        hits of a cache that does not return private copies itself."""
        copied: dict[ResourceKey, CacheLookup] = {}
        for key, lookup in found.items():
            value = lookup.value
            if value is not None:
                try:  # the error context is only made on failure: no text per copy otherwise
                    clone = self.clone_snapshot_value(value, context="")
                except PayloadIsolationError as error:
                    raise located(error, f"cache read of {key}") from error.__cause__
                lookup = CacheLookup(clone, lookup.fresh, lookup.usable_stale, lookup.age_seconds)
            copied[key] = lookup
        return copied

    def needs_copy(self, value: object) -> bool:
        """True when ``value`` must go through the copier before it is shared."""
        if not self.uses_default_copier:
            return True
        kind = type(value)
        if kind is dict or kind is list:  # the common mutable payloads: no proof to attempt
            return True
        return kind not in _ATOMS and not is_immutable(value)

    def metadata_needs_copy(self, metadata: Mapping[str, Any]) -> bool:
        """True when some value of ``metadata`` must be copied before it is shared."""
        # A plain loop with the atom test first: one call for the common metadata of atoms.
        for item in metadata.values():
            if type(item) not in _ATOMS and not is_immutable(item):
                return True
        return False

    def copy(self, value: T, *, context: str) -> T:
        """Return a copy of ``value`` (with the built-in copier, immutable values as they are).

        Raises:
            PayloadIsolationError: the copier failed; ``context`` says where (and which key).
        """
        if self.uses_default_copier and (type(value) in _ATOMS or is_immutable(value)):
            return value
        try:
            return self.payload_copier(value)  # type: ignore[no-any-return]
        except Exception as error:
            raise PayloadIsolationError(context=context, value_type=type(value).__name__) from error

    def copy_metadata(self, metadata: Mapping[str, Any], *, context: str) -> dict[str, Any]:
        """Return a new dict whose values are ``copy.deepcopy`` copies of ``metadata``'s
        (immutable ones shared); the payload copier is never used for metadata."""
        return {
            name: _deepcopy_item(item, f"{context} metadata {name!r}")
            for name, item in metadata.items()
        }

    def freeze_metadata(self, metadata: Mapping[str, Any], *, context: str) -> Mapping[str, Any]:
        """Like :meth:`copy_metadata`, returned read-only (the empty case costs nothing)."""
        if not metadata:
            return EMPTY_MAPPING
        return ReadOnlyDict(self.copy_metadata(metadata, context=context))

    def clone_snapshot_value(
        self,
        value: SnapshotValue[Any],
        *,
        context: str,
        fetched_at: float | None = None,
        age_seconds: float | None = None,
        stale: bool | None = None,
        from_cache: bool | None = None,
        latency_ms: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SnapshotValue[Any]:
        """Return a copy of ``value`` with an isolated payload and any field overridden.

        Metadata holding mutable values is copied too; read-only metadata of immutable values
        is shared.
        """
        payload = self.copy(value.value, context=context)
        if metadata is None and value.metadata and self.metadata_needs_copy(value.metadata):
            metadata = value.metadata
        clone = value._evolve(
            payload,
            age_seconds=value.age_seconds if age_seconds is None else age_seconds,
            stale=value.stale if stale is None else stale,
            from_cache=value.from_cache if from_cache is None else from_cache,
        )
        if fetched_at is None and latency_ms is None and metadata is None:
            return clone
        setattr_ = object.__setattr__
        if fetched_at is not None:
            setattr_(clone, "fetched_at", fetched_at)
        if latency_ms is not None:
            setattr_(clone, "latency_ms", latency_ms)
        if metadata is not None:
            setattr_(clone, "metadata", self.freeze_metadata(metadata, context=context))
        return clone
