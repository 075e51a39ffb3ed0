"""Wait cycles across builds: two builds could each own one key and wait on the other's (a
dependency cycle split across builds). Before a derivation waits on a dependency's flight, the
wait-for graph (each flight's ``waiting_on``, see :meth:`._flights.SingleFlight.wait_on`) is
searched, so such a wait fails with ``DependencyCycleError`` instead of hanging.
"""

from __future__ import annotations

from ..core import ResourceKey
from ._flights import Flight, SingleFlight


def wait_cycle(
    table: SingleFlight, waiter: ResourceKey, target: Flight
) -> tuple[ResourceKey, ...] | None:
    """If ``target`` (transitively) waits on ``waiter``'s flight, return the cycle's path."""
    path = [waiter, target.key]
    seen: set[ResourceKey] = set()
    return _search(table, waiter, target, path, seen)


def _search(
    table: SingleFlight,
    waiter: ResourceKey,
    flight: Flight,
    path: list[ResourceKey],
    seen: set[ResourceKey],
) -> tuple[ResourceKey, ...] | None:
    if flight.key == waiter:
        return tuple(path)
    if flight.key in seen:
        return None
    seen.add(flight.key)
    for key in flight.waiting_on:
        following = table.get(key)
        if following is None:
            continue
        path.append(key)
        found = _search(table, waiter, following, path, seen)
        if found is not None:
            return found
        path.pop()
    return None
