"""The exception tree, and the versioned JSON-safe schema of error diagnostics.

::

    CoalestraError
    ├── SourceUnavailableError           a source could not serve a key
    │   ├── SourceTimeoutError           (also TimeoutError) a source call ran out of time
    │   │   ├── SourceQueueTimeoutError  waited too long for a capacity slot
    │   │   └── SnapshotDeadlineExceededError  the build's absolute deadline passed
    │   └── CircuitOpenError             the source's circuit is open for this key
    ├── SourceProtocolError              a source broke its contract (wrong type, wrong keys)
    ├── ResourceNotFound                 raised by a source: no such resource (an answer)
    ├── ResourceResolutionError          every source for one key failed; carries SourceFailures
    │   └── ResourceNotFoundError        every source asked said the resource does not exist
    ├── DependencyCycleError             derived dependencies loop back on themselves
    ├── DependencyResolutionError        a derived key's dependencies could not be resolved
    ├── SnapshotBuildError               required keys failed; carries the partial snapshot
    │   └── SnapshotConsistencyError     resolved values were observed too far apart
    │                                    (both in ``_build_errors.py``)
    ├── SessionClosedError               a closed session (or builder) was used
    ├── PayloadIsolationError            a payload could not be copied
    ├── SubmissionBacklogFullError       the sync facade's submission backlog is full
    └── ObservabilityShutdownTimeoutError  (also TimeoutError) buffered records outlived
                                         the builder's observability shutdown budget

``to_dict()`` on :class:`SourceFailure`, :class:`ResourceResolutionError` and
:class:`SnapshotBuildError` returns plain dicts of strings, ints, bools, lists and dicts, marked
with :data:`ERROR_DIAGNOSTICS_SCHEMA` and :data:`ERROR_DIAGNOSTICS_SCHEMA_VERSION` (the typed
shapes live in ``_schema.py``). Every rendered message is compacted (whitespace collapsed, cut
to a length limit), so errors stay bounded however long the upstream messages are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, final

from ._keys import ResourceKey
from ._schema import (
    ERROR_DIAGNOSTICS_SCHEMA,
    ERROR_DIAGNOSTICS_SCHEMA_VERSION,
    SerializedResourceError,
    SerializedSourceFailure,
    check_length,
    compact,
    serialize_key,
)
from ._validation import ReadOnlyDict, check_int, check_str


class CoalestraError(Exception):
    """The root of every error the library raises on purpose."""


class SourceUnavailableError(CoalestraError):
    """A source could not serve a key (it failed, timed out, or its circuit is open)."""


class SourceTimeoutError(SourceUnavailableError, TimeoutError):
    """A source call did not finish in time. Also a builtin ``TimeoutError``."""


class SourceQueueTimeoutError(SourceTimeoutError):
    """A source call waited longer than its queue timeout for a capacity slot."""


class SnapshotDeadlineExceededError(SourceTimeoutError):
    """The build's (or session's) absolute deadline passed before the key was resolved."""


class CircuitOpenError(SourceUnavailableError):
    """The circuit guarding this source (for this key's scope) is open: the call was not made."""


class SourceProtocolError(CoalestraError):
    """A source broke its contract: wrong return type, unknown keys, malformed payload."""


class SessionClosedError(CoalestraError):
    """A closed session or builder was used."""


@final
@dataclass(frozen=True, slots=True)
class SourceFailure:
    """Why one source failed for one key: its name, the error type and message, and attempts."""

    source: str
    error_type: str
    message: str
    attempts: int = 1

    def __post_init__(self) -> None:
        check_str("source", self.source)
        check_str("error_type", self.error_type)
        check_str("message", self.message, allow_empty=True)
        check_int("attempts", self.attempts, minimum=0)

    @classmethod
    def from_exception(cls, source: str, error: BaseException, attempts: int = 1) -> SourceFailure:
        """Describe ``error`` raised by ``source`` after ``attempts`` attempts (an internal
        error class is named by the public class it stands for)."""
        kind = type(error)
        return cls(source, getattr(kind, "public_name", kind.__name__), str(error), attempts)

    def format(self, *, max_message_length: int = 300) -> str:
        """Render as ``source: ErrorType(message; attempts=N)``, the message compacted."""
        message = compact(self.message, check_length(max_message_length))
        return f"{self.source}: {self.error_type}({message}; attempts={self.attempts})"

    def to_dict(self, *, max_message_length: int = 300) -> SerializedSourceFailure:
        """Return the JSON-safe form (see :data:`ERROR_DIAGNOSTICS_SCHEMA`)."""
        return {
            "schema": ERROR_DIAGNOSTICS_SCHEMA,
            "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
            "source": self.source,
            "error_type": self.error_type,
            "message": compact(self.message, check_length(max_message_length)),
            "attempts": self.attempts,
        }


class ResourceResolutionError(CoalestraError):
    """No source could resolve ``key``; ``failures`` says why, source by source.

    Args:
        key: the key that failed.
        failures: one :class:`SourceFailure` per source tried, in the order tried.
    """

    # No ``-> None``: the contract's signature of this constructor has no return annotation.
    def __init__(self, key: ResourceKey, failures: tuple[SourceFailure, ...]):
        if not isinstance(key, ResourceKey):
            raise TypeError(f"key must be a ResourceKey, got {type(key).__name__}")
        self.key = key
        self.failures = tuple(failures)
        # Checked here, not when formatting: a wrong entry used to make str() and to_dict() of
        # the error itself raise AttributeError, far from the code that built it.
        for failure in self.failures:
            if not isinstance(failure, SourceFailure):
                raise TypeError(
                    f"failures must contain only SourceFailure, got {type(failure).__name__}"
                )
        super().__init__(key, self.failures)

    def __str__(self) -> str:
        return f"Unable to resolve {self.key}: {self.format_failures()}"

    def __reduce__(self) -> tuple[Any, ...]:
        # The third item restores the rest of __dict__ (``__notes__``, attributes set later).
        return (type(self), (self.key, self.failures), self.__dict__)

    def format_failures(self, *, max_failures: int = 3, max_message_length: int = 300) -> str:
        """Join the first ``max_failures`` failures with ``"; "``, then ``+K more failure(s)``.

        Each message is compacted to ``max_message_length``; with no failures at all the text
        is ``"no compatible source"``.

        Raises:
            ValueError: ``max_failures`` or ``max_message_length`` is below 1.
        """
        if isinstance(max_failures, bool) or not isinstance(max_failures, int):
            raise TypeError(f"max_failures must be an int, got {type(max_failures).__name__}")
        if max_failures < 1:
            raise ValueError("max_failures must be positive")
        limit = check_length(max_message_length)
        if not self.failures:
            return "no compatible source"
        shown = [
            failure.format(max_message_length=limit) for failure in self.failures[:max_failures]
        ]
        more = len(self.failures) - len(shown)
        if more:
            shown.append(f"+{more} more failure(s)")
        return "; ".join(shown)

    def to_dict(
        self, *, max_message_length: int = 300, extended: bool = False
    ) -> SerializedResourceError:
        """Return the JSON-safe form (see :data:`ERROR_DIAGNOSTICS_SCHEMA`).

        Exactly ``schema``, ``schema_version``, ``resource``, ``error_type``, ``message`` and
        ``failures``; ``extended=True`` adds ``resource_key`` and ``failure_count``.
        """
        return serialize_resource_error(
            self.key, self, max_message_length=max_message_length, extended=extended
        )


class ResourceNotFound(CoalestraError):
    """Raised by a source (a fetcher) to say that the resource does not exist.

    It is an answer, not a failure: it is never retried and it never counts against the
    source's circuit (the source responded; the call records a success). Lower-priority
    sources are still asked. When every source asked for a key raised it, the key's error is a
    :class:`ResourceNotFoundError`, which the builder can remember for
    ``not_found_ttl_seconds`` (negative caching).

    Args:
        message: why, e.g. ``"no such symbol"`` (optional).
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(message)


class ResourceNotFoundError(ResourceResolutionError):
    """The key's error when every source asked for it raised :class:`ResourceNotFound`.

    A :class:`ResourceResolutionError` (so existing handlers keep working), with the same
    ``key`` and ``failures``; ``snapshot.value(key)`` raises ``KeyError`` for it, chained to it,
    like for any failed key. Its message is ``"Resource <key> not found: <failures>"``.
    """

    def __str__(self) -> str:
        return f"Resource {self.key} not found: {self.format_failures()}"


def error_type_name(error: BaseException) -> str:
    """The class name shown for ``error`` (an internal class is named by its public base)."""
    kind = type(error)
    return str(getattr(kind, "public_name", kind.__name__))


def serialize_resource_error(
    key: object, error: BaseException, *, max_message_length: int = 300, extended: bool = False
) -> SerializedResourceError:
    """Serialize any per-key error; only :class:`ResourceResolutionError` carries failures
    (and is serialized as its own ``to_dict()``, naming its own key)."""
    limit = check_length(max_message_length)
    failures: tuple[SourceFailure, ...] = ()
    if isinstance(error, ResourceResolutionError):
        key, failures = error.key, error.failures
    result: SerializedResourceError = {
        "schema": ERROR_DIAGNOSTICS_SCHEMA,
        "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
        "resource": str(key),
        "error_type": error_type_name(error),
        "message": compact(str(error), limit),
        "failures": [failure.to_dict(max_message_length=limit) for failure in failures],
    }
    if extended:
        if isinstance(key, ResourceKey):
            result["resource_key"] = serialize_key(key)
        result["failure_count"] = len(failures)
    return result


class DependencyCycleError(CoalestraError):
    """A derived key depends, directly or through others, on itself. ``path`` shows the loop."""

    # No ``-> None``: the contract's signature of this constructor has no return annotation.
    def __init__(self, path: tuple[ResourceKey, ...]):
        self.path = tuple(path)
        super().__init__(self.path)

    def __str__(self) -> str:
        return "Derived resource dependency cycle detected: " + " -> ".join(
            str(key) for key in self.path
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path,), self.__dict__)


class DependencyResolutionError(CoalestraError):
    """Derived ``key`` (at ``source``) could not be made: ``errors`` maps dependencies to why."""

    def __init__(
        self, key: ResourceKey, source: str, errors: Mapping[ResourceKey, Exception]
    ) -> None:
        self.key = key
        self.source = source
        self.errors: Mapping[ResourceKey, Exception] = ReadOnlyDict(errors)
        super().__init__(key, source, dict(errors))

    def __str__(self) -> str:
        failed = ", ".join(
            f"{key}={type(error).__name__}({error})" for key, error in self.errors.items()
        )
        return (
            f"Unable to derive {self.key} with source {self.source}; dependency failures: {failed}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.source, dict(self.errors)), self.__dict__)


class _KeywordBuilt(Protocol):
    """An error made by keywords only, which it gives back in ``_init_kwargs()``."""

    __dict__: dict[str, Any]

    def _init_kwargs(self) -> dict[str, Any]: ...


def reduce_by_keywords(error: _KeywordBuilt) -> tuple[Any, ...]:
    """``__reduce__`` of an error whose constructor takes keywords only."""
    # Only the constructor's arguments go to __init__; the whole __dict__ is restored as
    # state. Passing all of __dict__ as keywords made unpickling fail once anything else
    # was set (e.g. ``__notes__`` from ``add_note``).
    return (_rebuild_keyword_error, (type(error), error._init_kwargs()), error.__dict__)


def _rebuild_keyword_error(cls: type[Exception], state: dict[str, Any]) -> Exception:
    return cls(**state)


class PayloadIsolationError(CoalestraError):
    """A payload could not be copied, so it was not shared or stored by reference.

    ``context`` names where (and for which key) the copy was needed; ``value_type`` the type.
    """

    def __init__(self, *, context: str, value_type: str) -> None:
        self.context = context
        self.value_type = value_type
        super().__init__(
            f"Unable to isolate {context}; payload type {value_type} does not support copying"
        )

    def _init_kwargs(self) -> dict[str, Any]:
        return {"context": self.context, "value_type": self.value_type}

    __reduce__ = reduce_by_keywords


class SubmissionBacklogFullError(CoalestraError):
    """The synchronous facade already holds ``limit`` pending submissions (``pending`` now)."""

    def __init__(self, *, limit: int, pending: int) -> None:
        self.limit = limit
        self.pending = pending
        super().__init__(
            f"Non-blocking submission backlog is full (pending={pending}, limit={limit})"
        )

    def _init_kwargs(self) -> dict[str, Any]:
        return {"limit": self.limit, "pending": self.pending}

    __reduce__ = reduce_by_keywords


@final
class ObservabilityShutdownTimeoutError(CoalestraError, TimeoutError):
    """``aclose()`` ran out of budget draining the builder's observability buffers.

    The records still queued were discarded (counted as dropped); a worker may still be inside
    a slow downstream sink. The downstream sinks stay open (with ``manage_lifecycle=True``)
    until ``await builder.wait_for_observability_shutdown()`` has seen every worker end.

    Attributes:
        timeout_seconds: the budget that passed (seconds).
        pending_components: buffer name (``"events"``/``"metrics"``) -> records pending then.
        pending_records: their sum.
    """

    def __init__(self, *, timeout_seconds: float, pending_components: Mapping[str, int]) -> None:
        self.timeout_seconds = float(timeout_seconds)
        self.pending_components: Mapping[str, int] = ReadOnlyDict(pending_components)
        self.pending_records = sum(self.pending_components.values())
        shown = ", ".join(f"{name}={count}" for name, count in self.pending_components.items())
        super().__init__(
            f"observability shutdown timed out after {self.timeout_seconds:g} s with "
            f"{self.pending_records} record(s) pending ({shown or 'no buffer'})"
        )

    def _init_kwargs(self) -> dict[str, Any]:
        return {
            "timeout_seconds": self.timeout_seconds,
            "pending_components": dict(self.pending_components),
        }

    __reduce__ = reduce_by_keywords
