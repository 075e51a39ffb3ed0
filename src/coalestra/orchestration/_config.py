"""The builder's many keyword arguments, turned at once into validated, resolved parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core import (
    AuthorityPolicyResolver,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    SourceAuthorityPolicy,
)
from ..resilience import ResiliencePolicyResolver, RetryPolicy, SourceResiliencePolicy
from ._policy import DEFAULT_FRESHNESS, PolicyResolver
from ._sources import RegisteredSource


def _exclusive(first: str, first_value: object, second: str, second_value: object) -> None:
    if first_value is not None and second_value is not None:
        raise ValueError(f"pass {first} or {second}, not both")


def freshness_provider(
    default_policy: FreshnessPolicy | None, policy_resolver: FreshnessPolicyProvider | None
) -> FreshnessPolicyProvider:
    """The key -> policy function: the resolver, a default policy, or one second of TTL."""
    _exclusive("default_policy", default_policy, "policy_resolver", policy_resolver)
    if policy_resolver is not None:
        if not callable(getattr(policy_resolver, "resolve", None)):
            raise TypeError("policy_resolver must have a resolve(key) method")
        return policy_resolver
    if default_policy is not None and not isinstance(default_policy, FreshnessPolicy):
        raise TypeError("default_policy must be a FreshnessPolicy")
    return PolicyResolver(default_policy or DEFAULT_FRESHNESS)


def authority_provider(
    authority_policy: SourceAuthorityPolicy | None,
    authority_resolver: AuthorityPolicyResolver | None,
) -> AuthorityPolicyResolver | None:
    """The authority rules in force, or ``None`` when every source ranks the same."""
    _exclusive("authority_policy", authority_policy, "authority_resolver", authority_resolver)
    if authority_resolver is not None:
        if not isinstance(authority_resolver, AuthorityPolicyResolver):
            raise TypeError("authority_resolver must be an AuthorityPolicyResolver")
        return authority_resolver if authority_resolver.has_rules else None
    if authority_policy is None:
        return None
    if not isinstance(authority_policy, SourceAuthorityPolicy):
        raise TypeError("authority_policy must be a SourceAuthorityPolicy")
    resolver = AuthorityPolicyResolver(default=authority_policy)
    return resolver if resolver.has_rules else None


def resilience_provider(
    retry_policy: RetryPolicy | None,
    default_resilience: SourceResiliencePolicy | None,
    source_resilience: Mapping[str, SourceResiliencePolicy] | None,
    resilience_resolver: ResiliencePolicyResolver | None,
) -> ResiliencePolicyResolver:
    """One resolver for every source's retry and circuit policy."""
    if resilience_resolver is not None:
        if default_resilience is not None or source_resilience is not None:
            raise ValueError(
                "pass resilience_resolver or default_resilience/source_resilience, not both"
            )
        if not isinstance(resilience_resolver, ResiliencePolicyResolver):
            raise TypeError("resilience_resolver must be a ResiliencePolicyResolver")
        return resilience_resolver
    _exclusive("retry_policy", retry_policy, "default_resilience", default_resilience)
    if retry_policy is not None:
        if not isinstance(retry_policy, RetryPolicy):
            raise TypeError("retry_policy must be a RetryPolicy")
        default_resilience = SourceResiliencePolicy(retry=retry_policy)
    return ResiliencePolicyResolver(default=default_resilience, overrides=source_resilience)


def check_named_sources(
    label: str, table: Mapping[str, Any] | None, sources: tuple[RegisteredSource, ...]
) -> None:
    """Every name in a per-source table must be a registered source."""
    names = {source.name for source in sources}
    for name in table or {}:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ValueError(f"{label} names unknown source {name!r} (known sources: {known})")
