"""What a caller waiting on flights gets for a flight still running when its deadline passes
(off the hot path of :mod:`._flights`)."""

from __future__ import annotations

from ..core import ResourceKey, ResourceResolutionError, SourceFailure

JOINED_SOURCE = "single-flight"
"""The ``source`` of a joiner's failure: its deadline passed while another build's flight ran."""


def joined_too_long(key: ResourceKey) -> ResourceResolutionError:
    """A caller's deadline passed while another build's flight still resolved ``key``."""
    message = f"snapshot deadline exceeded while waiting for the in-flight resolution of {key}"
    failure = SourceFailure(JOINED_SOURCE, "SnapshotDeadlineExceededError", message, 0)
    return ResourceResolutionError(key, (failure,))
