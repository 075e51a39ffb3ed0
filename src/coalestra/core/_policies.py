"""Policies: freshness, observation-time validation, source authority and snapshot consistency."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeAlias, final, runtime_checkable

from ._errors import SourceProtocolError
from ._keys import ResourceKey
from ._validation import (
    EMPTY_MAPPING,
    check_bool,
    check_callable,
    check_enum,
    check_float,
    check_int,
    check_str,
    frozen_mapping,
)


class RefreshMode(str, Enum):
    """What a read does with a value that is past (or near) its TTL.

    * ``BLOCKING``: wait for a fresh source value once the cache is outside TTL.
    * ``STALE_WHILE_REVALIDATE``: serve an acceptable stale value, refresh in the background.
    * ``REFRESH_AHEAD``: serve the fresh value and refresh it in the background shortly before
      TTL expiry (``refresh_ahead_seconds`` before).
    """

    BLOCKING = "blocking"
    STALE_WHILE_REVALIDATE = "stale_while_revalidate"
    REFRESH_AHEAD = "refresh_ahead"


@final
@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    """How long a value stays fresh and how long after that it may still be used.

    Args:
        ttl_seconds: a value younger than this (by ``observed_at``) is fresh. ``0`` disables
            freshness: every read goes to a source.
        max_stale_seconds: after TTL, the value stays usable as stale for this long (for
            stale-while-revalidate and stale-on-error); after that the entry is expired.
        allow_stale_on_error: when every source fails, serve a usable stale value instead.
        refresh_mode: see :class:`RefreshMode`.
        refresh_ahead_seconds: for ``REFRESH_AHEAD``, how long before TTL to refresh; must not
            exceed ``ttl_seconds``.

    Raises:
        TypeError, ValueError: for non-numbers, NaN, infinite or negative durations.
    """

    ttl_seconds: float
    max_stale_seconds: float = 0.0
    allow_stale_on_error: bool = True
    refresh_mode: RefreshMode = RefreshMode.BLOCKING
    refresh_ahead_seconds: float = 0.0

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "ttl_seconds", check_float("ttl_seconds", self.ttl_seconds))
        setattr_(
            self, "max_stale_seconds", check_float("max_stale_seconds", self.max_stale_seconds)
        )
        check_bool("allow_stale_on_error", self.allow_stale_on_error)
        setattr_(self, "refresh_mode", check_enum("refresh_mode", self.refresh_mode, RefreshMode))
        ahead = check_float("refresh_ahead_seconds", self.refresh_ahead_seconds)
        if ahead > self.ttl_seconds:
            raise ValueError(
                f"refresh_ahead_seconds must be <= ttl_seconds ({self.ttl_seconds}), got {ahead}"
            )
        setattr_(self, "refresh_ahead_seconds", ahead)

    @property
    def expires_after_seconds(self) -> float:
        """Age after which the value is unusable: ``ttl_seconds + max_stale_seconds``."""
        return self.ttl_seconds + self.max_stale_seconds

    def is_fresh(self, age_seconds: float) -> bool:
        """True when a value of this age is within TTL."""
        return age_seconds < self.ttl_seconds

    def is_usable_stale(self, age_seconds: float) -> bool:
        """True when a value of this age is past TTL but within the stale window."""
        return self.ttl_seconds <= age_seconds < self.ttl_seconds + self.max_stale_seconds

    def should_refresh_ahead(self, age_seconds: float) -> bool:
        """True when a fresh value of this age should be refreshed ahead of its expiry."""
        return (
            self.refresh_mode is RefreshMode.REFRESH_AHEAD
            and self.ttl_seconds - self.refresh_ahead_seconds <= age_seconds < self.ttl_seconds
        )


@runtime_checkable
class FreshnessPolicyProvider(Protocol):
    """Anything that gives the :class:`FreshnessPolicy` of a key."""

    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        """Return the policy for ``key``."""
        ...


@final
@dataclass(frozen=True, slots=True)
class ObservationPolicy:
    """What to do with ``observed_at`` timestamps in the future.

    A timestamp up to ``future_tolerance_seconds`` ahead of the clock is accepted as clock skew:
    the value is treated as observed now and the skew is recorded as ``clock_skew_seconds``
    metadata. Further ahead, it is rejected (``reject_future_observations=True``, the default) so
    clock errors cannot make values artificially fresh, or clamped to now with the same metadata.
    """

    future_tolerance_seconds: float = 1.0
    reject_future_observations: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "future_tolerance_seconds",
            check_float("future_tolerance_seconds", self.future_tolerance_seconds),
        )
        check_bool("reject_future_observations", self.reject_future_observations)

    def accept(self, observed_at: float, now: float, *, context: str) -> tuple[float, float]:
        """Return ``(observed_at to store, clock skew in seconds)`` for a source timestamp.

        Raises:
            SourceProtocolError: the timestamp is not a finite number, or lies further in the
                future than the tolerance and future observations are rejected.
        """
        if isinstance(observed_at, bool) or not isinstance(observed_at, (int, float)):
            raise SourceProtocolError(f"{context}: observed_at must be a number")
        if not math.isfinite(observed_at):
            raise SourceProtocolError(f"{context}: observed_at must be finite, got {observed_at}")
        skew = observed_at - now
        if skew <= 0.0:
            return float(observed_at), 0.0
        if skew > self.future_tolerance_seconds and self.reject_future_observations:
            raise FutureObservationError(
                f"{context}: observed_at is {skew:.3f}s in the future "
                f"(tolerance {self.future_tolerance_seconds}s)"
            )
        return now, skew


class FutureObservationError(SourceProtocolError):
    """Internal: an ``observed_at`` too far in the future (counted apart in diagnostics).
    Diagnostics name it by its public class."""

    public_name = "SourceProtocolError"


def _check_ranks(value: object) -> Mapping[str, int]:
    ranks = frozen_mapping("source_ranks", value)
    for source, rank in ranks.items():
        check_str("source_ranks key", source)
        check_int(f"source_ranks[{source!r}]", rank)
    return ranks


@final
@dataclass(frozen=True, slots=True)
class SourceAuthorityPolicy:
    """Which source's revision may replace which in the cache.

    A write from a source of higher rank replaces a lower-ranked revision even when it was
    observed earlier; a lower rank never replaces a higher one (unless forced). Equal ranks fall
    back to ``observed_at`` monotonicity. Unlisted sources get ``default_rank``.
    """

    source_ranks: Mapping[str, int] = field(default_factory=lambda: EMPTY_MAPPING)
    default_rank: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_ranks", _check_ranks(self.source_ranks))
        check_int("default_rank", self.default_rank)

    def rank_for(self, source: str) -> int:
        """Return the rank of ``source``."""
        return self.source_ranks.get(source, self.default_rank)


AuthorityResolver: TypeAlias = Callable[[ResourceKey], "SourceAuthorityPolicy | None"]


@runtime_checkable
class AuthorityPolicyProvider(Protocol):
    """Anything that gives the authority policy (and a source's rank) for a key."""

    def resolve(self, key: ResourceKey) -> SourceAuthorityPolicy:
        """Return the policy for ``key``."""
        ...

    def rank_for(self, key: ResourceKey, source: str) -> int:
        """Return the rank of ``source`` for ``key``."""
        ...


_NO_AUTHORITY = SourceAuthorityPolicy()


@final
class AuthorityPolicyResolver:
    """Authority policies per key: exact-key ``overrides`` first, then ``dynamic(key)`` (when it
    returns a policy), then ``default``.

    Args:
        default: the policy for keys no rule covers (all ranks equal when ``None``).
        overrides: policies for exact keys.
        dynamic: a function ``key -> SourceAuthorityPolicy | None``.
    """

    __slots__ = ("_default", "_dynamic", "_overrides")

    def __init__(
        self,
        default: SourceAuthorityPolicy | None = None,
        overrides: Mapping[ResourceKey, SourceAuthorityPolicy] | None = None,
        dynamic: AuthorityResolver | None = None,
    ) -> None:
        if default is not None and not isinstance(default, SourceAuthorityPolicy):
            raise TypeError("default must be a SourceAuthorityPolicy or None")
        table = frozen_mapping("overrides", overrides)
        for key, policy in table.items():
            if not isinstance(key, ResourceKey) or not isinstance(policy, SourceAuthorityPolicy):
                raise TypeError("overrides must map ResourceKey to SourceAuthorityPolicy")
        self._default = default
        self._overrides: Mapping[ResourceKey, SourceAuthorityPolicy] = table
        self._dynamic = None if dynamic is None else check_callable("dynamic", dynamic)

    @property
    def has_rules(self) -> bool:
        """True when any rule can give two sources different ranks."""
        default_has_rules = self._default is not None and (
            bool(self._default.source_ranks) or self._default.default_rank != 0
        )
        return default_has_rules or bool(self._overrides) or self._dynamic is not None

    def resolve(self, key: ResourceKey) -> SourceAuthorityPolicy:
        """Return the policy for ``key``."""
        policy = self._overrides.get(key)
        if policy is not None:
            return policy
        if self._dynamic is not None:
            found = self._dynamic(key)
            if found is not None:
                if not isinstance(found, SourceAuthorityPolicy):
                    raise TypeError("the dynamic authority resolver must return a policy or None")
                return found
        return self._default if self._default is not None else _NO_AUTHORITY

    def rank_for(self, key: ResourceKey, source: str) -> int:
        """Return the rank of ``source`` for ``key``."""
        return self.resolve(key).rank_for(source)


@final
@dataclass(frozen=True, slots=True)
class SnapshotConsistencyPolicy:
    """Reject a group of values observed further apart than ``max_observation_skew_seconds``.

    By default only required keys form the group; ``include_optional_resources=True`` adds every
    resolved optional key.
    """

    max_observation_skew_seconds: float
    include_optional_resources: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "max_observation_skew_seconds",
            check_float("max_observation_skew_seconds", self.max_observation_skew_seconds),
        )
        check_bool("include_optional_resources", self.include_optional_resources)
