"""Server-side topic aliases: LRU reuse, short topics left alone, an alias never learnt by
the client (its PUBLISH was too big to send) is not used."""

from __future__ import annotations

from roost.outbox import TopicAliases


def test_aliases_are_handed_out_then_reused_least_recently_sent_first() -> None:
    aliases = TopicAliases(2)
    assert aliases.lookup(b"a/one") == (b"a/one", 1)
    assert aliases.lookup(b"a/two") == (b"a/two", 2)
    assert aliases.lookup(b"a/one") == (b"", 1)  # known: the alias alone
    assert aliases.lookup(b"a/three") == (b"a/three", 2)  # a/two was least recently sent
    assert aliases.lookup(b"a/two") == (b"a/two", 1)


def test_short_topics_are_sent_whole() -> None:
    aliases = TopicAliases(5)
    assert aliases.lookup(b"ab") == (b"ab", 0)
    assert aliases.lookup(b"ab") == (b"ab", 0)


def test_a_forgotten_alias_is_given_again_with_its_topic() -> None:
    aliases = TopicAliases(1)
    assert aliases.lookup(b"big/topic") == (b"big/topic", 1)
    aliases.forget(b"big/topic")  # that PUBLISH was not sent
    assert aliases.lookup(b"big/topic") == (b"big/topic", 1)  # set again, not assumed known
