"""Retry: how many attempts a source call gets, how long to back off between them, and which
errors are worth another attempt at all."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from random import random as _default_random
from typing import Final, TypeAlias, final

from .._compat import TIMEOUT_ERRORS
from ..core import (
    CircuitOpenError,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
    SourceUnavailableError,
)
from ..core._validation import check_float, check_int

# Errors that say "the source is unavailable right now": another attempt may succeed.
# (TimeoutError and ConnectionError are OSError subclasses.) Anything else -- a ValueError, a
# broken source contract -- would fail the same way again, so it gets one attempt.
# On 3.10 asyncio's and concurrent.futures' TimeoutError are not yet the builtin (nor OSErrors).
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    SourceUnavailableError,
    OSError,
    *TIMEOUT_ERRORS,
)

# Transient-looking errors another attempt cannot fix: the circuit refused the call, or the
# build's own deadline or capacity wait ran out. Retrying these only burns the deadline (and,
# for an open circuit, hammers a source the breaker is protecting).
_NEVER_RETRIED: Final[tuple[type[BaseException], ...]] = (
    CircuitOpenError,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
)


ErrorFilter: TypeAlias = (
    "type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]"
)
"""Which errors a :class:`RetryPolicy` filter matches: an exception type, a tuple of them, or a
predicate ``error -> bool``."""


def _check_filter(name: str, value: object) -> object:
    """``value`` as stored: ``None``, a tuple of exception types, or a predicate.

    Raises:
        TypeError: anything else (an empty tuple, a non-exception type, ...).
    """
    if value is None:
        return None
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, tuple):
        if not value or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in value
        ):
            raise TypeError(
                f"{name} must be an exception type, a non-empty tuple of them, or a predicate"
            )
        return value
    if callable(value):
        return value
    raise TypeError(
        f"{name} must be an exception type, a tuple of them, or a predicate, "
        f"got {type(value).__name__}"
    )


def _matches(matcher: object, error: BaseException) -> bool:
    """True when ``error`` passes a checked filter (a raising predicate matches nothing)."""
    if isinstance(matcher, tuple):
        return isinstance(error, matcher)
    try:
        return bool(matcher(error))  # type: ignore[operator]  # checked callable
    except Exception:
        return False  # a broken predicate must not break the build; it retries nothing


def _doubled(base: float, times: int) -> float:
    """``base * 2 ** times`` exactly, ``inf`` where a float cannot hold it."""
    # Any non-zero float (>= 2**-1074) doubled 2100 times exceeds the largest float (< 2**1024),
    # so capping the exponent there changes no result and keeps huge attempt numbers cheap.
    try:
        return math.ldexp(base, min(times, 2100))
    except OverflowError:
        return math.inf


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed source call is retried: capped exponential backoff with jitter.

    Attempt ``n`` (``n >= 2``) waits ``delay_for_attempt(n - 1)`` after attempt ``n - 1``
    failed with an error :meth:`is_retryable` accepts. The engine also never sleeps past the
    build's deadline.

    Args:
        max_attempts: total attempts including the first; ``1`` disables retries.
        base_delay_seconds: the delay before the first retry, doubled for each later one.
        max_delay_seconds: the cap on the un-jittered delay; must be ``>= base_delay_seconds``.
        jitter_ratio: each delay is spread uniformly over ``delay * (1 +/- jitter_ratio)`` so
            callers that failed together do not retry together; in ``[0, 1]``.
        retry_on: opt-in: the errors worth another attempt, instead of the default transient
            set: an exception type, a tuple of them, or a predicate ``error -> bool``.
        give_up_on: opt-in: errors never retried, checked first (same forms). Either way
            :class:`~coalestra.CircuitOpenError`,
            :class:`~coalestra.SnapshotDeadlineExceededError` and
            :class:`~coalestra.SourceQueueTimeoutError` are never retried, and a predicate
            that raises counts as "no match".

    Raises:
        TypeError: an argument has the wrong type (the message names it).
        ValueError: an argument is out of range: ``max_attempts < 1``, a negative, NaN or
            infinite delay, ``max_delay_seconds < base_delay_seconds``, or a jitter ratio
            outside ``[0, 1]``.
    """

    max_attempts: int = 2
    base_delay_seconds: float = 0.05
    max_delay_seconds: float = 1.0
    jitter_ratio: float = 0.1
    # Keyword-only and after the contract's four fields, whose order stays positional.
    retry_on: ErrorFilter | None = field(default=None, kw_only=True)
    give_up_on: ErrorFilter | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "retry_on", _check_filter("retry_on", self.retry_on))
        setattr_(self, "give_up_on", _check_filter("give_up_on", self.give_up_on))
        check_int("max_attempts", self.max_attempts, minimum=1)
        base = check_float("base_delay_seconds", self.base_delay_seconds)
        cap = check_float("max_delay_seconds", self.max_delay_seconds)
        if cap < base:
            raise ValueError(
                f"max_delay_seconds must be >= base_delay_seconds ({base!r}), got {cap!r}"
            )
        jitter = check_float("jitter_ratio", self.jitter_ratio)
        if jitter > 1.0:
            raise ValueError(f"jitter_ratio must be in [0, 1], got {jitter!r}")
        # Store floats so ints given by users compare and render like the defaults.
        setattr_(self, "base_delay_seconds", base)
        setattr_(self, "max_delay_seconds", cap)
        setattr_(self, "jitter_ratio", jitter)

    def delay_for_attempt(
        self, attempt: int, *, random: Callable[[], float] | None = None
    ) -> float:
        """Return the seconds to wait before retry number ``attempt`` (1 = the first retry).

        The un-jittered delay is ``min(max_delay_seconds, base_delay_seconds * 2 **
        max(0, attempt - 1))``, so ``attempt`` 0 (or below) gives the base delay; jitter then
        scales it by a factor in ``[1 - jitter_ratio, 1 + jitter_ratio]`` (``random() == 0.5``
        means no jitter), and the result is never negative.

        Args:
            attempt: the retry number.
            random: a source of floats in ``[0, 1)``; ``random.random`` by default. Inject
                one for reproducible schedules.

        Raises:
            TypeError: ``attempt`` is not an int, or ``random`` is not callable.
            ValueError: ``random()`` returned a value outside ``[0, 1]``.
        """
        check_int("attempt", attempt)
        draw = _default_random if random is None else random
        if not callable(draw):
            raise TypeError(f"random must be callable, got {type(draw).__name__}")
        delay = min(self.max_delay_seconds, _doubled(self.base_delay_seconds, max(0, attempt - 1)))
        if self.jitter_ratio == 0.0 or delay == 0.0:
            return delay
        sample = draw()
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"random() must return a value in [0, 1], got {sample!r}")
        return max(0.0, delay * (1.0 + self.jitter_ratio * (2.0 * sample - 1.0)))

    def is_retryable(self, error: BaseException) -> bool:
        """Return True when another attempt could succeed where ``error`` failed.

        True for :class:`~coalestra.SourceUnavailableError` (source timeouts included),
        ``TimeoutError``, ``ConnectionError`` and ``OSError`` (and their subclasses), except
        :class:`~coalestra.CircuitOpenError`, :class:`~coalestra.SnapshotDeadlineExceededError`
        and :class:`~coalestra.SourceQueueTimeoutError`. False for everything else: a
        ``ValueError``, a :class:`~coalestra.SourceProtocolError`, cancellation.

        With ``retry_on`` the errors it matches replace that transient set; an error
        ``give_up_on`` matches is never retried; the three never-retried errors above stay
        never retried.

        Raises:
            TypeError: ``error`` is not an exception.
        """
        if not isinstance(error, BaseException):
            raise TypeError(f"error must be an exception, got {type(error).__name__}")
        if isinstance(error, _NEVER_RETRIED):
            return False
        if self.give_up_on is not None and _matches(self.give_up_on, error):
            return False
        if self.retry_on is None:
            return isinstance(error, _TRANSIENT)
        return _matches(self.retry_on, error)
