"""Topic name/filter validation, matching rules (section 4.7) and the subscription trie."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.errors import ProtocolError, ReasonCode
from roost.topics import (
    TopicTrie,
    is_wildcard,
    parse_shared,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)


@pytest.mark.parametrize("name", ["a", "a/b", "/", "a//b", "$SYS/x", "é/ü", " "])
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", "a/+", "+", "a/#", "#", "a+b", "a#"])
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_topic_name(name)
    assert info.value.reason_code is ReasonCode.TOPIC_NAME_INVALID


def test_topic_name_limits_count_utf8_bytes_and_levels() -> None:
    validate_topic_name("é" * 5, max_length=10)
    with pytest.raises(ProtocolError):
        validate_topic_name("é" * 6, max_length=10)
    validate_topic_name("a/b/c", max_levels=3)
    with pytest.raises(ProtocolError):
        validate_topic_name("a/b/c/d", max_levels=3)


@pytest.mark.parametrize(
    "topic_filter",
    ["a", "#", "+", "a/#", "+/+", "a/+/b", "/+", "+/", "$SYS/#", "$share/g/a/#", "$share/g/+"],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a/#/b",
        "#/a",
        "a#",
        "a/b#",
        "a+",
        "a/+b",
        "++",
        "$share/",
        "$share//a",
        "$share/g",
        "$share/g/",
        "$share/g+/a",
        "$share/g#/a",
        "$share/g/a/#/b",
    ],
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.reason_code is ReasonCode.TOPIC_FILTER_INVALID


def test_topic_filter_limits() -> None:
    with pytest.raises(ProtocolError):
        validate_topic_filter("a" * 11, max_length=10)
    validate_topic_filter("$share/g/a/b", max_levels=2)
    with pytest.raises(ProtocolError):
        validate_topic_filter("a/b/c", max_levels=2)


def test_parse_shared_and_is_wildcard() -> None:
    assert parse_shared("$share/g/a/b") == ("g", "a/b")
    assert parse_shared("$share/g/#") == ("g", "#")
    assert parse_shared("a/b") == (None, "a/b")
    assert parse_shared("$share") == (None, "$share")
    assert is_wildcard("a/+") and is_wildcard("#") and not is_wildcard("a/b")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/+", "a", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+/b", "a//b", True),
        ("+", "", True),
        ("+/+", "/", True),
        ("#", "a/b", True),
        ("#", "/", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/#", "$SYS", True),
        ("$SYS/+", "$SYS/x", True),
        ("a/$x", "a/$x", True),
        ("a/+", "a/$x", True),
        ("$share/g/a/+", "a/b", True),
        ("$share/g/#", "$SYS/x", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected
    trie: TopicTrie[str, int] = TopicTrie()
    trie.add(topic_filter, "c", 1)
    assert bool(trie.match(topic)) is expected


def test_trie_add_get_replace_remove_prunes() -> None:
    trie: TopicTrie[str, int] = TopicTrie()
    assert trie.add("a/+/c", "c1", 1) is True
    assert trie.add("a/+/c", "c2", 2) is True
    assert trie.add("a/+/c", "c1", 3) is False
    assert trie.add("$share/g/a/+/c", "c3", 4) is True
    assert len(trie) == 3
    assert trie.get("a/+/c") == {"c1": 3, "c2": 2}
    assert trie.get("a/+") is None
    assert sorted(trie.filters()) == ["$share/g/a/+/c", "a/+/c"]
    assert sorted((f, dict(e)) for f, e in trie.match("a/b/c")) == [
        ("$share/g/a/+/c", {"c3": 4}),
        ("a/+/c", {"c1": 3, "c2": 2}),
    ]

    assert trie.remove("a/+/c", "missing") is None
    assert trie.remove("x/y", "c1") is None
    assert trie.remove("a/+/c", "c1") == 3
    assert trie.remove("a/+/c", "c2") == 2
    assert trie.get("a/+/c") is None
    assert trie.remove("$share/g/a/+/c", "c3") == 4
    assert len(trie) == 0
    assert trie._root.children == {}
    assert list(trie.filters()) == []


def test_trie_prunes_only_empty_branch() -> None:
    trie: TopicTrie[str, int] = TopicTrie()
    trie.add("a", "c", 1)
    trie.add("a/b/c", "c", 2)
    trie.remove("a/b/c", "c")
    assert list(trie._root.children["a"].children) == []
    assert trie.match("a") == [("a", {"c": 1})]


def test_match_cache_is_bounded_and_invalidated() -> None:
    trie: TopicTrie[str, int] = TopicTrie(cache_size=2)
    trie.add("a/#", "c", 1)
    first = trie.match("a/b")
    assert trie.match("a/b") is first
    trie.match("a/c")
    trie.match("a/d")
    assert len(trie._cache) <= 2
    trie.add("a/b", "c", 2)
    assert len(trie.match("a/b")) == 2
    trie.remove("a/#", "c")
    assert trie.match("a/b") == [("a/b", {"c": 2})]


_level = st.sampled_from(["a", "b", "$a", ""])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter_level = st.sampled_from(["a", "b", "$a", "", "+"])
_filter = st.builds(
    lambda levels, hash_tail: "/".join(levels + ["#"] * hash_tail),
    st.lists(_filter_level, min_size=0, max_size=4),
    st.booleans(),
).filter(bool)
_maybe_shared = st.one_of(_filter, _filter.map(lambda f: f"$share/g/{f}"))


def _expected(trie_filters: set[str], topic: str) -> set[str]:
    return {f for f in trie_filters if topic_matches(f, topic)}


@settings(max_examples=300, deadline=None)
@given(
    filters=st.lists(_maybe_shared, max_size=12, unique=True),
    removals=st.lists(st.integers(min_value=0, max_value=11), max_size=6),
    topics=st.lists(_topic, min_size=1, max_size=6),
)
def test_trie_match_agrees_with_reference(
    filters: list[str], removals: list[int], topics: list[str]
) -> None:
    for topic_filter in filters:
        validate_topic_filter(topic_filter)
    trie: TopicTrie[int, str] = TopicTrie()
    for key, topic_filter in enumerate(filters):
        trie.add(topic_filter, key, topic_filter)
    live = set(filters)
    # Match before and after removals so a stale cache would show up.
    for topic in topics:
        assert {f for f, _ in trie.match(topic)} == _expected(live, topic)
    for index in removals:
        if index < len(filters) and filters[index] in live:
            assert trie.remove(filters[index], index) == filters[index]
            live.discard(filters[index])
        for topic in topics:
            found = trie.match(topic)
            assert {f for f, _ in found} == _expected(live, topic)
            assert all(entries for _, entries in found)
    assert len(trie) == len(live)
    assert set(trie.filters()) == live
