"""The versioned, JSON-safe schema of error diagnostics (what ``to_dict()`` returns).

Every serialized form is made of strings, ints, bools, lists and dicts only, and carries
:data:`ERROR_DIAGNOSTICS_SCHEMA` and :data:`ERROR_DIAGNOSTICS_SCHEMA_VERSION`. Fields are only
ever added within one schema version; consumers should ignore fields they do not know.
"""

from __future__ import annotations

from typing import Final, TypedDict

from ._keys import ResourceKey
from ._validation import check_int

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


class SerializedResourceError(TypedDict):
    """One key's error: ``ResourceResolutionError.to_dict()`` and each entry of a build error."""

    schema: str
    schema_version: int
    error_type: str
    message: str
    resource: str
    resource_key: SerializedResourceKey
    failures: list[SerializedSourceFailure]
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
    snapshot_id: str
    partial_snapshot_available: bool
    has_partial_snapshot: bool  # legacy alias of partial_snapshot_available (0.5.1-0.5.4)
    resolved_resources: list[str]
    failed_resources: list[str]
    errors: list[SerializedResourceError]
    error_count: int


class SerializedSnapshotBuildError(_SerializedSnapshotBuildErrorBase, total=False):
    """``SnapshotBuildError.to_dict()``; ``consistency`` is present for consistency errors."""

    consistency: SerializedConsistencyViolation


def truncate(message: str, limit: int) -> str:
    if len(message) <= limit:
        return message
    if limit < 3:
        # No room for the "..." marker: cutting is the only way to honour the limit
        # (the marker alone used to make 1- and 2-character limits return 3 characters).
        return message[:limit]
    return message[: limit - 3] + "..."


def check_length(max_message_length: int) -> int:
    return check_int("max_message_length", max_message_length, minimum=1)


def serialize_key(key: ResourceKey) -> SerializedResourceKey:
    return {
        "namespace": key.namespace,
        "name": key.name,
        "subject": key.subject,
        "qualifiers": dict(key.qualifiers),
    }
