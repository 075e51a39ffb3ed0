"""The availability state machine: fail fast while down, recover by itself."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from coalestra.integrations.redis._link import Link, RedisUnavailable


class ManualClock:
    def __init__(self) -> None:
        self.time = 100.0

    def now(self) -> float:
        return self.time

    def monotonic(self) -> float:
        return self.time


async def fails(error: Exception) -> None:
    raise error


async def answers() -> str:
    return "ok"


async def test_down_fails_fast_then_recovers_by_itself() -> None:
    clock = ManualClock()
    link = Link(clock, reconnect_interval=1.0)
    recovered: list[bool] = []
    link.on_recovered(lambda: recovered.append(True))
    with pytest.raises(RedisUnavailable):
        await link.call(lambda: fails(RedisConnectionError("Error 111 connecting")))
    assert not link.available
    assert (link.errors, link.outages) == (1, 1)
    with pytest.raises(RedisUnavailable, match="down"):
        await link.call(answers)  # within the interval: not even tried
    assert link.skipped == 1
    clock.time += 1.0
    assert await link.call(answers) == "ok"
    assert link.available
    assert recovered == [True]


async def test_a_refused_command_or_a_busy_pool_is_not_an_outage() -> None:
    link = Link(ManualClock(), reconnect_interval=1.0)
    for error in (ResponseError("OOM"), RedisConnectionError("No connection available.")):
        with pytest.raises(RedisUnavailable):
            await link.call(lambda error=error: fails(error))
    assert link.available
    assert (link.errors, link.outages) == (2, 0)
    assert link.last_error == "ConnectionError: No connection available."
