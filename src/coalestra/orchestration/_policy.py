"""Freshness policy per key: :class:`PolicyResolver`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias, final

from ..core import FreshnessPolicy, ResourceKey
from ..core._policies import key_overrides
from ..core._validation import check_callable

FreshnessResolver: TypeAlias = Callable[[ResourceKey], FreshnessPolicy | None]
"""A function giving a key's policy, or ``None`` to use the default."""

DEFAULT_FRESHNESS = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=10.0)
"""The builder's policy when none is given (the 0.5.7 contract): a value observed in the last
second is fresh; up to 10 s old it may still be served when every source fails."""


@final
class PolicyResolver:
    """Freshness policies per key: exact-key ``overrides`` first, then ``dynamic(key)`` (when it
    returns a policy), then ``default``.

    Args:
        default: the policy for keys no rule covers.
        overrides: policies for exact keys.
        dynamic: a function ``key -> FreshnessPolicy | None``, e.g. by namespace.

    Raises:
        TypeError: a policy is not a :class:`FreshnessPolicy`, or ``dynamic`` is not callable.
    """

    __slots__ = ("_default", "_dynamic", "_overrides", "constant")

    def __init__(
        self,
        default: FreshnessPolicy,
        overrides: Mapping[ResourceKey, FreshnessPolicy] | None = None,
        dynamic: FreshnessResolver | None = None,
    ) -> None:
        if not isinstance(default, FreshnessPolicy):
            raise TypeError(f"default must be a FreshnessPolicy, got {type(default).__name__}")
        self._default = default
        self._overrides = key_overrides(overrides, FreshnessPolicy)
        self._dynamic = None if dynamic is None else check_callable("dynamic", dynamic)
        # The policy of every key when no rule can pick another (no overrides, no dynamic
        # resolver), else ``None``: a build then needs no per-key resolution.
        self.constant = None if self._overrides or self._dynamic is not None else default

    @property
    def default(self) -> FreshnessPolicy:
        """The policy for keys no rule covers."""
        return self._default

    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        """Return the policy for ``key``.

        Raises:
            TypeError: the dynamic resolver returned something other than a policy or ``None``.
        """
        overrides = self._overrides
        if overrides:  # an empty table is not asked: a lookup hashes the key, per key per build
            policy = overrides.get(key)
            if policy is not None:
                return policy
        if self._dynamic is not None:
            found = self._dynamic(key)
            if found is not None:
                if not isinstance(found, FreshnessPolicy):
                    raise TypeError("the dynamic freshness resolver must return a policy or None")
                return found
        return self._default
