"""Keys as text: ``str(ResourceKey)`` is unambiguous and ``ResourceKey.parse`` is its exact
inverse (issue 16, item 3)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from coalestra import (
    CASE_INSENSITIVE_KEY_NORMALIZER,
    LEGACY_KEY_NORMALIZER,
    PRESERVE_KEY_NORMALIZER,
    KeyNormalizer,
    ResourceKey,
)

NORMALIZERS = st.sampled_from(
    [PRESERVE_KEY_NORMALIZER, LEGACY_KEY_NORMALIZER, CASE_INSENSITIVE_KEY_NORMALIZER]
)
# Separators and the escape character are drawn often, so collisions would be found.
TRICKY = st.text(alphabet=st.sampled_from(list(":?&=\\ aB")) | st.characters(), max_size=8)
PLAIN = st.text(alphabet="abcXYZ019_-./", max_size=6)


@st.composite
def keys(draw: st.DrawFn, part: st.SearchStrategy[str] = TRICKY) -> ResourceKey:
    return draw(normalized_keys(part))[0]


@st.composite
def normalized_keys(
    draw: st.DrawFn, part: st.SearchStrategy[str] = TRICKY
) -> tuple[ResourceKey, KeyNormalizer]:
    normalizer = draw(NORMALIZERS)
    qualifiers = draw(st.dictionaries(part, part, max_size=3))
    try:
        key = ResourceKey(draw(part), draw(part), draw(part), qualifiers, normalizer=normalizer)
    except ValueError:  # an empty namespace or name, or qualifier names equal once normalized
        assume(False)
        raise
    return key, normalizer


@given(normalized_keys())
def test_parse_is_the_exact_inverse_of_str(made: tuple[ResourceKey, KeyNormalizer]) -> None:
    key, normalizer = made
    text = str(key)
    parsed = ResourceKey.parse(text, normalizer=normalizer)
    assert parsed == key
    assert (parsed.namespace, parsed.name, parsed.subject, parsed.qualifiers) == (
        key.namespace,
        key.name,
        key.subject,
        key.qualifiers,
    )
    assert str(parsed) == text


@given(keys())
def test_default_keys_parse_back_without_naming_a_normalizer(key: ResourceKey) -> None:
    plain = key.normalized(PRESERVE_KEY_NORMALIZER)
    assert ResourceKey.parse(str(plain)) == plain


@given(keys(), keys())
def test_str_is_unambiguous(first: ResourceKey, second: ResourceKey) -> None:
    assert (str(first) == str(second)) == (first == second)


@given(keys(PLAIN))
def test_ordinary_keys_render_exactly_as_before(key: ResourceKey) -> None:
    text = f"{key.namespace}:{key.name}"
    if key.subject:
        text += f":{key.subject}"
    if key.qualifiers:
        text += "?" + "&".join(f"{name}={value}" for name, value in key.qualifiers)
    assert str(key) == text


@given(keys())
def test_pickled_keys_keep_their_text(key: ResourceKey) -> None:
    assert str(pickle.loads(pickle.dumps(key))) == str(key)


def test_the_keys_of_the_issue_no_longer_collide() -> None:
    first = ResourceKey("m", "p:q", "a")
    second = ResourceKey("m:p", "q", "a")
    assert str(first) == "m:p\\:q:a"
    assert str(second) == "m\\:p:q:a"
    assert str(ResourceKey("m", "p", "q:a")) == "m:p:q:a"  # a subject keeps its colons
    assert ResourceKey.parse("m:p\\:q:a") == first
    assert ResourceKey.parse("m\\:p:q:a") == second
    assert ResourceKey.parse("m:p:q:a") == ResourceKey("m", "p", "q:a")


def test_escapes_in_subjects_and_qualifiers() -> None:
    key = ResourceKey("m", "p", "a?b\\c", {"x&y": "1=2&3", "q=r": "?"})
    assert str(key) == "m:p:a\\?b\\\\c?q\\=r=?&x\\&y=1=2\\&3"
    assert ResourceKey.parse(str(key)) == key


def test_parse_normalizes_like_the_constructor() -> None:
    text = " Market : Price : btc ?Interval= 1m &b=2"
    assert ResourceKey.parse(text) == ResourceKey(
        "Market", "Price", "btc", {"Interval": "1m", "b": "2"}
    )
    legacy = ResourceKey.parse(text, normalizer=LEGACY_KEY_NORMALIZER)
    assert legacy == ResourceKey.legacy("market", "price", "BTC", {"interval": "1m", "b": "2"})
    assert legacy.qualifier("INTERVAL") == "1m"  # the key keeps the parsing normalizer
    assert ResourceKey.parse("m:p:") == ResourceKey("m", "p")
    assert ResourceKey.parse("m:p?a=&b=x=y") == ResourceKey("m", "p", "", {"a": "", "b": "x=y"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "market",
            r"^key text must be namespace:name\[:subject\]\[\?name=value&...\], got 'market'$",
        ),
        ("m\\:p", "key text must be"),
        (":p", "^namespace cannot be empty$"),
        ("m: ", "^name cannot be empty$"),
        ("m:p?a", "^qualifier 'a' has no '=' in key text 'm:p\\?a'$"),
        ("m:p?", "has no '='"),
        ("m:p?a=1&a=2", "^duplicate qualifier name: a$"),
        ("m:p:x\\", "^key text ends with a lone backslash: "),
    ],
)
def test_parse_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResourceKey.parse(text)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(TypeError, match=r"^key text must be a str, got bytes$"):
        ResourceKey.parse(b"m:p")  # type: ignore[arg-type]
