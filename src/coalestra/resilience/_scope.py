"""Circuit identity: which circuit a call to a source, for a key, belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import final

from ..core import ResourceKey
from ..core._validation import check_enum, check_str


class CircuitScope(str, Enum):
    """How finely a source's failures are isolated into separate circuits.

    * ``SOURCE``: one circuit for the whole source.
    * ``NAMESPACE``: one circuit per source and key namespace.
    * ``SUBJECT``: one circuit per source and key subject (e.g. per symbol), so one failing
      subject never disables the source for the others.
    * ``RESOURCE``: one circuit per source and complete :class:`~coalestra.ResourceKey`.
    """

    SOURCE = "source"
    NAMESPACE = "namespace"
    SUBJECT = "subject"
    RESOURCE = "resource"


@final
@dataclass(frozen=True, slots=True)
class CircuitIdentity:
    """The name of one circuit: a source, a scope, and the part of the key that scope keeps.

    ``discriminator`` is ``''`` for ``SOURCE``, the key's namespace for ``NAMESPACE``, its
    subject (or ``"<namespace>:<name>"`` when the subject is empty) for ``SUBJECT`` and
    ``str(key)`` for ``RESOURCE``. Identities are hashable and are the keys of
    :meth:`CircuitBreaker.snapshot`. ``str(identity)`` is ``"<source>[<scope>]"``, followed by
    ``":<discriminator>"`` when the discriminator is not empty: ``"rest[subject]:BTC"``.

    Args:
        source: the source name; must not be empty.
        scope: a :class:`CircuitScope` (or its string value).
        discriminator: the scope's part of the key.

    Raises:
        TypeError: ``source`` or ``discriminator`` is not a string.
        ValueError: ``source`` is empty, or ``scope`` is not a known scope.
    """

    source: str
    scope: CircuitScope
    discriminator: str = ""

    def __post_init__(self) -> None:
        # Identities are made on every source call: the common, valid case costs three type
        # tests, and the check_* helpers run only to produce the error message.
        if self.source.__class__ is not str or not self.source.strip():
            check_str("source", self.source)
        if self.scope.__class__ is not CircuitScope:
            object.__setattr__(self, "scope", check_enum("scope", self.scope, CircuitScope))
        if self.discriminator.__class__ is not str:
            check_str("discriminator", self.discriminator, allow_empty=True)

    def __str__(self) -> str:
        text = f"{self.source}[{self.scope.value}]"
        return f"{text}:{self.discriminator}" if self.discriminator else text


def make_identity(source: str, key: ResourceKey | None, scope: CircuitScope) -> CircuitIdentity:
    """Return the identity of ``source``'s circuit for ``key`` under ``scope``.

    Arguments are trusted to have the right types (callers validate once, at the boundary).

    Raises:
        ValueError: ``key`` is ``None`` but ``scope`` needs part of a key.
    """
    if scope is CircuitScope.SOURCE:
        return CircuitIdentity(source, scope)
    if key is None:
        # Mapping a missing key to '' would silently share the circuit of keys whose subject
        # (say) is empty, so a keyless call under a keyed scope is refused.
        raise ValueError(f"resource key is required for circuit scope {scope.value}")
    if scope is CircuitScope.SUBJECT:
        # Keys without a subject share a circuit per resource type, not one for all of them.
        return CircuitIdentity(source, scope, key.subject or f"{key.namespace}:{key.name}")
    if scope is CircuitScope.NAMESPACE:
        return CircuitIdentity(source, scope, key.namespace)
    return CircuitIdentity(source, scope, str(key))


# Source names are configuration, so a handful; the cap only guards against callers that
# invent names per call.
_MAX_CACHED_SOURCE_IDENTITIES = 1024


@final
class IdentityMaker:
    """Makes circuit identities for a breaker; ``SOURCE`` ones, which repeat on every call to a
    source, are made once per source name."""

    __slots__ = ("_by_source",)

    def __init__(self) -> None:
        self._by_source: dict[str, CircuitIdentity] = {}

    def __call__(
        self, source: str, key: ResourceKey | None, scope: CircuitScope
    ) -> CircuitIdentity:
        check_key(key)
        if scope is CircuitScope.SOURCE and source.__class__ is str:
            identity = self._by_source.get(source)
            if identity is None:
                identity = CircuitIdentity(source, scope)
                if len(self._by_source) < _MAX_CACHED_SOURCE_IDENTITIES:
                    self._by_source[source] = identity
            return identity
        return make_identity(source, key, scope)  # CircuitIdentity validates ``source``


def check_identity(identity: object) -> CircuitIdentity:
    """Return ``identity`` when it is a :class:`CircuitIdentity`."""
    if not isinstance(identity, CircuitIdentity):
        raise TypeError(f"identity must be a CircuitIdentity, got {type(identity).__name__}")
    return identity


def check_key(key: object) -> ResourceKey | None:
    """Return ``key`` when it is a :class:`~coalestra.ResourceKey` or ``None``."""
    if key is not None and not isinstance(key, ResourceKey):
        raise TypeError(f"key must be a ResourceKey or None, got {type(key).__name__}")
    return key
