"""The builder's options, declared once: :class:`BuilderOptions`.

Every keyword option of :class:`SnapshotBuilder` is one field of :class:`BuilderOptions`, written
once with its type, default, check and one line of help::

    max_concurrency: int = option(8, at_least_one, "source calls running at once ...")

- the **check** takes ``(name, value)`` and returns the value to keep (or raises the
  ``TypeError``/``ValueError`` users see); it runs once, when the builder is made;
- the **help** line becomes the option's entry in the builder's docstring (``help()``);
- the builder reads the checked value as ``options.<name>``.

``SnapshotBuilder.__init__`` spells the same parameters (type checkers and ``inspect.signature``
need them there) and hands them over as they are; ``tests/orchestration/test_options.py`` fails
when the signature and this declaration differ (names, order, defaults or types).

To add an option: add its field here (type, default, check, help), add the same parameter to
``SnapshotBuilder.__init__``, and read ``options.<name>`` where it is used (a property on the
builder, if users may read it back). Checks of several options at once (pairs that exclude each
other) are in :mod:`._resolvers`, called while the builder wires its parts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, final

from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    Clock,
    EventSink,
    FreshnessPolicy,
    MetricsSink,
    ObservationPolicy,
    PayloadCopier,
    SourceAuthorityPolicy,
)
from ..core._clock import check_clock
from ..core._copy_health import check_copy_timeout
from ..core._validation import (
    at_least_one,
    at_least_one_or_none,
    check_bool,
    instance_or_none,
    positive_seconds_or_none,
    seconds,
    seconds_or_none,
)
from ..observability import BufferOverflowPolicy
from ..observability._buffered import check_overflow
from ..observability._buffering import check_buffer_mode, check_shutdown_budget
from ..observability._tracing import Tracer, check_tracer
from ..resilience import (
    CircuitBreaker,
    ResiliencePolicyResolver,
    RetryPolicy,
    SourceResiliencePolicy,
)
from ._flights import SingleFlight
from ._policy import PolicyResolver

Check = Callable[[str, Any], Any]
"""An option's check: ``(name, value) -> the value to keep``; raises for a bad value."""


def option(default: Any, check: Check | None, help: str) -> Any:
    """One option's field: its default, its check (``None``: any value; checked together with
    other options while wiring) and its line of help."""
    return field(default=default, metadata={"check": check, "help": help})


# -- checks of one option -------------------------------------------------------------------


def check_close_timeout(value: object, name: str = "timeout") -> float | None:
    """``None`` or a finite number of seconds ``>= 0`` (0: cancel refreshes at once).

    Raises:
        TypeError, ValueError: anything else (the message names ``name``).
    """
    return seconds_or_none(name, value)


def _clock(name: str, value: object) -> Clock | None:
    return None if value is None else check_clock(value)


def _tracer(name: str, value: object) -> Tracer | None:
    return None if value is None else check_tracer(value)


def _bool_or_none(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be a boolean or None")
    return value


def _copy_concurrency(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    return at_least_one(name, value)


# -- the options ----------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class BuilderOptions:
    """The builder's keyword options, each checked once (see the module docstring)."""

    default_policy: FreshnessPolicy | None = option(
        None, None, "freshness for every key (default: TTL 1 s, usable on error up to 10 s)."
    )
    policy_resolver: PolicyResolver | None = option(
        None, None, "per-key freshness instead of ``default_policy`` (it wins when both are given)."
    )
    authority_policy: SourceAuthorityPolicy | None = option(
        None, None, "which source's revision may replace which (or ``authority_resolver``)."
    )
    authority_resolver: AuthorityPolicyResolver | None = option(
        None, None, "the authority rules as a resolver (instead of ``authority_policy``)."
    )
    cache: AsyncCache | None = option(
        None, None, "the cache (default: an :class:`AsyncMemoryCache` of 10,000 entries)."
    )
    single_flight: SingleFlight | None = option(
        None,
        instance_or_none(SingleFlight),
        "an internal single-flight table to share (rarely needed).",
    )
    retry_policy: RetryPolicy | None = option(
        None, None, "the default retry policy (shorthand for ``default_resilience``)."
    )
    circuit_breaker: CircuitBreaker | None = option(
        None,
        instance_or_none(CircuitBreaker),
        "a breaker to share; default: a new one on this builder's clock.",
    )
    default_resilience: SourceResiliencePolicy | None = option(
        None, None, "the retry and circuit policy of sources no other policy covers."
    )
    source_resilience: Mapping[str, SourceResiliencePolicy] | None = option(
        None, None, "retry and circuit policies per source name."
    )
    resilience_resolver: ResiliencePolicyResolver | None = option(
        None, None, "every source's retry and circuit policy (instead of the three above)."
    )
    clock: Clock | None = option(
        None,
        _clock,
        "the clock every TTL, deadline and backoff reads (default: ``SystemClock()``).",
    )
    metrics: MetricsSink | None = option(None, None, "the metrics sink (default: a null sink).")
    events: EventSink | None = option(None, None, "the event sink (default: a null sink).")
    max_concurrency: int = option(
        8, at_least_one, "source calls running at once across all builds and sessions."
    )
    max_pending_tasks: int | None = option(
        None, at_least_one_or_none, "workers per dispatch (default: ``max_concurrency``)."
    )
    source_concurrency: Mapping[str, int] | None = option(
        None, None, "per-source call limits; overrides a source's own ``max_concurrency``."
    )
    observation_policy: ObservationPolicy | None = option(
        None, instance_or_none(ObservationPolicy), "how future ``observed_at`` stamps are treated."
    )
    cache_source_support: bool = option(True, check_bool, "cache ``supports()`` answers.")
    source_support_cache_max_entries: int | None = option(
        100000, at_least_one_or_none, "the most keys whose ``supports()`` answers are kept."
    )
    manage_lifecycle: bool = option(
        False,
        check_bool,
        "``aclose()`` also closes the sources, the cache and the sinks (their ``aclose()`` or "
        "``close()``), each distinct one once.",
    )
    payload_copier: PayloadCopier | None = option(
        None, None, "copies mutable payloads at this builder's boundaries (payload isolation)."
    )
    run_payload_copies_in_thread: bool | None = option(
        None,
        _bool_or_none,
        "the builder's own copies (source payloads, hand-outs, its publisher, "
        "``snapshot_async()``): ``None`` copies large payloads of the built-in copier in "
        "worker threads (one job per source call or build) and keeps a custom copier inline; "
        "``True`` offloads every mutable payload's copy; ``False`` none.",
    )
    max_copy_concurrency: int = option(
        4, _copy_concurrency, "the builder's copy jobs running at once (the others wait)."
    )
    copy_shutdown_timeout_seconds: float = option(
        5.0, check_copy_timeout, "how long :meth:`aclose` gives running copies (> 0)."
    )
    cache_run_payload_copies_in_thread: bool | None = option(
        None, _bool_or_none, "copy payloads in a worker thread (the default cache only)."
    )
    cache_max_copy_concurrency: int = option(
        4, _copy_concurrency, "payload copies running at once (the default cache only)."
    )
    tracer: Tracer | None = option(
        None, _tracer, "spans around builds and source calls (e.g. the OpenTelemetry integration)."
    )
    not_found_ttl_seconds: float | None = option(
        None,
        positive_seconds_or_none,
        "remember keys that every source said do not exist (:class:`ResourceNotFound`) for "
        "this long, answering them without a source call (negative caching); ``None`` (the "
        "default): never remember them.",
    )
    close_timeout_seconds: float | None = option(
        None,
        seconds_or_none,
        "opt-in: how long :meth:`aclose` (and ``async with``) waits for background refreshes "
        "before cancelling the ones still running (``None``: as long as they take; ``0``: "
        "cancel at once).",
    )
    default_source_timeout_seconds: float | None = option(
        None,
        positive_seconds_or_none,
        "opt-in: the call timeout of every source that declares no ``timeout_seconds`` "
        "(``None``: their calls are unbounded).",
    )
    batch_window_seconds: float | None = option(
        None,
        seconds_or_none,
        "opt-in: keys that concurrent builds send to the same batch source share its calls: "
        "``0.0`` gathers what arrives in the same loop turn, a positive value waits up to "
        "that long for more (never more than half of a build's remaining time); ``None`` (the "
        "default): every build makes its own calls. A batch source's own "
        "``batch_window_seconds`` overrides it.",
    )
    buffer_observability: bool | str | None = option(
        None,
        check_buffer_mode,
        "whether ``metrics``/``events`` get a buffer delivering on a worker thread: ``None`` "
        '(the default, as 0.5.7) and ``False`` call them directly; ``"auto"`` buffers every '
        "sink without a truthy ``coalestra_non_blocking`` attribute; ``True`` buffers every "
        "sink (the null sinks need none). A sink already buffered is used as it is.",
    )
    observability_max_pending: int = option(
        10000, at_least_one, "the bound of the buffers the builder makes around its sinks."
    )
    observability_overflow: BufferOverflowPolicy = option(
        BufferOverflowPolicy.DROP_OLDEST,
        check_overflow,
        "what those buffers do with a record when full (a :class:`BufferOverflowPolicy`).",
    )
    observability_shutdown_timeout_seconds: float = option(
        5.0,
        check_shutdown_budget,
        "how long :meth:`aclose` lets those buffers deliver (finite, > 0).",
    )
    observability_drain_on_shutdown: bool = option(
        True,
        check_bool,
        "deliver what those buffers hold at :meth:`aclose` (True) or discard it (False).",
    )
    require_source_timeout_declarations: bool | None = option(
        None,
        _bool_or_none,
        "``True`` refuses sources without a ``blocking_io`` declaration "
        "(:class:`BlockingSourceTimeoutConfigured`); ``None`` (the default, our 0.5.7 "
        "behaviour) and ``False`` accept them and count them in health.",
    )
    allow_unsafe_blocking_sources: bool = option(
        False,
        check_bool,
        "accept blocking sources that are not protected (see "
        ":func:`inspect_source_timeout_guarantee`); ``False``: refuse them.",
    )
    source_transport_timeout_grace_seconds: float = option(
        0.05,
        seconds,
        "how much longer than its transport timeout a protected blocking source's call may "
        "take before it counts as a violation.",
    )
    source_deadline_dispatch_grace_seconds: float = option(
        0.0,
        seconds,
        "how far a protected blocking source's transport timeout may exceed the time left "
        "before the deadline with the call still started (``0``: it must fit).",
    )

    def __post_init__(self) -> None:
        for declared in fields(self):
            check = declared.metadata["check"]
            if check is not None:
                name = declared.name
                object.__setattr__(self, name, check(name, getattr(self, name)))
        if self.cache is not None and (
            self.cache_run_payload_copies_in_thread is not None
            or self.cache_max_copy_concurrency != _default_of("cache_max_copy_concurrency")
        ):
            raise ValueError(
                "cache payload copy settings apply only to the default AsyncMemoryCache"
            )


def _default_of(name: str) -> Any:
    return next(f.default for f in fields(BuilderOptions) if f.name == name)


def options_help(indent: str = "        ") -> str:
    """The ``Args:`` lines of every option, for the builder's docstring (its ``{options}``
    placeholder, already indented by ``indent``)."""
    return f"\n{indent}".join(
        textwrap.fill(
            f"{item.name}: {item.metadata['help']}",
            width=96 - len(indent),
            subsequent_indent="    ",
        ).replace("\n", f"\n{indent}")
        for item in fields(BuilderOptions)
    )
