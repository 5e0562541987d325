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


def test_the_cluster_route_table_forgets_cached_destinations_when_a_route_changes() -> None:
    routes = ClusterRoutes("n0")
    routes.add("n1", "sensors/#")
    remote, _ = routes.destinations("sensors/a")
    assert remote == {"n1": ()}
    remote["n9"] = ()  # the caller's to change: the cached answer stays as it was
    assert routes.destinations("sensors/a")[0] == {"n1": ()}
    routes.add("n2", "sensors/+")
    assert routes.destinations("sensors/a")[0] == {"n1": (), "n2": ()}
    routes.remove("n1", "sensors/#")
    assert routes.destinations("sensors/a")[0] == {"n2": ()}
    routes.drop_node("n2")
    assert routes.destinations("sensors/a") == ({}, set())


def test_a_shared_group_takes_turns_however_often_its_topic_is_published() -> None:
    routes = ClusterRoutes("n0")
    routes.add("n1", "sensors/#")
    for node in ("n0", "n1", "n2"):
        routes.add(node, "$share/g/sensors/#")
    turns = [routes.destinations("sensors/a") for _ in range(6)]
    assert [(sorted(remote.items()), set(own)) for remote, own in turns[:3]] == [
        ([("n1", ())], {"$share/g/sensors/#"}),
        ([("n1", ["$share/g/sensors/#"])], set()),
        ([("n1", ()), ("n2", ["$share/g/sensors/#"])], set()),
    ]
    assert turns[3:] == turns[:3]
