"""The builder's many keyword arguments, turned at once into validated, resolved parts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, final

from ..cache import AsyncMemoryCache
from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    Clock,
    EventSink,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    MetricsSink,
    ObservationPolicy,
    PayloadCopier,
    PayloadIsolator,
    Source,
    SourceAuthorityPolicy,
    SystemClock,
)
from ..core._clock import check_clock
from ..core._validation import check_bool, check_optional_float
from ..observability import NullEventSink, NullMetrics
from ..observability._tracing import NullTracer, Tracer, check_tracer
from ..resilience import (
    CircuitBreaker,
    ResiliencePolicyResolver,
    RetryPolicy,
    SourceResiliencePolicy,
)
from ._policy import DEFAULT_FRESHNESS, PolicyResolver
from ._singleflight import SingleFlight
from ._sources import RegisteredSource, check_limits, register_sources


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


def resilience_provider(
    retry_policy: RetryPolicy | None,
    default_resilience: SourceResiliencePolicy | None,
    source_resilience: Mapping[str, SourceResiliencePolicy] | None,
    resilience_resolver: ResiliencePolicyResolver | None,
    breaker: CircuitBreaker | None = None,
) -> ResiliencePolicyResolver:
    """One resolver for every source's retry and circuit policy.

    Without a default policy, a given ``circuit_breaker``'s own default circuit policy applies
    to sources that declare none (so its ``failure_threshold`` and recovery time are used).
    """
    if resilience_resolver is not None:
        given = (retry_policy, default_resilience, source_resilience)
        if any(item is not None for item in given):
            raise ValueError(
                "pass resilience_resolver or retry_policy/default_resilience/"
                "source_resilience, not both"
            )
        if not isinstance(resilience_resolver, ResiliencePolicyResolver):
            raise TypeError("resilience_resolver must be a ResiliencePolicyResolver")
        return resilience_resolver
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


def check_named_sources(
    label: str, table: Mapping[str, Any] | None, sources: tuple[RegisteredSource, ...]
) -> None:
    """Every name in a per-source table must be a registered source."""
    names = {source.name for source in sources}
    for name in table or {}:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ValueError(f"{label} names unknown source {name!r} (known sources: {known})")


@final
@dataclass(frozen=True, slots=True)
class BuilderSettings:
    """The builder's keyword arguments, validated and resolved once: what its parts read."""

    sources: tuple[RegisteredSource, ...]
    source_limits: Mapping[str, int | None]
    clock: Clock
    metrics: MetricsSink
    events: EventSink
    tracer: Tracer
    policies: FreshnessPolicyProvider
    authority_resolver: AuthorityPolicyResolver
    authority: AuthorityPolicyResolver | None  # None when there are no rules: skip ranking
    resilience: ResiliencePolicyResolver
    retry_policy: RetryPolicy
    observation: ObservationPolicy
    isolator: PayloadIsolator
    cache: AsyncCache
    breaker: CircuitBreaker
    single_flight: SingleFlight | None
    max_concurrency: int
    max_pending_tasks: int
    cache_source_support: bool
    support_cache_max_entries: int | None
    manage_lifecycle: bool
    close_timeout: float | None
    """How long ``aclose()`` waits for background refreshes before cancelling them (None:
    as long as they take)."""
    default_source_timeout: float | None
    """The call timeout of sources that declare none (None: such calls are unbounded)."""
    components: tuple[object, ...]
    """What ``aclose()`` closes with ``manage_lifecycle``: sources (highest priority first),
    cache, events, metrics; each distinct object once."""


def settle(
    sources: Iterable[Source],
    *,
    default_policy: FreshnessPolicy | None,
    policy_resolver: FreshnessPolicyProvider | None,
    authority_policy: SourceAuthorityPolicy | None,
    authority_resolver: AuthorityPolicyResolver | None,
    cache: AsyncCache | None,
    single_flight: SingleFlight | None,
    retry_policy: RetryPolicy | None,
    circuit_breaker: CircuitBreaker | None,
    default_resilience: SourceResiliencePolicy | None,
    source_resilience: Mapping[str, SourceResiliencePolicy] | None,
    resilience_resolver: ResiliencePolicyResolver | None,
    clock: Clock | None,
    metrics: MetricsSink | None,
    events: EventSink | None,
    max_concurrency: int,
    max_pending_tasks: int | None,
    source_concurrency: Mapping[str, int] | None,
    observation_policy: ObservationPolicy | None,
    cache_source_support: bool,
    source_support_cache_max_entries: int | None,
    manage_lifecycle: bool,
    payload_copier: PayloadCopier | None,
    cache_run_payload_copies_in_thread: bool | None,
    cache_max_copy_concurrency: int,
    tracer: Tracer | None,
    close_timeout_seconds: float | None = None,
    default_source_timeout_seconds: float | None = None,
) -> BuilderSettings:
    """Validate every builder argument and resolve defaults, before anything is built.

    Raises:
        TypeError, ValueError: the argument at fault is named.
    """
    _limit("max_concurrency", max_concurrency, optional=False)
    pending = _limit("max_pending_tasks", max_pending_tasks, optional=True)
    support_entries = _limit(
        "source_support_cache_max_entries", source_support_cache_max_entries, optional=True
    )
    _check_copy_settings(cache, cache_run_payload_copies_in_thread, cache_max_copy_concurrency)
    resolved_clock = SystemClock() if clock is None else check_clock(clock)
    given_breaker = (
        None
        if circuit_breaker is None
        else _checked("circuit_breaker", circuit_breaker, CircuitBreaker)
    )
    resilience = resilience_provider(
        retry_policy, default_resilience, source_resilience, resilience_resolver, given_breaker
    )
    default_timeout = check_optional_float(
        "default_source_timeout_seconds", default_source_timeout_seconds, positive=True
    )
    registered = register_sources(sources, resilience, default_timeout)
    check_named_sources("source_resilience", source_resilience, registered)
    authority = authority_provider(authority_policy, authority_resolver)
    ranked = authority if authority.has_rules else None
    resolved_cache = (
        cache
        if cache is not None
        else AsyncMemoryCache(
            payload_copier=payload_copier,
            run_payload_copies_in_thread=cache_run_payload_copies_in_thread,
            max_copy_concurrency=cache_max_copy_concurrency,
        )
    )
    resolved_metrics = NullMetrics() if metrics is None else metrics
    resolved_events = NullEventSink() if events is None else events
    return BuilderSettings(
        sources=registered,
        source_limits=check_limits(source_concurrency, registered),
        clock=resolved_clock,
        metrics=resolved_metrics,
        events=resolved_events,
        tracer=NullTracer() if tracer is None else check_tracer(tracer),
        policies=freshness_provider(default_policy, policy_resolver),
        authority_resolver=authority,
        authority=_check_authority_cache(ranked, resolved_cache),
        resilience=resilience,
        retry_policy=resilience.default.retry if retry_policy is None else retry_policy,
        observation=_checked(
            "observation_policy", observation_policy or ObservationPolicy(), ObservationPolicy
        ),
        isolator=PayloadIsolator(payload_copier),
        cache=resolved_cache,
        breaker=given_breaker or CircuitBreaker(clock=resolved_clock),
        single_flight=None
        if single_flight is None
        else _checked("single_flight", single_flight, SingleFlight),
        max_concurrency=max_concurrency,
        max_pending_tasks=max_concurrency if pending is None else pending,
        cache_source_support=check_bool("cache_source_support", cache_source_support),
        support_cache_max_entries=support_entries,
        manage_lifecycle=check_bool("manage_lifecycle", manage_lifecycle),
        close_timeout=check_close_timeout(close_timeout_seconds, "close_timeout_seconds"),
        default_source_timeout=default_timeout,
        components=_distinct(
            *(source.origin for source in registered),
            resolved_cache,
            resolved_events,
            resolved_metrics,
        ),
    )


def check_close_timeout(value: object, name: str = "timeout") -> float | None:
    """``None`` or a finite number of seconds ``>= 0`` (0: cancel refreshes at once).

    Raises:
        TypeError, ValueError: anything else (the message names ``name``).
    """
    return check_optional_float(name, value, positive=False)


def _distinct(*components: object) -> tuple[object, ...]:
    """``components`` without repeats (by identity), in order: one object in two roles (one
    sink for events and metrics, say) is closed once."""
    unique: dict[int, object] = {}
    for component in components:
        unique.setdefault(id(component), component)
    return tuple(unique.values())


_T = TypeVar("_T")

_DEFAULT_COPY_CONCURRENCY = 4  # AsyncMemoryCache's own default for max_copy_concurrency


def _limit(name: str, value: object, *, optional: bool) -> int | None:
    """A limit of at least 1 (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        accepted = "an integer or None" if optional else "an integer"
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1" + (" or None" if optional else ""))
    return value


def _check_copy_settings(
    cache: AsyncCache | None, in_thread: object, max_copy_concurrency: object
) -> None:
    """The ``cache_*`` copy settings configure the default cache; a custom cache has its own."""
    if in_thread is not None and not isinstance(in_thread, bool):
        raise TypeError("cache_run_payload_copies_in_thread must be a boolean or None")
    if isinstance(max_copy_concurrency, bool) or not isinstance(max_copy_concurrency, int):
        raise TypeError("cache_max_copy_concurrency must be an integer")
    _limit("cache_max_copy_concurrency", max_copy_concurrency, optional=False)
    if cache is not None and (
        in_thread is not None or max_copy_concurrency != _DEFAULT_COPY_CONCURRENCY
    ):
        raise ValueError("cache payload copy settings apply only to the default AsyncMemoryCache")


def _checked(name: str, value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _check_authority_cache(
    authority: AuthorityPolicyResolver | None, cache: AsyncCache
) -> AuthorityPolicyResolver | None:
    if authority is not None and getattr(cache, "validates_source_authority", False) is not True:
        raise ValueError(
            "authority rules need a cache that declares validates_source_authority = True"
        )
    return authority
