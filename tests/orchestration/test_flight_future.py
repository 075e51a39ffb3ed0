"""A flight makes its future only for a caller that awaits that one key (``Flight.future``):
the outcome is the same whether the future is made before or after the flight resolves."""

from __future__ import annotations

from coalestra.core import ResourceKey
from coalestra.orchestration._flights import SingleFlight

KEY = ResourceKey("market", "price", "AAPL")


async def test_a_future_made_before_the_flight_resolves_gets_its_outcome() -> None:
    table = SingleFlight()
    flight = table.start([KEY])[KEY]
    future = flight.future
    assert not future.done()
    assert not flight.done
    error = RuntimeError("boom")
    table.resolve(flight, error)
    assert flight.done
    assert flight.outcome is error
    assert future.done()
    assert future.result() is error
    assert KEY not in table


async def test_a_future_made_after_the_flight_resolved_is_done_with_its_outcome() -> None:
    table = SingleFlight()
    flight = table.start([KEY])[KEY]
    error = RuntimeError("boom")
    table.resolve(flight, error)
    assert flight.future.done()
    assert flight.future.result() is error
    assert flight.future is flight.future  # made once


async def test_a_cancelled_future_does_not_stop_the_flight_resolving() -> None:
    table = SingleFlight()
    flight = table.start([KEY])[KEY]
    flight.future.cancel()
    error = RuntimeError("boom")
    table.resolve(flight, error)
    assert flight.done
    assert flight.outcome is error
    assert flight.group.unresolved == 0
