"""Policies: freshness, observation-time validation, source authority and snapshot consistency."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol, TypeAlias, TypeVar, final, runtime_checkable

from ._errors import SourceProtocolError
from ._keys import ResourceKey
from ._validation import (
    EMPTY_MAPPING,
    check_bool,
    check_callable,
    check_enum,
    check_float,
    check_int,
    check_timestamp,
    frozen_mapping,
    frozen_table,
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
    """How long a value stays fresh and how old it may get before it is unusable.

    Both bounds are total ages measured from ``observed_at`` and both are inclusive: a value is
    fresh while ``age <= ttl_seconds``, usable (as stale) while ``age <= max_stale_seconds`` and
    expired after that. ``max_stale_seconds`` is NOT added to the TTL, so it must be at least
    ``ttl_seconds``; ``FreshnessPolicy(5.0)`` raises because ``max_stale_seconds`` defaults to 0.
    ``math.inf`` is accepted for both (``FreshnessPolicy(math.inf, math.inf)`` never expires).

    Args:
        ttl_seconds: the age up to which a value is fresh. ``0`` means every read goes to a
            source (a value observed this very instant still counts as fresh).
        max_stale_seconds: the age up to which a value may still be served stale (by
            stale-while-revalidate and stale-on-error); older entries are expired. Default 0:
            equal to a zero TTL, it disables stale serving.
        allow_stale_on_error: when every source fails, serve a usable stale value instead
            (default True; needs ``max_stale_seconds > ttl_seconds`` to have any effect).
        refresh_mode: see :class:`RefreshMode` (default ``BLOCKING``).
        refresh_ahead_seconds: for ``REFRESH_AHEAD`` only, how long before the TTL a fresh value
            is refreshed in the background; finite, and must not exceed a finite
            ``ttl_seconds``.

    Raises:
        TypeError: a duration is not a number, or a flag is not a bool.
        ValueError: a NaN window (``"ttl_seconds cannot be NaN"``), a non-finite
            ``refresh_ahead_seconds`` (``"refresh_ahead_seconds must be finite"``), a negative
            duration, ``max_stale_seconds < ttl_seconds``, or a ``refresh_ahead_seconds`` that
            the mode or the TTL does not allow.
    """

    ttl_seconds: float
    max_stale_seconds: float = 0.0
    allow_stale_on_error: bool = True
    refresh_mode: RefreshMode = RefreshMode.BLOCKING
    refresh_ahead_seconds: float = 0.0

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        ttl = _duration("ttl_seconds", self.ttl_seconds)
        if ttl < 0.0:
            raise ValueError("ttl_seconds cannot be negative")
        max_stale = _duration("max_stale_seconds", self.max_stale_seconds)
        if max_stale < ttl:
            raise ValueError("max_stale_seconds must be greater than or equal to ttl_seconds")
        check_bool("allow_stale_on_error", self.allow_stale_on_error)
        mode = check_enum("refresh_mode", self.refresh_mode, RefreshMode)
        ahead = check_float("refresh_ahead_seconds", self.refresh_ahead_seconds, minimum=None)
        if ahead < 0.0:
            raise ValueError("refresh_ahead_seconds cannot be negative")
        if ahead != 0.0 and mode is not RefreshMode.REFRESH_AHEAD:
            raise ValueError("refresh_ahead_seconds is only valid with RefreshMode.REFRESH_AHEAD")
        if ahead > ttl and math.isfinite(ttl):
            raise ValueError("refresh_ahead_seconds cannot exceed ttl_seconds")
        setattr_(self, "ttl_seconds", ttl)
        setattr_(self, "max_stale_seconds", max_stale)
        setattr_(self, "refresh_mode", mode)
        setattr_(self, "refresh_ahead_seconds", ahead)

    def is_fresh(self, age_seconds: float) -> bool:
        """True when a value of this age is within its TTL (``age <= ttl_seconds``)."""
        return age_seconds <= self.ttl_seconds

    def is_usable(self, age_seconds: float) -> bool:
        """True when a value of this age may still be served, fresh or stale
        (``age <= max_stale_seconds``)."""
        return age_seconds <= self.max_stale_seconds

    def should_refresh_ahead(self, age_seconds: float) -> bool:
        """True when the mode is ``REFRESH_AHEAD``, the TTL is finite and
        ``age >= max(0, ttl_seconds - refresh_ahead_seconds)``; there is no upper bound."""
        ttl = self.ttl_seconds
        return (
            self.refresh_mode is RefreshMode.REFRESH_AHEAD
            and ttl != math.inf
            and age_seconds >= max(0.0, ttl - self.refresh_ahead_seconds)
        )


def _duration(name: str, value: object) -> float:
    # Range checks are the caller's: the contract words each one, and inf is a valid window.
    return check_float(name, value, minimum=None, allow_inf=True)


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

    A timestamp is always kept as given, never clamped to now. Up to
    ``future_tolerance_seconds`` ahead of the clock it is accepted as clock skew: the value is
    served with ``age_seconds`` 0 and ``metadata["clock_skew_seconds"] = observed_at - now``.
    Further ahead it is rejected when ``reject_future_observations`` is true (the default), so
    clock errors cannot make values look fresh for long: a source attempt fails with
    :class:`SourceProtocolError` and the next source is tried; a publication raises it and
    writes nothing. With ``reject_future_observations=False`` every timestamp is kept.

    Raises:
        ValueError: ``future_tolerance_seconds`` is negative, NaN or infinite.
    """

    future_tolerance_seconds: float = 1.0
    reject_future_observations: bool = True

    def __post_init__(self) -> None:
        tolerance = check_timestamp("future_tolerance_seconds", self.future_tolerance_seconds)
        if tolerance < 0.0:
            raise ValueError("future_tolerance_seconds cannot be negative")
        object.__setattr__(self, "future_tolerance_seconds", tolerance)
        check_bool("reject_future_observations", self.reject_future_observations)

    def future_skew(self, observed_at: float, now: float, *, what: str) -> float:
        """Return how far ``observed_at`` lies ahead of ``now`` (0.0 when it does not).

        ``what`` names the observation in the error, e.g. ``"source observation for <key>"``.

        Raises:
            SourceProtocolError: the timestamp is not a finite number, or lies further in the
                future than the tolerance and future observations are rejected.
        """
        if observed_at.__class__ is not float and (
            isinstance(observed_at, bool) or not isinstance(observed_at, (int, float))
        ):
            raise SourceProtocolError(f"{what}: observed_at must be a number")
        if not math.isfinite(observed_at):
            raise SourceProtocolError(f"{what}: observed_at must be finite")
        skew = observed_at - now
        if skew <= 0.0:
            return 0.0
        if skew > self.future_tolerance_seconds and self.reject_future_observations:
            raise FutureObservationError(
                f"{what} is {skew:.6f}s in the future{_unit_hint(observed_at, now)}"
            )
        return skew


# A wall clock reads more than this (1973 onwards): below it, the clock is virtual or relative
# and a timestamp's scale says nothing about its unit.
_EPOCH_CLOCK: Final = 1e8
_UNITS: Final = ((1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds"))
_YEAR: Final = 366 * 86400.0


def _unit_hint(observed_at: float, now: float) -> str:
    """``" (observed_at ... is probably milliseconds ...)"`` when ``observed_at`` scaled down
    by 10**3, 10**6 or 10**9 lands within a year of an epoch clock's ``now``; else ``""``."""
    if now < _EPOCH_CLOCK:
        return ""
    for factor, unit in _UNITS:
        if abs(observed_at / factor - now) <= _YEAR:
            return (
                f" (observed_at {observed_at!r} is probably {unit} since the epoch; "
                "observed_at is in seconds)"
            )
    return ""


class FutureObservationError(SourceProtocolError):
    """Internal: an ``observed_at`` too far in the future (counted apart in diagnostics).
    Diagnostics name it by its public class."""

    public_name = "SourceProtocolError"


def _check_ranks(value: object) -> Mapping[str, int]:
    return frozen_table("source_ranks", value, check_int)


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

_P = TypeVar("_P")


def key_overrides(value: object, kind: type[_P]) -> Mapping[ResourceKey, _P]:
    """Return a per-key resolver's ``overrides`` as a read-only copy (``None``: empty).

    Raises:
        TypeError: ``value`` is not a mapping, or it holds an entry that does not map a
            :class:`ResourceKey` to a ``kind``: ``"overrides must map ResourceKey to <kind>"``.
    """
    table: Mapping[ResourceKey, _P] = frozen_mapping("overrides", value)
    for key, policy in table.items():
        if not isinstance(key, ResourceKey) or not isinstance(policy, kind):
            raise TypeError(f"overrides must map ResourceKey to {kind.__name__}")
    return table


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
        self._default = default
        self._overrides = key_overrides(overrides, SourceAuthorityPolicy)
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
        skew = self.max_observation_skew_seconds
        if isinstance(skew, bool) or not isinstance(skew, (int, float)):
            raise TypeError("max_observation_skew_seconds must be a number")
        if not math.isfinite(skew):
            raise ValueError("max_observation_skew_seconds must be finite")
        if skew < 0:
            raise ValueError("max_observation_skew_seconds cannot be negative")
        object.__setattr__(self, "max_observation_skew_seconds", float(skew))
        if not isinstance(self.include_optional_resources, bool):
            raise TypeError("include_optional_resources must be a boolean")
