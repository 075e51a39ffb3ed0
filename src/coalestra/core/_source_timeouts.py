"""Blocking-source timeout declarations: what a source says about its transport timeout.

A synchronous source running in a worker thread cannot be stopped by coalestra: when our
timeout fires, the thread goes on until its own I/O gives up. A source that does blocking I/O
therefore declares it (``blocking_io=True``) together with the timeout its transport enforces
(``transport_timeout_seconds``). :func:`inspect_source_timeout_guarantee` reads those
declarations into a :class:`SourceTimeoutGuarantee`: a blocking source is *protected* when it
runs off the event loop and its transport gives up before the source's own timeout does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, final, runtime_checkable

from ._validation import check_bool, check_enum, check_optional_float, check_str


@runtime_checkable
class BlockingSourceTimeoutConfigured(Protocol):
    """A source that declares whether it blocks and how long its transport may take.

    ``blocking_io``: the source does blocking I/O. ``blocking_io_offloaded``: that I/O runs in
    a worker thread, never on the event loop. ``transport_timeout_seconds``: the timeout the
    transport itself enforces (the socket or driver timeout), or ``None`` when there is none.
    """

    @property
    def blocking_io(self) -> bool:
        """True when the source does blocking I/O."""
        ...

    @property
    def blocking_io_offloaded(self) -> bool:
        """True when the blocking I/O runs in a worker thread."""
        ...

    @property
    def transport_timeout_seconds(self) -> float | None:
        """The transport's own timeout in seconds, or ``None``."""
        ...


class SourceTimeoutGuaranteeStatus(str, Enum):
    """What a source's timeout declarations guarantee."""

    UNDECLARED = "undeclared"
    NON_BLOCKING = "non_blocking"
    PROTECTED = "protected"
    UNSAFE_NOT_OFFLOADED = "unsafe_not_offloaded"
    UNSAFE_TIMEOUT_MISSING = "unsafe_timeout_missing"
    UNSAFE_TIMEOUT_NOT_WITHIN_SOURCE = "unsafe_timeout_not_within_source"


_SAFE = frozenset(
    {SourceTimeoutGuaranteeStatus.NON_BLOCKING, SourceTimeoutGuaranteeStatus.PROTECTED}
)


@final
@dataclass(frozen=True, slots=True)
class SourceTimeoutGuarantee:
    """The result of :func:`inspect_source_timeout_guarantee` for one source.

    ``source`` is the source's name; ``source_timeout_seconds`` the timeout that bounds its
    calls (``None``: unbounded). The other fields repeat the declarations (``False``/``None``
    for an undeclared source).

    Raises:
        TypeError, ValueError: a field has the wrong type or value (a ``status`` may be given
            as its string value).
    """

    source: str
    status: SourceTimeoutGuaranteeStatus
    declaration_present: bool
    blocking_io: bool
    blocking_io_offloaded: bool
    transport_timeout_seconds: float | None
    source_timeout_seconds: float | None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_str("source", self.source)
        set_(self, "status", check_enum("status", self.status, SourceTimeoutGuaranteeStatus))
        for name in ("declaration_present", "blocking_io", "blocking_io_offloaded"):
            check_bool(name, getattr(self, name))
        for name in ("transport_timeout_seconds", "source_timeout_seconds"):
            set_(self, name, check_optional_float(name, getattr(self, name), positive=True))

    @property
    def safe(self) -> bool:
        """True for non-blocking and protected sources (undeclared ones are not safe)."""
        return self.status in _SAFE

    @property
    def protected(self) -> bool:
        """True when the source blocks, runs off the loop and its transport timeout is shorter
        than its own timeout: coalestra checks its calls before and after they run."""
        return self.status is SourceTimeoutGuaranteeStatus.PROTECTED


def inspect_source_timeout_guarantee(source: object) -> SourceTimeoutGuarantee:
    """Read ``source``'s timeout declarations (see :class:`BlockingSourceTimeoutConfigured`).

    Without a ``blocking_io`` attribute the status is ``undeclared``. A non-blocking source is
    ``non_blocking``. A blocking one is ``unsafe_not_offloaded`` unless it runs in a worker
    thread, ``unsafe_timeout_missing`` without a transport timeout,
    ``unsafe_timeout_not_within_source`` when the transport timeout is not below the source's
    ``timeout_seconds``, and ``protected`` otherwise (also without a source timeout).

    Raises:
        TypeError: ``blocking_io`` or ``blocking_io_offloaded`` is not a bool;
            ``transport_timeout_seconds`` or ``timeout_seconds`` is not a number.
        ValueError: a timeout is not finite or not > 0, or a non-blocking source declares a
            transport timeout.
    """
    return guarantee_of(source, None)


def guarantee_of(source: object, default_timeout: float | None) -> SourceTimeoutGuarantee:
    """:func:`inspect_source_timeout_guarantee`, where a source without a timeout of its own is
    bounded by ``default_timeout`` (the builder's ``default_source_timeout_seconds``)."""
    label = _label(source)
    own = check_optional_float(
        f"source {label!r} timeout_seconds", getattr(source, "timeout_seconds", None), positive=True
    )
    timeout = default_timeout if own is None else own
    if not hasattr(source, "blocking_io"):
        return SourceTimeoutGuarantee(
            label, SourceTimeoutGuaranteeStatus.UNDECLARED, False, False, False, None, timeout
        )
    blocking = check_bool(f"source {label!r} blocking_io", source.blocking_io)
    offloaded = check_bool(
        f"source {label!r} blocking_io_offloaded", getattr(source, "blocking_io_offloaded", False)
    )
    transport = check_transport_timeout(
        getattr(source, "transport_timeout_seconds", None), blocking, f"source {label!r} "
    )
    return SourceTimeoutGuarantee(
        label,
        _status(blocking, offloaded, transport, timeout),
        True,
        blocking,
        offloaded,
        transport,
        timeout,
    )


def check_transport_timeout(value: object, blocking_io: bool, prefix: str = "") -> float | None:
    """``None``, or a finite number > 0 as a float; only a blocking source may declare one.

    Raises:
        TypeError: not a number. ValueError: not finite, not > 0, or ``blocking_io`` is False.
    """
    transport = check_optional_float(f"{prefix}transport_timeout_seconds", value, positive=True)
    if transport is not None and not blocking_io:
        raise ValueError(f"{prefix}transport_timeout_seconds requires blocking_io=True")
    return transport


def _status(
    blocking: bool, offloaded: bool, transport: float | None, timeout: float | None
) -> SourceTimeoutGuaranteeStatus:
    if not blocking:
        return SourceTimeoutGuaranteeStatus.NON_BLOCKING
    if not offloaded:
        return SourceTimeoutGuaranteeStatus.UNSAFE_NOT_OFFLOADED
    if transport is None:
        return SourceTimeoutGuaranteeStatus.UNSAFE_TIMEOUT_MISSING
    if timeout is not None and transport >= timeout:
        return SourceTimeoutGuaranteeStatus.UNSAFE_TIMEOUT_NOT_WITHIN_SOURCE
    return SourceTimeoutGuaranteeStatus.PROTECTED


def _label(source: object) -> str:
    """The source's name, or its type's name when it has no usable one."""
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name.strip() else type(source).__name__
