"""ResourceKey: identity, normalization, qualifiers, rendering, copying and bad input."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any

import pytest

from coalestra.core import (
    CASE_INSENSITIVE_KEY_NORMALIZER,
    LEGACY_KEY_NORMALIZER,
    PRESERVE_KEY_NORMALIZER,
    KeyNormalizer,
    ResourceKey,
)


class Interval(str, Enum):
    ONE_MINUTE = "1m"


class Level(IntEnum):
    HIGH = 3


# --- parts -------------------------------------------------------------------------------------


def test_parts_are_kept_and_stripped() -> None:
    key = ResourceKey("  market ", "\tprice\n", " BTCUSDT ")
    assert (key.namespace, key.name, key.subject) == ("market", "price", "BTCUSDT")
    assert key.qualifiers == ()


def test_case_is_preserved_by_default() -> None:
    key = ResourceKey("Tenant-A", "DocumentId", "/Path/File")
    assert (key.namespace, key.name, key.subject) == ("Tenant-A", "DocumentId", "/Path/File")
    assert key != ResourceKey("tenant-a", "documentid", "/path/file")


def test_subject_defaults_to_empty_and_may_be_blank() -> None:
    assert ResourceKey("a", "b").subject == ""
    assert ResourceKey("a", "b", "   ").subject == ""
    assert ResourceKey("a", "b", "   ") == ResourceKey("a", "b")


def test_product_page_candles_example() -> None:
    candles = ResourceKey("market", "candles", "BTCUSDT", {"interval": "1m", "limit": 500})
    assert candles.qualifier("interval") == "1m"
    assert candles.qualifier("limit") == "500"
    assert candles.qualifiers == (("interval", "1m"), ("limit", "500"))


# --- qualifiers --------------------------------------------------------------------------------


def test_qualifiers_become_a_sorted_tuple_of_text_pairs() -> None:
    key = ResourceKey("m", "c", "s", {"z": 1, "a": "x", "m": True})
    assert key.qualifiers == (("a", "x"), ("m", "True"), ("z", "1"))
    assert isinstance(key.qualifiers, tuple)


def test_mapping_order_does_not_matter_for_equality_or_hash() -> None:
    first = ResourceKey("m", "c", "s", {"interval": "1m", "limit": 500})
    second = ResourceKey("m", "c", "s", {"limit": 500, "interval": "1m"})
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


def test_qualifiers_given_as_pairs_equal_the_mapping_form() -> None:
    pairs = ResourceKey("m", "c", "s", [("limit", 500), ("interval", "1m")])
    mapping = ResourceKey("m", "c", "s", {"interval": "1m", "limit": 500})
    assert pairs == mapping
    assert hash(pairs) == hash(mapping)


def test_qualifier_names_and_values_are_stripped() -> None:
    key = ResourceKey("m", "c", "", {" interval ": " 1m "})
    assert key.qualifiers == (("interval", "1m"),)


def test_qualifier_value_types_render_as_text() -> None:
    key = ResourceKey(
        "m",
        "c",
        "",
        {
            "int": 5,
            "float": 1.5,
            "bool": False,
            "decimal": Decimal("2.50"),
            "enum": Interval.ONE_MINUTE,
            "intenum": Level.HIGH,
        },
    )
    assert dict(key.qualifiers) == {
        "int": "5",
        "float": "1.5",
        "bool": "False",
        "decimal": "2.50",
        "enum": "1m",
        "intenum": "3",
    }


def test_str_enum_qualifier_is_stored_as_its_plain_value() -> None:
    # Even with a normalizer that does not touch values, the member must not leak into str().
    identity = KeyNormalizer(qualifier_value=lambda value: value)
    key = ResourceKey("m", "c", "", {"interval": Interval.ONE_MINUTE}, normalizer=identity)
    assert str(key) == "m:c?interval=1m"
    assert type(key.qualifiers[0][1]) is str


def test_qualifier_lookup_and_default() -> None:
    key = ResourceKey("m", "c", "", {"interval": "1m"})
    assert key.qualifier("interval") == "1m"
    assert key.qualifier(" interval ") == "1m"
    assert key.qualifier("limit") is None
    assert key.qualifier("limit", "100") == "100"


def test_qualifier_lookup_uses_the_keys_normalizer() -> None:
    key = ResourceKey("m", "c", "", {"Interval": "1m"}, normalizer=CASE_INSENSITIVE_KEY_NORMALIZER)
    assert key.qualifier("INTERVAL") == "1m"
    plain = ResourceKey("m", "c", "", {"Interval": "1m"})
    assert plain.qualifier("interval") is None


def test_with_qualifiers_adds_and_replaces() -> None:
    key = ResourceKey("m", "c", "s", {"interval": "1m"})
    wider = key.with_qualifiers({"limit": 500}, interval="5m")
    assert wider.qualifiers == (("interval", "5m"), ("limit", "500"))
    assert wider == ResourceKey("m", "c", "s", {"limit": 500, "interval": "5m"})
    assert hash(wider) == hash(ResourceKey("m", "c", "s", {"limit": 500, "interval": "5m"}))
    assert key.qualifiers == (("interval", "1m"),)  # the original is untouched


def test_with_qualifiers_keyword_only_and_no_change() -> None:
    key = ResourceKey("m", "c")
    assert key.with_qualifiers(venue="spot").qualifiers == (("venue", "spot"),)
    assert key.with_qualifiers() == key


def test_with_qualifiers_normalizes_with_the_keys_normalizer() -> None:
    key = ResourceKey.legacy("m", "c", "btc")
    assert key.with_qualifiers({" Venue ": " Spot "}).qualifiers == (("venue", "Spot"),)


def test_with_qualifiers_validates_values() -> None:
    key = ResourceKey("m", "c")
    with pytest.raises(TypeError, match="venue"):
        key.with_qualifiers(venue=["spot"])


def test_without_qualifiers() -> None:
    key = ResourceKey("m", "c", "s", {"a": 1, "b": 2, "c": 3})
    assert key.without_qualifiers("b").qualifiers == (("a", "1"), ("c", "3"))
    assert key.without_qualifiers("a", "c", "missing").qualifiers == (("b", "2"),)
    assert key.without_qualifiers() == ResourceKey("m", "c", "s")
    assert hash(key.without_qualifiers()) == hash(ResourceKey("m", "c", "s"))


def test_without_qualifiers_normalizes_names() -> None:
    key = ResourceKey.legacy("m", "c", "", {"venue": "spot"})
    assert key.without_qualifiers(" VENUE ").qualifiers == ()


# --- normalizers -------------------------------------------------------------------------------


def test_legacy_normalizer_exactly_as_specified() -> None:
    assert LEGACY_KEY_NORMALIZER.normalize_namespace("  AbC ") == "abc"
    assert LEGACY_KEY_NORMALIZER.normalize_name("  PrIcE ") == "price"
    assert LEGACY_KEY_NORMALIZER.normalize_subject(" ab ") == "AB"
    assert LEGACY_KEY_NORMALIZER.normalize_qualifier(" Venue ", " X ") == ("venue", "X")


def test_legacy_normalizer_fields_are_the_transforms() -> None:
    assert LEGACY_KEY_NORMALIZER.namespace("  AbC ") == "abc"
    assert LEGACY_KEY_NORMALIZER.name("  AbC ") == "abc"
    assert LEGACY_KEY_NORMALIZER.subject(" ab ") == "AB"
    assert LEGACY_KEY_NORMALIZER.qualifier_name(" Venue ") == "venue"
    assert LEGACY_KEY_NORMALIZER.qualifier_value(" X ") == "X"


def test_case_insensitive_normalizer_casefolds_every_part() -> None:
    norm = CASE_INSENSITIVE_KEY_NORMALIZER
    assert norm.normalize_namespace(" Straße ") == "strasse"
    assert norm.normalize_name(" Straße ") == "strasse"
    assert norm.normalize_subject(" Straße ") == "strasse"
    assert norm.normalize_qualifier(" Straße ", " Straße ") == ("strasse", "strasse")


def test_preserve_normalizer_only_strips() -> None:
    norm = PRESERVE_KEY_NORMALIZER
    assert norm.normalize_namespace("  AbC ") == "AbC"
    assert norm.normalize_subject(" ab ") == "ab"
    assert norm.normalize_qualifier(" Venue ", " X ") == ("Venue", "X")
    assert norm == KeyNormalizer()


def test_product_page_case_insensitive_example() -> None:
    key = ResourceKey(
        "Tenant-A", "DocumentId", "/Path/File", normalizer=CASE_INSENSITIVE_KEY_NORMALIZER
    )
    assert (key.namespace, key.name, key.subject) == ("tenant-a", "documentid", "/path/file")
    assert key == ResourceKey(
        "TENANT-a", "documentID", "/path/FILE", normalizer=CASE_INSENSITIVE_KEY_NORMALIZER
    )


def test_legacy_constructor() -> None:
    key = ResourceKey.legacy("  AbC ", " Price ", " ab ", {" Venue ": " X "})
    assert (key.namespace, key.name, key.subject) == ("abc", "price", "AB")
    assert key.qualifiers == (("venue", "X"),)
    assert key == ResourceKey(
        "  AbC ", " Price ", " ab ", {" Venue ": " X "}, normalizer=LEGACY_KEY_NORMALIZER
    )


def test_normalized_returns_a_renormalized_key() -> None:
    key = ResourceKey("Market", "Price", "btcusdt", {"Venue": "Spot"})
    legacy = key.normalized(LEGACY_KEY_NORMALIZER)
    assert str(legacy) == "market:price:BTCUSDT?venue=Spot"
    assert legacy.qualifier("VENUE") == "Spot"  # the new key uses the new normalizer
    assert str(key) == "Market:Price:btcusdt?Venue=Spot"


def test_normalizer_is_not_part_of_equality() -> None:
    preserve = ResourceKey("abc", "price", "AB", {"venue": "X"})
    legacy = ResourceKey.legacy("ABC", "PRICE", "ab", {"VENUE": "X"})
    assert preserve == legacy
    assert hash(preserve) == hash(legacy)
    assert {preserve: 1}[legacy] == 1


def test_custom_normalizer() -> None:
    norm = KeyNormalizer(subject=lambda value: value.strip().replace("/", "-"))
    key = ResourceKey("a", "b", " x/y ", normalizer=norm)
    assert key.subject == "x-y"


def test_normalizer_fields_must_be_callable() -> None:
    with pytest.raises(TypeError, match="subject"):
        KeyNormalizer(subject="upper")  # type: ignore[arg-type]


def test_normalizer_must_return_str() -> None:
    returns_int = KeyNormalizer(namespace=lambda value: 5)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="namespace"):
        ResourceKey("a", "b", normalizer=returns_int)
    bad_value = KeyNormalizer(qualifier_value=lambda value: 5)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="qualifier value"):
        ResourceKey("a", "b", "", {"q": "x"}, normalizer=bad_value)


def test_normalizer_argument_must_be_a_key_normalizer() -> None:
    with pytest.raises(TypeError, match="normalizer"):
        ResourceKey("a", "b", normalizer=str.lower)  # type: ignore[arg-type]


def test_normalizer_that_empties_the_name_is_rejected() -> None:
    blanking = KeyNormalizer(name=lambda value: "")
    with pytest.raises(ValueError, match="name"):
        ResourceKey("a", "b", normalizer=blanking)


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (ResourceKey("market", "price"), "market:price"),
        (ResourceKey("market", "price", "BTCUSDT"), "market:price:BTCUSDT"),
        (ResourceKey("market", "price", "", {"venue": "spot"}), "market:price?venue=spot"),
        (
            ResourceKey("market", "price", "BTCUSDT", {"venue": "spot"}),
            "market:price:BTCUSDT?venue=spot",
        ),
        (ResourceKey("m", "c", "s", {"b": 2, "a": 1}), "m:c:s?a=1&b=2"),
    ],
)
def test_str_rendering(key: ResourceKey, text: str) -> None:
    assert str(key) == text


def test_repr_shows_the_rendering() -> None:
    key = ResourceKey("market", "price", "BTCUSDT", {"venue": "spot"})
    assert repr(key) == "ResourceKey('market:price:BTCUSDT?venue=spot')"


# --- ordering ----------------------------------------------------------------------------------


def test_ordering_is_by_namespace_name_subject_qualifiers() -> None:
    keys = [
        ResourceKey("b", "a"),
        ResourceKey("a", "b", "y"),
        ResourceKey("a", "b", "x", {"q": 2}),
        ResourceKey("a", "b", "x", {"q": 1}),
        ResourceKey("a", "b"),
        ResourceKey("a", "a", "z"),
    ]
    assert [str(key) for key in sorted(keys)] == [
        "a:a:z",
        "a:b",
        "a:b:x?q=1",
        "a:b:x?q=2",
        "a:b:y",
        "b:a",
    ]


def test_all_comparison_operators() -> None:
    low, high = ResourceKey("a", "b"), ResourceKey("a", "c")
    assert low < high
    assert low <= high
    assert high > low
    assert high >= low
    assert low <= ResourceKey("a", "b")
    assert low >= ResourceKey("a", "b")
    assert not high < low
    assert not high <= low


def test_comparison_with_other_types() -> None:
    key = ResourceKey("a", "b")
    assert key != "a:b"
    assert (key == "a:b") is False
    with pytest.raises(TypeError):
        _ = key < "a:b"  # type: ignore[operator]


# --- immutability, copying, pickling -----------------------------------------------------------


def test_keys_are_immutable() -> None:
    key = ResourceKey("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.namespace = "c"  # type: ignore[misc]


def test_copy_and_deepcopy_return_an_equal_key() -> None:
    key = ResourceKey("m", "c", "s", {"a": 1}, normalizer=LEGACY_KEY_NORMALIZER)
    assert copy.copy(key) == key
    clone = copy.deepcopy(key)
    assert clone == key
    assert hash(clone) == hash(key)
    assert clone.qualifier("A") == "1"  # still the legacy normalizer


def test_deepcopy_inside_containers() -> None:
    key = ResourceKey("m", "c", "s")
    data = {key: [key]}
    clone = copy.deepcopy(data)
    assert clone == data
    assert next(iter(clone)) == key


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol: int) -> None:
    key = ResourceKey("m", "c", "S", {"b": 2, "a": 1}, normalizer=LEGACY_KEY_NORMALIZER)
    clone = pickle.loads(pickle.dumps(key, protocol=protocol))
    assert clone == key
    assert hash(clone) == hash(key)
    assert str(clone) == str(key)
    assert clone.qualifier(" A ") == "1"  # normalizer survived
    assert clone.with_qualifiers(C=3).qualifier("c") == "3"


def test_pickle_of_a_case_insensitive_key_keeps_its_normalizer() -> None:
    key = ResourceKey("M", "C", normalizer=CASE_INSENSITIVE_KEY_NORMALIZER)
    clone = pickle.loads(pickle.dumps(key))
    assert clone.with_qualifiers(Q="Straße").qualifiers == (("q", "strasse"),)


def test_normalizer_constants_pickle() -> None:
    for norm in (PRESERVE_KEY_NORMALIZER, LEGACY_KEY_NORMALIZER, CASE_INSENSITIVE_KEY_NORMALIZER):
        assert pickle.loads(pickle.dumps(norm)) == norm


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "part"),
    [
        ((1, "b"), "namespace"),
        (("a", None), "name"),
        (("a", "b", 3), "subject"),
        ((b"a", "b"), "namespace"),
    ],
)
def test_non_str_parts_raise_type_error_naming_the_part(args: tuple[Any, ...], part: str) -> None:
    with pytest.raises(TypeError, match=part):
        ResourceKey(*args)


@pytest.mark.parametrize(
    ("args", "part"),
    [(("", "b"), "namespace"), (("   ", "b"), "namespace"), (("a", ""), "name")],
)
def test_empty_namespace_or_name_raises_value_error(args: tuple[str, str], part: str) -> None:
    with pytest.raises(ValueError, match=part):
        ResourceKey(*args)


def test_duplicate_qualifier_names_after_normalization() -> None:
    with pytest.raises(ValueError, match=r"^duplicate qualifier name: venue$"):
        ResourceKey("a", "b", "", {"venue": "x", " venue ": "y"})
    with pytest.raises(ValueError, match=r"^duplicate qualifier name: venue$"):
        ResourceKey("a", "b", "", [("venue", "x"), ("venue", "x")])
    with pytest.raises(ValueError, match=r"^duplicate qualifier name: venue$"):
        ResourceKey.legacy("a", "b", "", {"venue": "x", "VENUE": "y"})


@pytest.mark.parametrize("value", [[1], {"a": 1}, None, {1, 2}, (1, 2), b"bytes", object(), 1 + 2j])
def test_non_scalar_qualifier_values_name_the_qualifier(value: object) -> None:
    with pytest.raises(TypeError, match="'limit'"):
        ResourceKey("a", "b", "", {"limit": value})


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")],
)
def test_non_finite_qualifier_values_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match=r"'limit'.*finite"):
        ResourceKey("a", "b", "", {"limit": value})


def test_nan_inside_an_enum_qualifier_is_rejected() -> None:
    class Weird(float, Enum):
        NOT_A_NUMBER = math.nan

    with pytest.raises(ValueError, match="finite"):
        ResourceKey("a", "b", "", {"q": Weird.NOT_A_NUMBER})


@pytest.mark.parametrize("bad", [{1: "x"}, [(None, "x")]])
def test_non_str_qualifier_names(bad: Any) -> None:
    with pytest.raises(TypeError, match="qualifier names"):
        ResourceKey("a", "b", "", bad)


def test_empty_qualifier_name() -> None:
    with pytest.raises(ValueError, match="qualifier name"):
        ResourceKey("a", "b", "", {"  ": "x"})


@pytest.mark.parametrize("bad", ["venue=spot", b"venue", 5, [("venue",)], [["venue", "x"]]])
def test_malformed_qualifier_containers(bad: Any) -> None:
    with pytest.raises(TypeError, match="qualifiers"):
        ResourceKey("a", "b", "", bad)


def test_empty_qualifier_value_is_allowed() -> None:
    key = ResourceKey("a", "b", "", {"q": "  "})
    assert key.qualifiers == (("q", ""),)
    assert str(key) == "a:b?q="


def test_dataclass_fields_match_the_contract() -> None:
    names = [item.name for item in dataclasses.fields(ResourceKey)]
    assert names == ["namespace", "name", "subject", "qualifiers", "_normalizer"]
