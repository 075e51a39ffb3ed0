"""A build's own errors: :class:`SnapshotBuildError` (required keys failed; carries the partial
snapshot) and :class:`SnapshotConsistencyError` (resolved values observed too far apart). Part of
the exception tree drawn in :mod:`._errors`; rendered messages are bounded the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import (
    CoalestraError,
    ResourceResolutionError,
    error_type_name,
    serialize_resource_error,
)
from ._keys import ResourceKey
from ._schema import (
    ERROR_DIAGNOSTICS_SCHEMA,
    ERROR_DIAGNOSTICS_SCHEMA_VERSION,
    SerializedSnapshotBuildError,
    check_length,
    compact,
)
from ._validation import ReadOnlyDict, check_int


def _render_resource_error(key: object, error: BaseException) -> str:
    """One entry of ``str(SnapshotBuildError)``."""
    if isinstance(error, ResourceResolutionError):
        return f"{key}=ResourceResolutionError[{error.format_failures()}]"
    return f"{key}={error_type_name(error)}({compact(str(error), _MESSAGE_LIMIT)})"


_MESSAGE_LIMIT = 300
_SHOWN_RESOURCE_ERRORS = 5


class SnapshotBuildError(CoalestraError):
    """Required keys failed. ``errors`` maps each failed key to its error; ``snapshot`` is the
    partial :class:`~coalestra.Snapshot` with everything that did resolve (or ``None``).
    """

    def __init__(
        self, errors: Mapping[ResourceKey, Exception], *, snapshot: Any | None = None
    ) -> None:
        self.errors: Mapping[ResourceKey, Exception] = ReadOnlyDict(errors)
        self.snapshot = snapshot
        super().__init__(dict(errors))

    @property
    def partial_snapshot(self) -> Any | None:
        """The partial snapshot (alias of ``snapshot``)."""
        return self.snapshot

    def __str__(self) -> str:
        # Bounded whatever the number of keys and the length of their messages.
        items = list(self.errors.items())
        if not items:
            return "Snapshot build failed: no resource details"
        parts = [
            _render_resource_error(key, error) for key, error in items[:_SHOWN_RESOURCE_ERRORS]
        ]
        more = len(items) - len(parts)
        if more:
            parts.append(f"+{more} more resource error(s)")
        return "Snapshot build failed: " + ", ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_build_error, (type(self), self.__dict__.copy()))

    def to_dict(
        self,
        *,
        max_message_length: int = 300,
        extended: bool = False,
        max_errors: int | None = None,
    ) -> SerializedSnapshotBuildError:
        """Return the JSON-safe form (see :data:`ERROR_DIAGNOSTICS_SCHEMA`).

        Exactly ``schema``, ``schema_version``, ``error_type``, ``message``,
        ``partial_snapshot_available``, ``has_partial_snapshot`` and ``errors`` (one entry per
        key, in order). ``extended=True`` adds ``snapshot_id``, ``resolved_resources``,
        ``failed_resources`` and ``error_count`` (and ``consistency`` for consistency errors).

        ``max_errors`` (opt-in; default ``None``: every key) keeps only the first
        ``max_errors`` entries of ``errors`` and adds ``omitted_errors``, the number left out,
        so thousands of failed keys cannot make a huge document.

        Raises:
            TypeError, ValueError: ``max_errors`` is not ``None`` or an int ``>= 0``.
        """
        limit = check_length(max_message_length)
        shown = self.errors.items()
        if max_errors is not None:
            check_int("max_errors", max_errors, minimum=0)
            shown = list(shown)[:max_errors]  # type: ignore[assignment]
        has_snapshot = self.snapshot is not None
        result: SerializedSnapshotBuildError = {
            "schema": ERROR_DIAGNOSTICS_SCHEMA,
            "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
            "error_type": type(self).__name__,
            "message": compact(str(self), limit),
            "partial_snapshot_available": has_snapshot,
            "has_partial_snapshot": has_snapshot,
            "errors": [
                serialize_resource_error(key, error, max_message_length=limit, extended=extended)
                for key, error in shown
            ],
        }
        if max_errors is not None:
            result["omitted_errors"] = len(self.errors) - len(result["errors"])
        if extended:
            self._add_extended(result)
        return result

    def _add_extended(self, result: SerializedSnapshotBuildError) -> None:
        # ``snapshot`` may be any object (it is never required to be a Snapshot): read it
        # defensively, and only when the caller opted in.
        snapshot = self.snapshot
        resources = getattr(snapshot, "resources", None)
        result["snapshot_id"] = str(getattr(snapshot, "snapshot_id", ""))
        result["resolved_resources"] = (
            sorted(str(key) for key in resources) if isinstance(resources, Mapping) else []
        )
        result["failed_resources"] = [str(key) for key in self.errors]
        result["error_count"] = len(self.errors)


def _rebuild_build_error(cls: type[SnapshotBuildError], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, dict(state.get("errors", {})))
    return error


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class SnapshotConsistencyError(SnapshotBuildError):
    """Resolved values in the consistency scope were observed further apart than allowed.

    ``oldest_key``/``newest_key`` and their ``observed_at`` identify the extremes;
    ``observation_skew_seconds`` is their distance, ``max_observation_skew_seconds`` the limit.
    """

    def __init__(
        self,
        *,
        keys: tuple[ResourceKey, ...],
        oldest_key: ResourceKey,
        oldest_observed_at: float,
        newest_key: ResourceKey,
        newest_observed_at: float,
        observation_skew_seconds: float,
        max_observation_skew_seconds: float,
        snapshot: Any | None = None,
    ) -> None:
        # No per-key errors: every checked key resolved; the violation is the group's skew.
        super().__init__({}, snapshot=snapshot)
        self.keys = tuple(keys)
        self.oldest_key = oldest_key
        self.oldest_observed_at = float(oldest_observed_at)
        self.newest_key = newest_key
        self.newest_observed_at = float(newest_observed_at)
        self.observation_skew_seconds = float(observation_skew_seconds)
        self.max_observation_skew_seconds = float(max_observation_skew_seconds)

    def __str__(self) -> str:
        return (
            f"Snapshot observation skew {self.observation_skew_seconds:.6f}s exceeds the "
            f"allowed {self.max_observation_skew_seconds:.6f}s across {len(self.keys)} "
            f"resource(s); oldest={self.oldest_key}@{self.oldest_observed_at:.6f}, "
            f"newest={self.newest_key}@{self.newest_observed_at:.6f}"
        )

    def _add_extended(self, result: SerializedSnapshotBuildError) -> None:
        super()._add_extended(result)
        result["consistency"] = {
            "resources": [str(key) for key in self.keys],
            "oldest_resource": str(self.oldest_key),
            "oldest_observed_at_us": _micros(self.oldest_observed_at),
            "newest_resource": str(self.newest_key),
            "newest_observed_at_us": _micros(self.newest_observed_at),
            "observation_skew_us": _micros(self.observation_skew_seconds),
            "max_observation_skew_us": _micros(self.max_observation_skew_seconds),
        }
