"""The builder's resolvers made from its options: which freshness policy, authority rules and
resilience policy apply to a key -- the checks of several options at once (pairs that exclude
each other), run once while the builder wires its parts (:mod:`._wiring`).
"""

from __future__ import annotations

from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    SourceAuthorityPolicy,
)
from ..resilience import ResiliencePolicyResolver, RetryPolicy, SourceResiliencePolicy
from ._options import BuilderOptions
from ._policy import DEFAULT_FRESHNESS, PolicyResolver


def _exclusive(first: str, first_value: object, second: str, second_value: object) -> None:
    if first_value is not None and second_value is not None:
        raise ValueError(f"pass {first} or {second}, not both")


def freshness_provider(
    default_policy: FreshnessPolicy | None, policy_resolver: FreshnessPolicyProvider | None
) -> FreshnessPolicyProvider:
    """The key -> policy function: the resolver (it wins when both are given), a default
    policy, or the builder's default (1 s TTL, usable on error up to 10 s)."""
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
) -> AuthorityPolicyResolver:
    """The authority rules: the resolver given, or one made of ``authority_policy`` (an empty
    one when neither is given, so every source ranks the same)."""
    if authority_policy is not None and authority_resolver is not None:
        raise ValueError("authority_policy and authority_resolver cannot be provided together")
    if authority_resolver is not None:
        if not isinstance(authority_resolver, AuthorityPolicyResolver):
            raise TypeError("authority_resolver must be an AuthorityPolicyResolver")
        return authority_resolver
    if authority_policy is not None and not isinstance(authority_policy, SourceAuthorityPolicy):
        raise TypeError("authority_policy must be a SourceAuthorityPolicy")
    return AuthorityPolicyResolver(default=authority_policy)


def resilience_provider(options: BuilderOptions) -> ResiliencePolicyResolver:
    """One resolver for every source's retry and circuit policy.

    Without a default policy, a given ``circuit_breaker``'s own default circuit policy applies
    to sources that declare none (so its ``failure_threshold`` and recovery time are used).
    """
    retry_policy, default_resilience = options.retry_policy, options.default_resilience
    source_resilience, breaker = options.source_resilience, options.circuit_breaker
    if options.resilience_resolver is not None:
        given = (retry_policy, default_resilience, source_resilience)
        if any(item is not None for item in given):
            raise ValueError(
                "pass resilience_resolver or retry_policy/default_resilience/"
                "source_resilience, not both"
            )
        if not isinstance(options.resilience_resolver, ResiliencePolicyResolver):
            raise TypeError("resilience_resolver must be a ResiliencePolicyResolver")
        return options.resilience_resolver
    _exclusive("retry_policy", retry_policy, "default_resilience", default_resilience)
    if retry_policy is not None:
        if not isinstance(retry_policy, RetryPolicy):
            raise TypeError("retry_policy must be a RetryPolicy")
        default_resilience = SourceResiliencePolicy(retry=retry_policy)
    if breaker is not None and default_resilience is None:
        default_resilience = SourceResiliencePolicy(circuit=breaker.default_policy)
    elif breaker is not None and retry_policy is not None:
        default_resilience = SourceResiliencePolicy(
            retry=retry_policy, circuit=breaker.default_policy
        )
    return ResiliencePolicyResolver(default=default_resilience, overrides=source_resilience)


def check_authority_cache(
    authority: AuthorityPolicyResolver | None, cache: AsyncCache
) -> AuthorityPolicyResolver | None:
    """Authority rules need a cache that validates them."""
    if authority is not None and getattr(cache, "validates_source_authority", False) is not True:
        raise ValueError(
            "authority rules need a cache that declares validates_source_authority = True"
        )
    return authority
