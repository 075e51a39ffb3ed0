"""The versioned, JSON-safe schema of error diagnostics (what ``to_dict()`` returns).

Every serialized form is made of strings, ints, bools, lists and dicts only, and carries
:data:`ERROR_DIAGNOSTICS_SCHEMA` and :data:`ERROR_DIAGNOSTICS_SCHEMA_VERSION`. By default each
form holds exactly its listed keys; ``to_dict(extended=True)`` adds the optional ones.
"""

from __future__ import annotations

from typing import Final, TypedDict

from ._keys import ResourceKey

ERROR_DIAGNOSTICS_SCHEMA: Final = "coalestra.error-diagnostics"
ERROR_DIAGNOSTICS_SCHEMA_VERSION: Final = 1


class SerializedResourceKey(TypedDict):
    """A :class:`ResourceKey` as JSON: its parts, qualifiers as a name -> value object."""

    namespace: str
    name: str
    subject: str
    qualifiers: dict[str, str]


class SerializedSourceFailure(TypedDict):
    """``SourceFailure.to_dict()``: one failed attempt chain at one source."""

    schema: str
    schema_version: int
    source: str
    error_type: str
    message: str
    attempts: int


class _SerializedResourceErrorBase(TypedDict):
    schema: str
    schema_version: int
    resource: str
    error_type: str
    message: str
    failures: list[SerializedSourceFailure]


class SerializedResourceError(_SerializedResourceErrorBase, total=False):
    """One key's error: ``ResourceResolutionError.to_dict()`` and each entry of a build error.

    ``resource_key`` and ``failure_count`` are present only with ``to_dict(extended=True)``.
    """

    resource_key: SerializedResourceKey
    failure_count: int


class SerializedConsistencyViolation(TypedDict):
    """The observation-skew violation of a :class:`SnapshotConsistencyError` (times in µs)."""

    resources: list[str]
    oldest_resource: str
    oldest_observed_at_us: int
    newest_resource: str
    newest_observed_at_us: int
    observation_skew_us: int
    max_observation_skew_us: int


class _SerializedSnapshotBuildErrorBase(TypedDict):
    schema: str
    schema_version: int
    error_type: str
    message: str
    partial_snapshot_available: bool
    has_partial_snapshot: bool  # the same flag under its 0.5.1-0.5.4 name
    errors: list[SerializedResourceError]


class SerializedSnapshotBuildError(_SerializedSnapshotBuildErrorBase, total=False):
    """``SnapshotBuildError.to_dict()``.

    ``snapshot_id``, ``resolved_resources``, ``failed_resources``, ``error_count`` and (for
    consistency errors) ``consistency`` are present only with ``to_dict(extended=True)``;
    ``omitted_errors`` only with ``to_dict(max_errors=...)``.
    """

    snapshot_id: str
    resolved_resources: list[str]
    failed_resources: list[str]
    error_count: int
    consistency: SerializedConsistencyViolation
    omitted_errors: int


NO_MESSAGE: Final = "<no message>"


def compact(message: str, limit: int) -> str:
    """Collapse whitespace runs to one space, name an empty message, and cut to ``limit``.

    Every rendering and every ``to_dict`` passes messages through here, so one huge or
    multi-line upstream message cannot blow up a log line or a diagnostics payload.
    """
    text = " ".join(message.split()) or NO_MESSAGE
    if len(text) <= limit:
        return text
    if limit <= 3:
        # No room for the "..." marker: a hard cut is the only way to honour the limit.
        return text[:limit]
    return text[: limit - 3] + "..."


def check_length(max_length: object) -> int:
    """Return a message length limit; it must be a positive int."""
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
    if max_length < 1:
        raise ValueError("max_length must be positive")
    return max_length


def serialize_key(key: ResourceKey) -> SerializedResourceKey:
    return {
        "namespace": key.namespace,
        "name": key.name,
        "subject": key.subject,
        "qualifiers": dict(key.qualifiers),
    }
