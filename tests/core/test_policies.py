"""FreshnessPolicy, ObservationPolicy, source authority and SnapshotConsistencyPolicy."""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Any

import pytest

from coalestra.core import (
    AuthorityPolicyProvider,
    AuthorityPolicyResolver,
    FreshnessPolicy,
    ObservationPolicy,
    RefreshMode,
    ResourceKey,
    SnapshotConsistencyPolicy,
    SourceAuthorityPolicy,
    SourceProtocolError,
)

KEY = ResourceKey("market", "price", "BTCUSDT")
OTHER = ResourceKey("market", "price", "ETHUSDT")

# --- FreshnessPolicy ---------------------------------------------------------------------------


def test_freshness_defaults() -> None:
    policy = FreshnessPolicy(0.0)
    assert policy.max_stale_seconds == 0.0
    assert policy.allow_stale_on_error is True
    assert policy.refresh_mode is RefreshMode.BLOCKING
    assert policy.refresh_ahead_seconds == 0.0


def test_ttl_alone_raises_because_max_stale_defaults_to_zero() -> None:
    with pytest.raises(ValueError, match="max_stale_seconds must be greater than or equal to"):
        FreshnessPolicy(5.0)


def test_product_page_policy() -> None:
    policy = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=30.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    assert policy.refresh_mode is RefreshMode.STALE_WHILE_REVALIDATE


@pytest.mark.parametrize(
    ("age", "fresh", "usable"),
    [
        (0.0, True, True),
        (5.0, True, True),  # TTL boundary: still fresh
        (5.001, False, True),
        (30.0, False, True),  # max_stale boundary: still usable
        (30.001, False, False),
        (100.0, False, False),
    ],
)
def test_fresh_and_usable_boundaries(age: float, fresh: bool, usable: bool) -> None:
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=30.0)
    assert policy.is_fresh(age) is fresh
    assert policy.is_usable(age) is usable


def test_zero_ttl_is_fresh_only_at_age_zero() -> None:
    policy = FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=10.0)
    assert policy.is_fresh(0.0)
    assert not policy.is_fresh(0.001)
    assert policy.is_usable(10.0)


def test_infinite_windows_never_expire() -> None:
    policy = FreshnessPolicy(math.inf, math.inf)
    assert policy.is_fresh(1e300)
    assert policy.is_usable(1e300)


@pytest.mark.parametrize(
    ("age", "expected"),
    [(0.0, False), (7.999, False), (8.0, True), (9.999, True), (10.0, True), (12.0, True)],
)
def test_should_refresh_ahead_window(age: float, expected: bool) -> None:
    policy = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=10.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=2.0,
    )
    assert policy.should_refresh_ahead(age) is expected


@pytest.mark.parametrize("mode", [RefreshMode.BLOCKING, RefreshMode.STALE_WHILE_REVALIDATE])
def test_refresh_ahead_only_in_refresh_ahead_mode(mode: RefreshMode) -> None:
    policy = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0, refresh_mode=mode)
    assert not policy.should_refresh_ahead(9.0)
    with pytest.raises(ValueError, match=r"only valid with RefreshMode\.REFRESH_AHEAD"):
        FreshnessPolicy(10.0, 10.0, refresh_mode=mode, refresh_ahead_seconds=2.0)


def test_refresh_ahead_never_with_an_infinite_ttl() -> None:
    policy = FreshnessPolicy(
        math.inf, math.inf, refresh_mode=RefreshMode.REFRESH_AHEAD, refresh_ahead_seconds=5.0
    )
    assert not policy.should_refresh_ahead(1e300)


def test_refresh_ahead_equal_to_ttl_is_allowed() -> None:
    policy = FreshnessPolicy(
        ttl_seconds=3.0,
        max_stale_seconds=3.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=3.0,
    )
    assert policy.should_refresh_ahead(0.0)


def test_refresh_ahead_longer_than_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="refresh_ahead_seconds cannot exceed ttl_seconds"):
        FreshnessPolicy(
            ttl_seconds=3.0,
            max_stale_seconds=3.0,
            refresh_mode=RefreshMode.REFRESH_AHEAD,
            refresh_ahead_seconds=3.5,
        )


@pytest.mark.parametrize("mode", ["blocking", "stale_while_revalidate", "refresh_ahead"])
def test_refresh_mode_given_as_string(mode: str) -> None:
    policy = FreshnessPolicy(5.0, 5.0, refresh_mode=mode)  # type: ignore[arg-type]
    assert policy.refresh_mode is RefreshMode(mode)
    assert isinstance(policy.refresh_mode, RefreshMode)


def test_unknown_refresh_mode() -> None:
    with pytest.raises(ValueError, match=r"refresh_mode.*'blocking'"):
        FreshnessPolicy(5.0, 5.0, refresh_mode="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["ttl_seconds", "max_stale_seconds", "refresh_ahead_seconds"])
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (math.nan, ValueError),
        (-math.inf, ValueError),
        (-1.0, ValueError),
        ("5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_freshness_rejects_bad_durations(field: str, bad: Any, error: type[Exception]) -> None:
    arguments: dict[str, Any] = {
        "ttl_seconds": 10.0,
        "max_stale_seconds": 20.0,
        "refresh_mode": RefreshMode.REFRESH_AHEAD,
        field: bad,
    }
    with pytest.raises(error, match=field):
        FreshnessPolicy(**arguments)


def test_freshness_rejects_non_bool_flag() -> None:
    with pytest.raises(TypeError, match="allow_stale_on_error"):
        FreshnessPolicy(5.0, 5.0, allow_stale_on_error=1)  # type: ignore[arg-type]


def test_freshness_integers_become_floats() -> None:
    policy = FreshnessPolicy(5, max_stale_seconds=7)
    assert policy.ttl_seconds == 5.0
    assert isinstance(policy.ttl_seconds, float)
    assert isinstance(policy.max_stale_seconds, float)


def test_freshness_is_a_hashable_frozen_value() -> None:
    policy = FreshnessPolicy(5.0, 5.0)
    assert policy == FreshnessPolicy(5.0, 5.0)
    assert hash(policy) == hash(FreshnessPolicy(5.0, 5.0))
    assert pickle.loads(pickle.dumps(policy)) == policy
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.ttl_seconds = 1.0  # type: ignore[misc]


def test_refresh_mode_members() -> None:
    assert {member.name: member.value for member in RefreshMode} == {
        "BLOCKING": "blocking",
        "STALE_WHILE_REVALIDATE": "stale_while_revalidate",
        "REFRESH_AHEAD": "refresh_ahead",
    }


# --- ObservationPolicy -------------------------------------------------------------------------


def test_observation_defaults() -> None:
    policy = ObservationPolicy()
    assert policy.future_tolerance_seconds == 1.0
    assert policy.reject_future_observations is True


@pytest.mark.parametrize("observed_at", [0.0, 500.0, 999.999, 1000.0])
def test_past_and_present_observations_have_no_skew(observed_at: float) -> None:
    assert ObservationPolicy().future_skew(observed_at, 1000.0, what="ctx") == 0.0


@pytest.mark.parametrize("ahead", [0.25, 0.5, 1.0])
def test_future_within_tolerance_reports_its_skew(ahead: float) -> None:
    skew = ObservationPolicy(future_tolerance_seconds=1.0).future_skew(
        1000.0 + ahead, 1000.0, what="ctx"
    )
    assert skew == pytest.approx(ahead)


def test_future_beyond_tolerance_is_rejected() -> None:
    with pytest.raises(SourceProtocolError) as caught:
        ObservationPolicy(future_tolerance_seconds=1.0).future_skew(
            1001.5, 1000.0, what="source observation for market:price"
        )
    assert str(caught.value) == "source observation for market:price is 1.500000s in the future"


def test_zero_tolerance_rejects_any_future() -> None:
    with pytest.raises(SourceProtocolError):
        ObservationPolicy(future_tolerance_seconds=0.0).future_skew(1000.001, 1000.0, what="c")


def test_future_beyond_tolerance_is_kept_when_not_rejected() -> None:
    policy = ObservationPolicy(future_tolerance_seconds=1.0, reject_future_observations=False)
    assert policy.future_skew(1060.0, 1000.0, what="ctx") == pytest.approx(60.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1000", None, True])
def test_non_finite_or_non_number_observations_are_rejected(bad: Any) -> None:
    for policy in (ObservationPolicy(), ObservationPolicy(reject_future_observations=False)):
        with pytest.raises(SourceProtocolError, match="ctx: observed_at"):
            policy.future_skew(bad, 1000.0, what="ctx")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"future_tolerance_seconds": -1.0}, ValueError, "cannot be negative"),
        ({"future_tolerance_seconds": math.nan}, ValueError, "must be finite"),
        ({"future_tolerance_seconds": "soon"}, ValueError, "must be a finite number"),
        ({"reject_future_observations": "yes"}, TypeError, "reject_future_observations"),
    ],
)
def test_observation_policy_validation(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ObservationPolicy(**arguments)


# --- SourceAuthorityPolicy ---------------------------------------------------------------------


def test_rank_for_listed_and_unlisted_sources() -> None:
    policy = SourceAuthorityPolicy(
        source_ranks={"reconciled-local": 300, "user-data-stream": 200, "binance-rest": 100},
        default_rank=10,
    )
    assert policy.rank_for("reconciled-local") == 300
    assert policy.rank_for("binance-rest") == 100
    assert policy.rank_for("unknown") == 10
    assert SourceAuthorityPolicy().rank_for("anything") == 0


def test_source_ranks_are_a_read_only_copy() -> None:
    ranks = {"a": 1}
    policy = SourceAuthorityPolicy(source_ranks=ranks)
    ranks["a"] = 5
    assert policy.rank_for("a") == 1
    with pytest.raises(TypeError):
        policy.source_ranks["a"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("arguments", "error", "text"),
    [
        ({"source_ranks": {"a": 1.5}}, TypeError, "source_ranks"),
        ({"source_ranks": {"a": True}}, TypeError, "source_ranks"),
        ({"source_ranks": {"": 1}}, ValueError, "source_ranks"),
        ({"source_ranks": {1: 1}}, TypeError, "source_ranks"),
        ({"source_ranks": [("a", 1)]}, TypeError, "source_ranks"),
        ({"default_rank": "high"}, TypeError, "default_rank"),
    ],
)
def test_source_authority_validation(
    arguments: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        SourceAuthorityPolicy(**arguments)


# --- AuthorityPolicyResolver -------------------------------------------------------------------

DEFAULT = SourceAuthorityPolicy({"rest": 1})
DYNAMIC = SourceAuthorityPolicy({"rest": 2})
OVERRIDE = SourceAuthorityPolicy({"rest": 3})


def test_resolver_precedence_overrides_then_dynamic_then_default() -> None:
    resolver = AuthorityPolicyResolver(
        default=DEFAULT,
        overrides={KEY: OVERRIDE},
        dynamic=lambda key: DYNAMIC if key.subject.endswith("USDT") else None,
    )
    assert resolver.resolve(KEY) is OVERRIDE
    assert resolver.rank_for(KEY, "rest") == 3
    assert resolver.resolve(OTHER) is DYNAMIC
    assert resolver.rank_for(OTHER, "rest") == 2
    plain = ResourceKey("market", "price", "BTCEUR")
    assert resolver.resolve(plain) is DEFAULT
    assert resolver.rank_for(plain, "rest") == 1
    assert resolver.rank_for(plain, "unknown") == 0


def test_override_wins_even_when_dynamic_answers() -> None:
    calls: list[ResourceKey] = []

    def dynamic(key: ResourceKey) -> SourceAuthorityPolicy:
        calls.append(key)
        return DYNAMIC

    resolver = AuthorityPolicyResolver(overrides={KEY: OVERRIDE}, dynamic=dynamic)
    assert resolver.resolve(KEY) is OVERRIDE
    assert resolver.resolve(OTHER) is DYNAMIC
    assert calls == [OTHER]


def test_overrides_match_equal_keys_built_differently() -> None:
    resolver = AuthorityPolicyResolver(overrides={KEY: OVERRIDE})
    assert resolver.resolve(ResourceKey.legacy("MARKET", "Price", "btcusdt")) is OVERRIDE


def test_resolver_without_rules_gives_every_source_rank_zero() -> None:
    resolver = AuthorityPolicyResolver()
    assert resolver.rank_for(KEY, "rest") == 0
    assert resolver.resolve(KEY) == SourceAuthorityPolicy()
    assert not resolver.has_rules


def test_has_rules() -> None:
    assert not AuthorityPolicyResolver(default=SourceAuthorityPolicy()).has_rules
    assert AuthorityPolicyResolver(default=DEFAULT).has_rules
    assert AuthorityPolicyResolver(default=SourceAuthorityPolicy(default_rank=5)).has_rules
    assert AuthorityPolicyResolver(overrides={KEY: SourceAuthorityPolicy()}).has_rules
    assert AuthorityPolicyResolver(dynamic=lambda key: None).has_rules
    assert not AuthorityPolicyResolver(overrides={}).has_rules


def test_resolver_validation() -> None:
    with pytest.raises(TypeError, match="default"):
        AuthorityPolicyResolver(default={"rest": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="overrides"):
        AuthorityPolicyResolver(overrides={"market:price": DEFAULT})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="overrides"):
        AuthorityPolicyResolver(overrides={KEY: {"rest": 1}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="dynamic"):
        AuthorityPolicyResolver(dynamic=DEFAULT)  # type: ignore[arg-type]


def test_dynamic_resolver_returning_garbage() -> None:
    resolver = AuthorityPolicyResolver(dynamic=lambda key: 5)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="dynamic"):
        resolver.resolve(KEY)


def test_resolver_overrides_are_copied() -> None:
    overrides = {KEY: OVERRIDE}
    resolver = AuthorityPolicyResolver(overrides=overrides)
    overrides[OTHER] = OVERRIDE
    assert resolver.resolve(OTHER) == SourceAuthorityPolicy()


def test_resolver_is_an_authority_policy_provider() -> None:
    assert isinstance(AuthorityPolicyResolver(), AuthorityPolicyProvider)


# --- SnapshotConsistencyPolicy -----------------------------------------------------------------


def test_consistency_policy() -> None:
    policy = SnapshotConsistencyPolicy(2.0)
    assert policy.max_observation_skew_seconds == 2.0
    assert policy.include_optional_resources is False
    assert SnapshotConsistencyPolicy(0).max_observation_skew_seconds == 0.0
    wide = SnapshotConsistencyPolicy(
        max_observation_skew_seconds=2, include_optional_resources=True
    )
    assert wide.include_optional_resources
    assert policy == SnapshotConsistencyPolicy(2.0)
    assert hash(policy) == hash(SnapshotConsistencyPolicy(2.0))


@pytest.mark.parametrize(
    ("arguments", "error", "field"),
    [
        ({"max_observation_skew_seconds": -0.1}, ValueError, "max_observation_skew_seconds"),
        ({"max_observation_skew_seconds": math.nan}, ValueError, "max_observation_skew_seconds"),
        ({"max_observation_skew_seconds": math.inf}, ValueError, "max_observation_skew_seconds"),
        ({"max_observation_skew_seconds": "2"}, TypeError, "max_observation_skew_seconds"),
        (
            {"max_observation_skew_seconds": 1.0, "include_optional_resources": 1},
            TypeError,
            "include_optional_resources",
        ),
    ],
)
def test_consistency_policy_validation(
    arguments: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        SnapshotConsistencyPolicy(**arguments)
