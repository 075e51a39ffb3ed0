"""The breaker against a small pure model, driven by Hypothesis through random call sequences.

The model keeps an explicit CLOSED/OPEN/HALF_OPEN state machine per subject (as a textbook
breaker would); the breaker derives HALF_OPEN from time and drops closed circuits. Both must
agree on state, failures, opened_at, the probe flag, and on which calls are refused.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coalestra.core import CircuitOpenError, ResourceKey
from coalestra.resilience import (
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitIdentity,
    CircuitScope,
    CircuitSnapshot,
    CircuitState,
)

T = TypeVar("T")
SOURCE = "feed"
SUBJECTS = ("BTC", "ETH")


class ManualClock:
    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    def monotonic(self) -> float:
        return self.time


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without suspending (the breaker never awaits)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("the breaker awaited something")


@dataclass
class ModelCircuit:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe: bool = False

    def observe(self, now: float, timeout: float) -> CircuitState:
        if self.state is CircuitState.OPEN and now >= self.opened_at + timeout:
            self.state = CircuitState.HALF_OPEN
        return self.state

    def admit(self, now: float, timeout: float) -> bool:
        state = self.observe(now, timeout)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self.probe:
            return False
        self.probe = True
        return True

    def succeed(self) -> None:
        if self.state is CircuitState.CLOSED or self.probe:
            self.state, self.failures, self.opened_at, self.probe = (
                CircuitState.CLOSED,
                0,
                0.0,
                False,
            )

    def fail(self, now: float, threshold: int) -> None:
        self.failures += 1
        if self.state is CircuitState.CLOSED:
            if self.failures >= threshold:
                self.state, self.opened_at = CircuitState.OPEN, now
        elif self.probe:
            self.state, self.opened_at, self.probe = CircuitState.OPEN, now, False

    def abandon(self, now: float) -> None:
        """A given-up probe re-opens its circuit; any other given-up call counts nothing."""
        if self.probe:
            self.state, self.opened_at, self.probe = CircuitState.OPEN, now, False

    def skip(self) -> None:
        self.probe = False


outcomes = st.sampled_from(["success", "failure", "abandon", "skip"])


class BreakerMachine(RuleBasedStateMachine):
    @initialize(threshold=st.integers(1, 4), timeout=st.sampled_from([0.0, 1.0, 2.5, 10.0]))
    def setup(self, threshold: int, timeout: float) -> None:
        self.clock = ManualClock()
        self.policy = CircuitBreakerPolicy(
            scope=CircuitScope.SUBJECT,
            failure_threshold=threshold,
            recovery_timeout_seconds=timeout,
        )
        self.breaker = CircuitBreaker(clock=self.clock, default_policy=self.policy)
        self.model = {subject: ModelCircuit() for subject in SUBJECTS}
        self.in_flight: list[str] = []

    def key(self, subject: str) -> ResourceKey:
        return ResourceKey("market", "price", subject)

    def record(self, subject: str, outcome: str, use_async: bool) -> None:
        model, key, now = self.model[subject], self.key(subject), self.clock.time
        identity = self.breaker.identity_for(SOURCE, key=key)
        if outcome == "success":
            model.succeed()
            if use_async:
                run(self.breaker.record_success(SOURCE, key=key))
            else:
                self.breaker.succeed(identity, self.policy)
        elif outcome == "failure":
            model.fail(now, self.policy.failure_threshold)
            if use_async:
                run(self.breaker.record_failure(SOURCE, key=key))
            else:
                self.breaker.fail(identity, self.policy)
        elif outcome == "abandon":
            model.abandon(now)
            if use_async:
                run(self.breaker.record_abandoned(SOURCE, key=key))
            else:
                self.breaker.abandon(identity, self.policy)
        else:
            model.skip()
            if use_async:
                run(self.breaker.record_skipped(SOURCE, key=key))
            else:
                self.breaker.skip(identity)

    def admit(self, subject: str, use_async: bool) -> bool:
        """Pass the gate in both the model and the breaker; they must agree."""
        timeout = self.policy.recovery_timeout_seconds
        expected = self.model[subject].admit(self.clock.time, timeout)
        key = self.key(subject)
        try:
            if use_async:
                run(self.breaker.before_call(SOURCE, key=key))
            else:
                self.breaker.enter(SOURCE, key)
            admitted = True
        except CircuitOpenError:
            admitted = False
        assert admitted == expected
        return admitted

    @rule(subject=st.sampled_from(SUBJECTS), outcome=outcomes, use_async=st.booleans())
    def call(self, subject: str, outcome: str, use_async: bool) -> None:
        """A call whose outcome is recorded before anything else happens."""
        if self.admit(subject, use_async):
            self.record(subject, outcome, use_async)

    @rule(subject=st.sampled_from(SUBJECTS), use_async=st.booleans())
    def start_call(self, subject: str, use_async: bool) -> None:
        """A call that stays in flight while other calls and time go by."""
        if self.admit(subject, use_async):
            self.in_flight.append(subject)

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), outcome=outcomes, use_async=st.booleans())
    def finish_call(self, data: st.DataObject, outcome: str, use_async: bool) -> None:
        """An in-flight call ends, possibly long after its circuit moved on (a straggler)."""
        index = data.draw(st.integers(0, len(self.in_flight) - 1), label="in-flight call")
        self.record(self.in_flight.pop(index), outcome, use_async)

    @rule(seconds=st.one_of(st.sampled_from([1.0, 2.5, 10.0]), st.floats(0.0, 12.0)))
    def advance(self, seconds: float) -> None:
        self.clock.time += seconds

    @rule(target_subject=st.sampled_from([None, *SUBJECTS]))
    def reset(self, target_subject: str | None) -> None:
        if target_subject is None:
            run(self.breaker.reset())
            self.model = {subject: ModelCircuit() for subject in SUBJECTS}
        else:
            run(self.breaker.reset(SOURCE, key=self.key(target_subject)))
            self.model[target_subject] = ModelCircuit()

    @invariant()
    def agrees_with_the_model(self) -> None:
        now, timeout = self.clock.time, self.policy.recovery_timeout_seconds
        snapshot = run(self.breaker.snapshot())
        tracked = 0
        for subject, model in self.model.items():
            state = model.observe(now, timeout)
            expected = CircuitSnapshot(state, model.failures, model.opened_at, model.probe)
            identity = CircuitIdentity(SOURCE, CircuitScope.SUBJECT, subject)
            untracked = CircuitSnapshot(CircuitState.CLOSED, 0, 0.0, False)
            assert snapshot.get(identity, untracked) == expected
            assert run(self.breaker.state_for(SOURCE, key=self.key(subject))) is state
            tracked += expected != untracked
        assert len(snapshot) == tracked == self.breaker.tracked_circuit_count()
        opened = sum(m.state is not CircuitState.CLOSED for m in self.model.values())
        assert self.breaker.open_circuit_count() == opened


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_breaker_matches_model = BreakerMachine.TestCase
