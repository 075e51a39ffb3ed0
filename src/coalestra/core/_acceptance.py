"""Snapshot acceptance: is the resolved data good enough to use (after resolution succeeded)?

A :class:`SnapshotAcceptancePolicy` holds per-key :class:`ResourceAcceptanceRule` s (age, staleness,
authority) and :class:`SnapshotRequirement` groups ("at least N of these keys acceptable").
:func:`evaluate_acceptance` is a pure function over resolved values; the builder and sessions call
it only when a request carries a policy, so builds without one pay nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, final

from ._build_errors import SnapshotBuildError
from ._errors import CoalestraError
from ._keys import ResourceKey
from ._validation import EMPTY_MAPPING, ReadOnlyDict, check_bool, tuple_of
from ._values import SnapshotValue


class SnapshotAcceptanceReason(str, Enum):
    """Why a value or a requirement group was not acceptable."""

    STALE = "stale"
    TOO_OLD = "too_old"
    INSUFFICIENT_AUTHORITY = "insufficient_authority"
    REQUIREMENT_UNSATISFIED = "requirement_unsatisfied"


@final
@dataclass(frozen=True, slots=True)
class ResourceAcceptanceRule:
    """What one resolved value must satisfy: a maximum age (``None`` = any), whether a stale
    value is fine, and a minimum authority rank (``None`` = any; equal is fine)."""

    max_age_seconds: float | None = None
    allow_stale: bool = True
    minimum_authority_rank: int | None = None

    def __post_init__(self) -> None:
        age = self.max_age_seconds
        if age is not None:
            if isinstance(age, bool) or not isinstance(age, (int, float)):
                raise TypeError(f"max_age_seconds must be a number, got {type(age).__name__}")
            if not math.isfinite(age):
                raise ValueError(f"max_age_seconds must be finite, got {age!r}")
            if age < 0:
                raise ValueError(f"max_age_seconds cannot be negative, got {age!r}")
            object.__setattr__(self, "max_age_seconds", float(age))
        check_bool("allow_stale", self.allow_stale)
        rank = self.minimum_authority_rank
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
            raise TypeError(f"minimum_authority_rank must be an int, got {type(rank).__name__}")

    @property
    def has_constraints(self) -> bool:
        """True when this rule can reject a value."""
        return (
            self.max_age_seconds is not None
            or not self.allow_stale
            or self.minimum_authority_rank is not None
        )


@final
@dataclass(frozen=True, slots=True, init=False)
class SnapshotRequirement:
    """A group of keys of which at least ``minimum_count`` must resolve acceptably.

    ``keys`` are de-duplicated (first occurrence kept); ``name`` (stripped) appears in messages.
    """

    keys: tuple[ResourceKey, ...]
    minimum_count: int
    name: str

    def __init__(self, keys: Iterable[ResourceKey], *, minimum_count: int, name: str = "") -> None:
        ordered = _requirement_keys(keys)
        count = minimum_count
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"minimum_count must be an int, got {type(count).__name__}")
        if not 1 <= count <= len(ordered):
            raise ValueError(f"minimum_count must be between 1 and {len(ordered)}, got {count}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        object.__setattr__(self, "keys", ordered)
        object.__setattr__(self, "minimum_count", count)
        object.__setattr__(self, "name", name.strip())

    @classmethod
    def all_of(cls, keys: Iterable[ResourceKey], *, name: str = "") -> SnapshotRequirement:
        """Every key must be acceptable."""
        ordered = _requirement_keys(keys)
        return cls(ordered, minimum_count=len(ordered), name=name)

    @classmethod
    def any_of(cls, keys: Iterable[ResourceKey], *, name: str = "") -> SnapshotRequirement:
        """At least one key must be acceptable."""
        return cls(keys, minimum_count=1, name=name)

    @classmethod
    def at_least(
        cls, minimum_count: int, keys: Iterable[ResourceKey], *, name: str = ""
    ) -> SnapshotRequirement:
        """At least ``minimum_count`` keys must be acceptable."""
        return cls(keys, minimum_count=minimum_count, name=name)


def _requirement_keys(keys: Iterable[ResourceKey]) -> tuple[ResourceKey, ...]:
    result = tuple_of("keys", keys, ResourceKey)
    if not result:
        raise ValueError("a requirement needs at least one key")
    return tuple(dict.fromkeys(result))


@final
@dataclass(frozen=True, slots=True)
class SnapshotAcceptancePolicy:
    """Rules for each key (``resource_rules``, else ``default_rule``) and requirement groups.

    Required keys are checked directly; optional ones too with ``include_optional_resources``;
    any key with an explicit rule always. A policy that cannot reject anything is refused.
    """

    default_rule: ResourceAcceptanceRule = field(default_factory=ResourceAcceptanceRule)
    # Left out of the hash (a mapping is not hashable); equality still compares it.
    resource_rules: Mapping[ResourceKey, ResourceAcceptanceRule] = field(
        default_factory=lambda: EMPTY_MAPPING, hash=False
    )
    requirements: tuple[SnapshotRequirement, ...] = ()
    include_optional_resources: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.default_rule, ResourceAcceptanceRule):
            raise TypeError("default_rule must be a ResourceAcceptanceRule")
        if not isinstance(self.resource_rules, Mapping):
            raise TypeError("resource_rules must be a mapping of ResourceKey to rule")
        rules = dict(self.resource_rules)
        for key, rule in rules.items():
            if not isinstance(key, ResourceKey):
                raise TypeError(f"resource_rules keys must be ResourceKey, got {key!r}")
            if not isinstance(rule, ResourceAcceptanceRule):
                raise TypeError(f"resource_rules[{key}] must be a ResourceAcceptanceRule")
        requirements = tuple_of("requirements", self.requirements, SnapshotRequirement)
        check_bool("include_optional_resources", self.include_optional_resources)
        constrained = self.default_rule.has_constraints or any(
            rule.has_constraints for rule in rules.values()
        )
        if not constrained and not requirements:
            raise ValueError("an acceptance policy needs a constraining rule or a requirement")
        object.__setattr__(self, "resource_rules", ReadOnlyDict(rules))
        object.__setattr__(self, "requirements", requirements)

    @property
    def referenced_keys(self) -> tuple[ResourceKey, ...]:
        """Keys of ``resource_rules`` first, then requirement keys, de-duplicated."""
        keys = list(self.resource_rules)
        for requirement in self.requirements:
            keys.extend(requirement.keys)
        return tuple(dict.fromkeys(keys))

    def rule_for(self, key: ResourceKey) -> ResourceAcceptanceRule:
        """The explicit rule for ``key``, else ``default_rule``."""
        return self.resource_rules.get(key, self.default_rule)


@final
@dataclass(frozen=True, slots=True)
class SnapshotAcceptanceViolation:
    """One reason a snapshot was rejected: for one key (``key`` set) or for a group."""

    reason: SnapshotAcceptanceReason
    keys: tuple[ResourceKey, ...]
    message: str
    key: ResourceKey | None = None
    requirement_name: str = ""
    current_age_seconds: float | None = None
    max_age_seconds: float | None = None
    stale: bool | None = None
    authority_rank: int | None = None
    minimum_authority_rank: int | None = None
    accepted_count: int | None = None
    required_count: int | None = None


class ResourceAcceptanceError(CoalestraError):
    """``key`` resolved, but its value broke the acceptance rules (``violations``)."""

    # No ``-> None``, like ResourceResolutionError: the 0.6 signature has no annotation.
    def __init__(self, key: ResourceKey, violations: Iterable[SnapshotAcceptanceViolation]):
        self.key = key
        self.violations = tuple(violations)
        if not self.violations:
            raise ValueError("violations cannot be empty")
        super().__init__(key, self.violations)

    def __str__(self) -> str:
        return "; ".join(violation.message for violation in self.violations)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.violations), self.__dict__)


class SnapshotAcceptanceError(SnapshotBuildError):
    """The resolved snapshot is not good enough to use; ``violations`` says why.

    ``errors`` maps every key a violation names to a :class:`ResourceAcceptanceError`;
    ``snapshot`` is the rejected candidate (for revalidation: the retained state).
    """

    def __init__(
        self, *, violations: Iterable[SnapshotAcceptanceViolation], snapshot: Any | None = None
    ) -> None:
        found = tuple(violations)
        if not found:
            raise ValueError("violations cannot be empty")
        by_key: dict[ResourceKey, list[SnapshotAcceptanceViolation]] = {}
        for violation in found:
            for key in violation.keys:
                by_key.setdefault(key, []).append(violation)
        errors = {key: ResourceAcceptanceError(key, items) for key, items in by_key.items()}
        super().__init__(errors, snapshot=snapshot)
        self.violations = found

    def __str__(self) -> str:
        reasons = sorted({violation.reason.value for violation in self.violations})
        return (
            f"Snapshot rejected by its acceptance policy: {len(self.violations)} "
            f"violation(s) ({', '.join(reasons)})"
        )


TtlFor = Callable[[ResourceKey], float]


def evaluate_acceptance(
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    policy: SnapshotAcceptancePolicy,
    required: Iterable[ResourceKey],
    optional: Iterable[ResourceKey],
    *,
    now: float,
    ttl_for: TtlFor,
) -> tuple[SnapshotAcceptanceViolation, ...]:
    """Return every violation of ``policy`` by ``values`` (empty: accepted).

    Keys checked directly: ``required``, ``optional`` with ``include_optional_resources``, and
    every key with an explicit rule. Unresolved keys only count against requirement groups.
    """
    direct = list(required)
    if policy.include_optional_resources:
        direct += optional
    direct += policy.resource_rules
    checked = dict.fromkeys(direct)
    memo: dict[ResourceKey, tuple[SnapshotAcceptanceViolation, ...]] = {}

    def judge(key: ResourceKey) -> tuple[SnapshotAcceptanceViolation, ...]:
        if key not in memo:
            value = values.get(key)
            memo[key] = (
                () if value is None else _check_value(value, policy.rule_for(key), now, ttl_for)
            )
        return memo[key]

    found: list[SnapshotAcceptanceViolation] = []
    for key in checked:
        found += judge(key)
    added = set(checked)
    for requirement in policy.requirements:
        accepted = sum(1 for key in requirement.keys if key in values and not judge(key))
        if accepted >= requirement.minimum_count:
            continue
        for key in requirement.keys:
            if key not in added:
                added.add(key)
                found += judge(key)
        found.append(_unsatisfied(requirement, accepted))
    return tuple(found)


def _check_value(
    value: SnapshotValue[Any], rule: ResourceAcceptanceRule, now: float, ttl_for: TtlFor
) -> tuple[SnapshotAcceptanceViolation, ...]:
    if not rule.has_constraints:
        return ()
    key = value.key
    # Recomputed from observed_at, so a value pinned in a session keeps ageing.
    age = max(0.0, value.age_seconds, now - value.observed_at)
    stale = value.stale or age > ttl_for(key)
    found: list[SnapshotAcceptanceViolation] = []
    if stale and not rule.allow_stale:
        found.append(
            SnapshotAcceptanceViolation(
                reason=SnapshotAcceptanceReason.STALE,
                keys=(key,),
                message=f"{key} is stale (age {age:.3f}s)",
                key=key,
                current_age_seconds=age,
                stale=True,
            )
        )
    limit = rule.max_age_seconds
    if limit is not None and age > limit:
        found.append(
            SnapshotAcceptanceViolation(
                reason=SnapshotAcceptanceReason.TOO_OLD,
                keys=(key,),
                message=f"{key} is {age:.3f}s old, more than the allowed {limit:.3f}s",
                key=key,
                current_age_seconds=age,
                max_age_seconds=limit,
                stale=stale,
            )
        )
    minimum = rule.minimum_authority_rank
    if minimum is not None and value.authority_rank < minimum:
        found.append(
            SnapshotAcceptanceViolation(
                reason=SnapshotAcceptanceReason.INSUFFICIENT_AUTHORITY,
                keys=(key,),
                message=(
                    f"{key} has authority rank {value.authority_rank}, below the required {minimum}"
                ),
                key=key,
                authority_rank=value.authority_rank,
                minimum_authority_rank=minimum,
            )
        )
    return tuple(found)


def _unsatisfied(requirement: SnapshotRequirement, accepted: int) -> SnapshotAcceptanceViolation:
    return SnapshotAcceptanceViolation(
        reason=SnapshotAcceptanceReason.REQUIREMENT_UNSATISFIED,
        keys=requirement.keys,
        message=(
            f"requirement {requirement.name!r} has {accepted} acceptable resource(s) of "
            f"{len(requirement.keys)}; {requirement.minimum_count} required"
        ),
        requirement_name=requirement.name,
        accepted_count=accepted,
        required_count=requirement.minimum_count,
    )
