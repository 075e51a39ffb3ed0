"""What a caller waiting on flights does when its deadline passes (off the hot path of
:mod:`._flights`): let a group cut at that same deadline end, then fail the flights still
running for this caller only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..core import ResourceKey, ResourceResolutionError, SourceFailure

if TYPE_CHECKING:
    from ._flights import Flight

JOINED_SOURCE = "single-flight"
"""The ``source`` of a joiner's failure: its deadline passed while another build's flight ran."""
_SETTLE_SECONDS = 0.01
"""How long past its deadline a caller waits for a group cut at that same deadline to end."""


async def let_ending_groups_finish(claims: Mapping[ResourceKey, Flight]) -> None:
    """At the deadline, wait a few loop turns (bounded) for a group cut at that same deadline
    to end (it writes what its level made, then resolves it): that value is not lost."""
    ending = {
        group.task
        for flight in claims.values()
        if not flight.done
        and (group := flight.group).task is not None
        and not group.task.done()
        and group.window is not None
        and group.window.expired()
    }
    if ending:
        await asyncio.wait(ending, timeout=_SETTLE_SECONDS)


def joined_too_long(key: ResourceKey) -> ResourceResolutionError:
    """A caller's deadline passed while another build's flight still resolved ``key``."""
    message = f"snapshot deadline exceeded while waiting for the in-flight resolution of {key}"
    failure = SourceFailure(JOINED_SOURCE, "SnapshotDeadlineExceededError", message, 0)
    return ResourceResolutionError(key, (failure,))
