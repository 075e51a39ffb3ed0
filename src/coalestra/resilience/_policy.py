"""Resilience policies: the circuit-breaker policy, and the retry + circuit pair per source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

from ..core._validation import check_bool, check_enum, check_float, check_int
from ._retry import RetryPolicy
from ._scope import CircuitScope


@final
@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    """When a source's circuit opens, how long it stays open, and how finely it is split.

    ``failure_threshold`` consecutive failures in one circuit open it; calls in that circuit
    then fail fast with :class:`~coalestra.CircuitOpenError` for
    ``recovery_timeout_seconds``, after which one probe call at a time is let through: its
    success closes the circuit, its failure re-opens it.

    Args:
        scope: which calls share a circuit (see :class:`CircuitScope`); its string value is
            accepted too.
        failure_threshold: consecutive failures that open the circuit, ``>= 1``.
        recovery_timeout_seconds: how long an open circuit refuses calls before admitting a
            probe; finite, ``>= 0``.
        enabled: ``False`` turns the breaker off for this policy: it never opens or refuses.

    Raises:
        TypeError: an argument has the wrong type (the message names it).
        ValueError: ``scope`` is unknown, ``failure_threshold < 1``, or the timeout is
            negative, NaN or infinite.
    """

    scope: CircuitScope = CircuitScope.SOURCE
    failure_threshold: int = 3
    recovery_timeout_seconds: float = 10.0
    enabled: bool = True

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "scope", check_enum("scope", self.scope, CircuitScope))
        check_int("failure_threshold", self.failure_threshold, minimum=1)
        setattr_(
            self,
            "recovery_timeout_seconds",
            check_float("recovery_timeout_seconds", self.recovery_timeout_seconds),
        )
        check_bool("enabled", self.enabled)


@final
@dataclass(frozen=True, slots=True)
class SourceResiliencePolicy:
    """The retry and circuit-breaker policy of one source.

    A source may declare one (``resilience_policy=``); the builder may also set them centrally
    (``default_resilience``, ``source_resilience``, or a
    :class:`ResiliencePolicyResolver`, whose explicit entries override the source's own).

    Args:
        retry: how failed calls are retried.
        circuit: how failures open the source's circuits.

    Raises:
        TypeError: ``retry`` is not a :class:`RetryPolicy` or ``circuit`` is not a
            :class:`CircuitBreakerPolicy`.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitBreakerPolicy = field(default_factory=CircuitBreakerPolicy)

    def __post_init__(self) -> None:
        if not isinstance(self.retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")
        if not isinstance(self.circuit, CircuitBreakerPolicy):
            raise TypeError(
                f"circuit must be a CircuitBreakerPolicy, got {type(self.circuit).__name__}"
            )
