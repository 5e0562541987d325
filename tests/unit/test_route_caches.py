"""The route caches keep a hot topic cached while a stream of one-off topics (a presence
event per client connection) passes through, and stay bounded."""

from __future__ import annotations

from roost.cache import GenerationalCache
from roost.cluster.routes import MATCH_CACHE_SIZE, ClusterRoutes
from roost.message import Message
from roost.presence import CONNECTED, presence_event
from roost.router import ROUTE_CACHE_SIZE, Router
from roost.session import SubscriptionOptions
from roost.topics import TopicTrie

ONE_OFF = 100_000
HOT_EVERY = 100  # one-off topics between two publishes on the hot topic


def one_off_topics() -> list[str]:
    return [presence_event(f"c{n}", "n0", CONNECTED, 0.0).topic for n in range(ONE_OFF)]


def test_a_hot_route_stays_cached_among_one_off_topics() -> None:
    router = Router()
    router.subscribe("dashboard", "$SYS/roost/clients/+/connected", SubscriptionOptions())
    router.subscribe("reader", "sensors/#", SubscriptionOptions(qos=1))
    hot = Message("sensors/a", b"x", 1, False)
    cached = router.route(hot, bool)
    for number, topic in enumerate(one_off_topics()):
        assert [client for client, _ in router.route(Message(topic, b"", 0, False), bool)] == [
            "dashboard"
        ]
        if number % HOT_EVERY == 0:
            assert router.route(hot, bool) is cached, number
    assert len(router._routes) <= ROUTE_CACHE_SIZE
    assert len(router._trie._cache) <= MATCH_CACHE_SIZE


def test_a_hot_match_stays_cached_in_the_cluster_route_table() -> None:
    routes = ClusterRoutes("n0")
    routes.add("n1", "sensors/#")
    trie = routes._trie
    cached = trie.match("sensors/a")
    for number, topic in enumerate(one_off_topics()):
        assert routes.destinations(topic) == ({}, set())
        if number % HOT_EVERY == 0:
            assert trie.match("sensors/a") is cached, number
    assert len(trie._cache) <= MATCH_CACHE_SIZE


def test_a_subscription_change_still_forgets_the_cached_matches() -> None:
    trie: TopicTrie[str, int] = TopicTrie(cache_size=4)
    trie.add("a/#", "c", 1)
    hot = trie.match("a/hot")
    for n in range(10):
        trie.match(f"a/{n}")
        assert trie.match("a/hot") is hot
    trie.add("a/hot", "d", 2)
    assert sorted(trie.match("a/hot")) == [("a/#", {"c": 1}), ("a/hot", {"d": 2})]


def test_an_entry_not_used_for_two_generations_goes() -> None:
    cache: GenerationalCache[int] = GenerationalCache(2)
    cache.put("cold", 0)
    for n in range(4):
        cache.put(f"k{n}", n)
    assert cache.get("cold") is None
    assert len(cache) <= 4
