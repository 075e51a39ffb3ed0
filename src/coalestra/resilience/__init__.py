"""Resilience: retry policies, circuit-breaker policies and scopes, and the circuit breaker.

Every source call passes the breaker's gate for its circuit (chosen by the policy's
:class:`CircuitScope`) and is retried per its :class:`RetryPolicy`;
:class:`ResiliencePolicyResolver` decides which :class:`SourceResiliencePolicy` each source gets.
"""

from ._breaker import CircuitBreaker
from ._policy import CircuitBreakerPolicy, SourceResiliencePolicy
from ._resolver import ResiliencePolicyResolver
from ._retry import RetryPolicy
from ._scope import CircuitIdentity, CircuitScope
from ._state import CircuitSnapshot, CircuitState

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "CircuitIdentity",
    "CircuitScope",
    "CircuitSnapshot",
    "CircuitState",
    "ResiliencePolicyResolver",
    "RetryPolicy",
    "SourceResiliencePolicy",
]
