"""What a publication offers the cache: the revision built from a publisher's arguments.

A published revision (B-PUB-4) is stamped ``observed_at`` as given (else now; never clamped,
the skew of a stamp ahead of the clock recorded in its metadata), ``fetched_at`` now, and
described as a build would serve it at that moment: its age, stale once past its key's TTL.
Its metadata is a deep copy of the given metadata plus ``"published": True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

from ..core import ResourceKey, SnapshotValue
from ..core._validation import (
    EMPTY_MAPPING,
    ReadOnlyDict,
    check_float,
    check_int,
    check_optional_timestamp,
    check_source_name,
)
from ._checks import check_key
from ._config import PublisherConfig

_INGRESS = "publication of"
PUBLISHED: Mapping[str, Any] = ReadOnlyDict(published=True)
"""The metadata of a publication without metadata of its own (read-only and of atoms only, so
shared: copies need not look into it)."""


@final
class Revisions:
    """Builds the revisions one publisher offers, from its validated configuration."""

    __slots__ = ("_authority", "_clock", "_isolator", "_observation", "_policies")

    def __init__(self, config: PublisherConfig) -> None:
        self._clock = config.clock
        self._policies = config.policy_resolver
        self._observation = config.observation_policy
        self._authority = config.authority_resolver
        self._isolator = config.isolator

    def now(self) -> float:
        """The clock's reading, checked."""
        now = self._clock.now()
        # ``now - now`` is 0.0 only for a finite float: one cheap test before the full check.
        if now.__class__ is not float or now - now != 0.0:
            now = check_float("clock.now()", now, minimum=None)
        return now

    def checked(
        self,
        key: object,
        value: Any,
        source: object,
        observed_at: object,
        metadata: Mapping[str, Any] | None,
    ) -> SnapshotValue[Any]:
        """Validate one publication's arguments (``metadata`` is checked already), then read
        the clock and build its revision.

        Raises:
            TypeError, ValueError: an argument is invalid; as :meth:`build` otherwise.
        """
        return self.build(
            check_key(key),
            value,
            check_source_name(source),
            check_optional_timestamp("observed_at", observed_at),
            metadata,
            self.now(),
        )

    def build(
        self,
        key: ResourceKey,
        value: Any,
        source: str,
        stamp: float | None,
        metadata: Mapping[str, Any] | None,
        now: float,
    ) -> SnapshotValue[Any]:
        """The revision of one valid publication at ``now`` (holding ``value`` as is).

        Raises:
            SourceProtocolError: ``stamp`` is too far ahead of ``now``.
            PayloadIsolationError: the metadata cannot be copied.
        """
        skew = 0.0
        if stamp is None:
            stamp = now
        elif stamp > now:
            # Kept as given, never clamped to now; too far ahead raises and writes nothing.
            skew = self._observation.future_skew(
                stamp, now, what=f"published observation for {key}"
            )
        extra = PUBLISHED
        if metadata or skew > 0.0:
            extra = self._metadata(key, source, metadata, skew)
        authority = self._authority
        rank = 0
        if authority is not None:
            rank = check_int("authority rank", authority.rank_for(key, source))
        # As a build would serve it now: its age, and stale once past the key's TTL.
        age = now - stamp if now > stamp else 0.0
        stale = age > self._policies.resolve(key).ttl_seconds
        # Every part is validated above, so the unvalidated constructor is safe (and cheaper).
        return SnapshotValue._trusted(
            key, value, source, stamp, now, age, stale, 0.0, 0, extra, rank, EMPTY_MAPPING
        )

    def _metadata(
        self, key: ResourceKey, source: str, given: Mapping[str, Any] | None, skew: float
    ) -> Mapping[str, Any]:
        """A deep copy of ``given``, ``"published": True`` and the skew of a future stamp."""
        extra: dict[str, Any] = {}
        if given:
            context = f"{_INGRESS} {key} from {source!r}"
            extra = self._isolator.copy_metadata(given, context=context)
        extra["published"] = True
        if skew > 0.0:
            extra["clock_skew_seconds"] = skew
        return ReadOnlyDict(extra)
