"""ResiliencePolicyResolver: overrides > dynamic > declared > default > built-in default."""

from __future__ import annotations

import pytest

from coalestra.resilience import (
    CircuitBreakerPolicy,
    ResiliencePolicyResolver,
    RetryPolicy,
    SourceResiliencePolicy,
)


def policy(attempts: int) -> SourceResiliencePolicy:
    """A policy told apart from the others by its retry attempts."""
    return SourceResiliencePolicy(retry=RetryPolicy(max_attempts=attempts))


OVERRIDE, DYNAMIC, DECLARED, DEFAULT = policy(5), policy(4), policy(3), policy(7)


def full_resolver() -> ResiliencePolicyResolver:
    return ResiliencePolicyResolver(
        default=DEFAULT,
        overrides={"a": OVERRIDE},
        dynamic=lambda source: DYNAMIC if source in {"a", "b"} else None,
    )


def test_override_beats_dynamic_declared_and_default() -> None:
    assert full_resolver().resolve("a", declared=DECLARED) is OVERRIDE


def test_dynamic_beats_declared_and_default() -> None:
    assert full_resolver().resolve("b", declared=DECLARED) is DYNAMIC


def test_declared_beats_default_when_dynamic_returns_none() -> None:
    assert full_resolver().resolve("c", declared=DECLARED) is DECLARED


def test_default_applies_when_nothing_else_does() -> None:
    resolver = full_resolver()
    assert resolver.resolve("c") is DEFAULT
    assert resolver.default is DEFAULT


def test_builtin_default_without_any_rule() -> None:
    resolver = ResiliencePolicyResolver()
    assert resolver.resolve("anything") == SourceResiliencePolicy()
    assert resolver.default == SourceResiliencePolicy()


def test_dynamic_sees_the_source_name() -> None:
    seen: list[str] = []

    def dynamic(source: str) -> SourceResiliencePolicy | None:
        seen.append(source)
        return None

    ResiliencePolicyResolver(dynamic=dynamic).resolve("market-stream")
    assert seen == ["market-stream"]


def test_overrides_are_copied() -> None:
    table = {"a": OVERRIDE}
    resolver = ResiliencePolicyResolver(overrides=table)
    table["a"] = DECLARED
    assert resolver.resolve("a") is OVERRIDE


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"default": RetryPolicy()}, "default"),
        ({"overrides": [("a", OVERRIDE)]}, "overrides"),
        ({"overrides": {"a": CircuitBreakerPolicy()}}, "overrides"),
        ({"overrides": {1: OVERRIDE}}, "overrides"),
        ({"dynamic": "not callable"}, "dynamic"),
    ],
)
def test_constructor_refuses_wrong_types(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(TypeError, match=argument):
        ResiliencePolicyResolver(**kwargs)  # type: ignore[arg-type]


def test_resolve_validates_its_arguments_and_the_dynamic_result() -> None:
    resolver = ResiliencePolicyResolver(dynamic=lambda source: "oops")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="dynamic"):
        resolver.resolve("a")
    with pytest.raises(ValueError, match="source"):
        ResiliencePolicyResolver().resolve("")
    with pytest.raises(TypeError, match="declared"):
        ResiliencePolicyResolver(overrides={"a": OVERRIDE}).resolve("a", declared=RetryPolicy())  # type: ignore[arg-type]
