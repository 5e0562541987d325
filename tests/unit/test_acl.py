"""The ACL file: parsing, and what its rules allow (roost.security.acl, docs/acl.md)."""

from __future__ import annotations

import logging
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.errors import ConfigError
from roost.security.acl import (
    Acl,
    AclRules,
    AclSyntaxError,
    Right,
    _covers,
    _matches,
    _overlaps,
    parse_acl,
)
from roost.topics import topic_matches

READ, WRITE, SUBSCRIBE = Right.READ, Right.WRITE, Right.SUBSCRIBE

EXAMPLE = """\
# anonymous clients
topic read public/#

user alice
topic alice/#
topic deny alice/secret
topic write shared/inbox

user bob
topic read sensors/+/temperature
topic subscribe sensors/#

client dashboard-1
topic read dashboards/#

pattern readwrite users/%u/#
pattern read devices/%c/commands
pattern deny users/%u/locked/#
"""


@pytest.fixture
def rules() -> AclRules:
    return parse_acl(EXAMPLE, "acl.conf")


def test_anonymous_rules_apply_to_clients_without_user_name(rules: AclRules) -> None:
    assert rules.allows(None, "c", "public/news", READ)
    assert not rules.allows(None, "c", "public/news", WRITE)
    assert not rules.allows("alice", "c", "public/news", READ)  # not hers: anonymous only


def test_user_rules_default_access_readwrite_and_default_deny(rules: AclRules) -> None:
    assert rules.allows("alice", "c", "alice/notes", READ)
    assert rules.allows("alice", "c", "alice/notes", WRITE)
    assert rules.allows("alice", "c", "shared/inbox", WRITE)
    assert not rules.allows("alice", "c", "shared/inbox", READ)
    assert not rules.allows("alice", "c", "bob/notes", READ)
    assert not rules.allows("mallory", "c", "alice/notes", READ)  # an unknown user: nothing
    assert not rules.allows(None, "c", "other", WRITE)


def test_deny_wins_over_every_grant(rules: AclRules) -> None:
    assert not rules.allows("alice", "c", "alice/secret", READ)
    # a deny pattern beats the user's own grant and the pattern's grant
    assert rules.allows("alice", "c", "users/alice/profile", WRITE)
    assert not rules.allows("alice", "c", "users/alice/locked/x", WRITE)
    wider = parse_acl("user a\ntopic #\npattern deny %u/#", "f")
    assert not wider.allows("a", "c", "a/x", READ)
    assert wider.allows("a", "c", "b/x", READ)


def test_patterns_put_in_user_name_and_client_id(rules: AclRules) -> None:
    assert rules.allows("carol", "c", "users/carol/x", READ)
    assert not rules.allows("carol", "c", "users/dave/x", READ)
    assert rules.allows(None, "dev-7", "devices/dev-7/commands", READ)
    assert not rules.allows(None, "dev-7", "devices/dev-8/commands", READ)
    assert not rules.allows(None, "c", "users/None/x", READ)  # %u needs a user name


@pytest.mark.parametrize("username", ["+", "#", "a/b", ""])
def test_a_pattern_grants_nothing_to_an_unsafe_user_name(username: str) -> None:
    rules = parse_acl("pattern users/%u/#", "f")
    for topic in ("users/x/y", "users/a/b/c", "users//x", "users/+/x"):
        assert not rules.allows(username, "c", topic, READ)


def test_a_marker_inside_a_user_name_or_client_id_is_not_put_in_again() -> None:
    rules = parse_acl("pattern readwrite users/%u/#\npattern read devices/%c/%u", "f")
    # user "%c" connecting as client id "alice" gets users/%c/#, not users/alice/#
    assert not rules.allows("%c", "alice", "users/alice/inbox", READ)
    assert not rules.allows_filter("%c", "alice", "users/alice/#", SUBSCRIBE)
    assert rules.allows("%c", "alice", "users/%c/inbox", WRITE)
    assert rules.allows("bob", "%u", "devices/%u/bob", READ)  # client id "%u" stays as is
    assert not rules.allows("bob", "%u", "devices/bob/bob", READ)


def test_a_pattern_grants_no_dollar_topic_through_a_user_name() -> None:
    rules = parse_acl("pattern readwrite %u/#\npattern read $SYS/%u/#", "f")
    assert not rules.allows("$SYS", "c", "$SYS/broker/load", READ)
    assert not rules.allows_filter("$SYS", "c", "$SYS/#", SUBSCRIBE)
    assert rules.allows("alice", "c", "alice/x", WRITE)
    assert rules.allows("alice", "c", "$SYS/alice/x", READ)  # the rule's own "$" counts


def test_a_deny_pattern_applies_whatever_the_user_name() -> None:
    rules = parse_acl("user +\ntopic #\npattern deny private/%u/#", "f")
    assert not rules.allows("+", "c", "private/x/y", READ)  # '+' put in widens the deny
    assert rules.allows("+", "c", "public", READ)


def test_client_section_adds_to_the_identity_rules(rules: AclRules) -> None:
    assert rules.allows("bob", "dashboard-1", "dashboards/main", READ)
    assert rules.allows(None, "dashboard-1", "dashboards/main", READ)
    assert not rules.allows("bob", "dashboard-2", "dashboards/main", READ)


def test_wildcard_rules_do_not_reach_dollar_topics() -> None:
    rules = parse_acl("topic #\ntopic +/x\ntopic read $SYS/#", "f")
    assert not rules.allows(None, "c", "$tx/commit", WRITE)
    assert not rules.allows(None, "c", "$SYS/x", WRITE)
    assert rules.allows(None, "c", "$SYS/x", READ)
    assert not rules.allows_filter(None, "c", "$tx/check/g", SUBSCRIBE)


def test_subscribe_needs_a_rule_covering_the_whole_filter(rules: AclRules) -> None:
    assert rules.allows_filter(None, "c", "public/#", SUBSCRIBE)
    assert rules.allows_filter(None, "c", "public/+/x", SUBSCRIBE)
    assert not rules.allows_filter(None, "c", "#", SUBSCRIBE)
    assert not rules.allows_filter(None, "c", "+/news", SUBSCRIBE)
    # bob: "subscribe" lets him place sensors/#, "read" decides what he gets
    assert rules.allows_filter("bob", "c", "sensors/#", SUBSCRIBE)
    assert rules.allows("bob", "c", "sensors/k/temperature", READ)
    assert not rules.allows("bob", "c", "sensors/k/humidity", READ)
    assert not rules.allows_filter("bob", "c", "other/#", SUBSCRIBE)
    # write alone does not let a client subscribe
    assert not rules.allows_filter("alice", "c", "shared/inbox", SUBSCRIBE)


def test_a_deny_refuses_a_subscription_only_when_it_covers_the_filter(
    rules: AclRules,
) -> None:
    assert not rules.allows_filter("alice", "c", "alice/secret", SUBSCRIBE)
    assert rules.allows_filter("alice", "c", "alice/#", SUBSCRIBE)  # delivery filters it
    assert not rules.allows_filter("alice", "c", "alice/#", WRITE, strict=True)


def test_parse_errors_name_the_file_and_line() -> None:
    cases = {
        "topic read a\nfrobnicate x": (2, "unknown keyword"),
        "\n\nuser\n": (3, "'user' needs a name"),
        "topic read a/#/b": (1, "'#' must be a whole level"),
        "# comment\npattern write a+/b": (2, "'+' must be a whole level"),
        "topic": (1, "'topic' needs a topic"),
    }
    for text, (line, why) in cases.items():
        with pytest.raises(AclSyntaxError, match="^" + re.escape(f"acl.conf, line {line}: {why}")):
            parse_acl(text, "acl.conf")


def test_access_word_is_optional_and_topics_may_hold_spaces() -> None:
    rules = parse_acl("topic a b\ntopic write c d", "f")
    assert rules.allows(None, "c", "a b", READ)
    assert rules.allows(None, "c", "a b", WRITE)
    assert rules.allows(None, "c", "c d", WRITE)
    assert not rules.allows(None, "c", "c d", READ)


def test_checks_hold_no_memory_per_topic_or_client() -> None:
    """Nothing is remembered per (client, topic): publishing to many long topics, refused
    or not, cannot grow the ACL's memory."""
    rules = parse_acl("topic read a/#\npattern readwrite users/%u/#", "f")
    client = rules.for_client(None, "c" * 65_535)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            long_topic = f"b/{n}/" + "x" * 60_000
            assert not client.allows(long_topic, READ)
            assert client.allows(f"a/{n}", READ)
            assert not rules.allows("mallory", "c" * 1000, long_topic, WRITE)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000


def test_rules_are_indexed_by_first_level() -> None:
    rules = parse_acl("topic read a/#\ntopic read +/x\ntopic deny a/secret\ntopic write #", "f")
    client = rules.for_client(None, "c")
    assert client.allows("a/b", READ) and client.allows("z/x", READ)
    assert not client.allows("a/secret", READ) and not client.allows("z/y", READ)
    assert client.allows("z/y", WRITE) and not client.allows("$SYS/x", WRITE)
    assert not client.allows("a/secret", WRITE)


def test_acl_reload_keeps_the_rules_when_the_file_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "acl.conf"
    path.write_text("topic read a/#\n")
    acl = Acl(str(path))
    assert acl.rules_for(None, "c").may_read("a/x") and not acl.rules_for(None, "c").may_read("b/x")
    path.write_text("topic read b/#\n")
    compiled = acl.rules_for(None, "c")
    assert acl.reload()
    assert acl.rules_for(None, "c").generation == compiled.generation + 1  # others are stale
    assert acl.rules_for(None, "c").may_read("b/x") and not acl.rules_for(None, "c").may_read("a/x")
    path.write_text("topic read c/#\ntopic red c/x\nbogus line\n")
    with caplog.at_level(logging.ERROR, "roost.acl"):
        assert not acl.reload()
    assert acl.rules_for(None, "c").may_read("b/x") and not acl.rules_for(None, "c").may_read("c/x")
    assert f"{path}, line 3: unknown keyword 'bogus'" in caplog.text
    path.unlink()
    assert not acl.reload()
    assert acl.rules_for(None, "c").may_read("b/x")


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read acl_file .*missing\.conf"):
        Acl(str(tmp_path / "missing.conf"))


# -- the filter relations, against the reference matcher --------------------------------

level = st.sampled_from(["a", "b", "$s"])
topics = st.lists(st.sampled_from(["a", "b", "$s", ""]), min_size=1, max_size=4).map("/".join)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=3))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@given(filters(), topics)
def test_matching_agrees_with_the_router(rule: str, topic: str) -> None:
    assert _matches(tuple(rule.split("/")), topic.split("/")) == topic_matches(rule, topic)


@given(filters(), filters(), st.lists(topics, min_size=1, max_size=30))
def test_covers_and_overlaps_agree_with_matching(
    outer: str, inner: str, samples: list[str]
) -> None:
    covers = _covers(tuple(outer.split("/")), tuple(inner.split("/")))
    overlaps = _overlaps(tuple(outer.split("/")), tuple(inner.split("/")))
    for topic in samples:
        if topic_matches(inner, topic):
            assert not covers or topic_matches(outer, topic)
            assert overlaps or not topic_matches(outer, topic)
