"""No per-packet work proportional to the whole broker: retained messages are found by
filter through a trie (not a scan), expired ones through a heap, and a subscription
change forgets only the cached routes it affects.

Work is measured as lines of Roost code executed, compared at two sizes: a count that
does not depend on the machine's speed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import roost
from roost.codec import Properties
from roost.message import Message
from roost.router import Router, Target
from roost.session import SubscriptionOptions as Options
from roost.topics import TopicMap, topic_matches

ROOST_DIR = str(Path(roost.__file__).parent)


def lines_run(action: Callable[[], object]) -> int:
    """How many lines of Roost code ``action`` executes."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(ROOST_DIR):
            return None
        if event == "line":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(previous)
    return count


def everyone(client_id: str) -> bool:
    return True


def retained(topic: str, expiry: int | None = None, now: float = 0.0) -> Message:
    return Message(topic, b"v", 1, True, Properties(message_expiry_interval=expiry), "p", now)


def publish(topic: str, origin: str = "publisher") -> Message:
    return Message(topic, b"x", 1, False, origin=origin)


# -- TopicMap -------------------------------------------------------------------------------

level = st.sampled_from(["a", "b", "", "$s"])
topic_names = st.lists(level, min_size=1, max_size=4).map("/".join)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(["a", "b", "", "$s", "+"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@given(
    operations=st.lists(st.tuples(st.booleans(), topic_names), max_size=30),
    topic_filter=topic_filters(),
)
def test_topic_map_matches_like_a_scan_in_dict_order(
    operations: list[tuple[bool, str]], topic_filter: str
) -> None:
    """Set and delete topics in a TopicMap and a dict alike: the map's filter lookup
    gives what scanning the dict with topic_matches gives, in the same order, whether
    the topics were indexed one by one or many at once."""
    topics = TopicMap[int]()
    reference: dict[str, int] = {}
    for index, (add, topic) in enumerate(operations):
        if add:
            topics[topic] = reference[topic] = index
        elif topic in reference:
            del topics[topic], reference[topic]
        if index % 3 == 0:
            expected = [topic for topic in reference if topic_matches(topic_filter, topic)]
            assert topics.matching(topic_filter) == expected
    assert topics == reference
    assert list(topics) == list(reference)
    expected = [topic for topic in reference if topic_matches(topic_filter, topic)]
    assert topics.matching(topic_filter) == expected


def test_topic_map_special_cases() -> None:
    topics = TopicMap[int]()
    for index, topic in enumerate(["a", "a/b", "$SYS/x", "/", "a/b/c"]):
        topics[topic] = index
    assert topics.matching("a/#") == ["a", "a/b", "a/b/c"]  # 'a/#' matches 'a'
    assert topics.matching("#") == ["a", "a/b", "/", "a/b/c"]  # not '$' topics
    assert topics.matching("+/x") == []
    assert topics.matching("$SYS/+") == ["$SYS/x"]
    assert topics.matching("+/+") == ["a/b", "/"]
    assert topics.matching("a/b") == ["a/b"]
    assert topics.matching("nothing") == []


def test_topic_map_prunes_deleted_topics() -> None:
    """After 10,000 topics come and go, a filter walk does what it does on a new map."""
    used = TopicMap[int]()
    for index in range(10_000):
        used[f"t/{index}/x"] = index
    for index in range(10_000):
        del used[f"t/{index}/x"]
    used["t/keep/x"] = 0
    fresh = TopicMap[int]()
    fresh["t/keep/x"] = 0
    assert lines_run(lambda: used.matching("t/+/x")) == lines_run(lambda: fresh.matching("t/+/x"))


def test_topic_map_clear() -> None:
    topics = TopicMap[int]()
    topics["a/b"] = 1
    topics.clear()
    assert len(topics) == 0
    assert topics.matching("#") == []
    topics["a/b"] = 2
    assert topics.matching("a/+") == ["a/b"]


# -- retained messages ----------------------------------------------------------------------


def router_with_retained(unrelated: int, expiring: bool = False) -> Router:
    """A router holding ``unrelated`` retained messages outside 'a/...' plus three in it."""
    router = Router()
    for index in range(unrelated):
        router.retain(retained(f"other/{index}/x", expiry=10_000 if expiring else None))
    for topic in ("a/1", "a/2", "a/3/deep"):
        router.retain(retained(topic, expiry=5))
    return router


def test_subscribe_lookup_does_not_grow_with_unrelated_retained_messages() -> None:
    small, large = router_with_retained(100), router_with_retained(20_000)
    for topic_filter in ("a/+", "a/#", "a/1", "$share/g/a/#", "x/#"):
        found = [m.topic for m in large.retained_for(topic_filter, 0.0)]
        assert found == [m.topic for m in small.retained_for(topic_filter, 0.0)]
        work_small = lines_run(partial(small.retained_for, topic_filter, 0.0))
        work_large = lines_run(partial(large.retained_for, topic_filter, 0.0))
        assert work_large == work_small, topic_filter


def test_dropping_expired_retained_messages_does_not_scan_the_others() -> None:
    small = router_with_retained(100, expiring=True)
    large = router_with_retained(20_000, expiring=True)
    assert lines_run(lambda: small.drop_expired_retained(1.0)) == lines_run(
        lambda: large.drop_expired_retained(1.0)
    )
    work_small = lines_run(lambda: small.drop_expired_retained(5.0))
    work_large = lines_run(lambda: large.drop_expired_retained(5.0))
    assert work_large == work_small
    assert large.retained_for("a/#", 0.0) == []
    assert len(large.retained) == 20_000


def test_retained_messages_come_oldest_topic_first() -> None:
    router = Router()
    for topic in ("s/c", "s/a", "s/b"):
        router.retain(retained(topic))
    router.retain(retained("s/a"))  # replaced: keeps its place
    assert [m.topic for m in router.retained_for("s/+", 0.0)] == ["s/c", "s/a", "s/b"]
    router.retain(Message("s/c", b"", 1, True))  # cleared, then set again: now the newest
    router.retain(retained("s/c"))
    assert [m.topic for m in router.retained_for("s/#", 0.0)] == ["s/a", "s/b", "s/c"]


def test_retained_message_loaded_by_assignment_is_indexed_and_expires() -> None:
    """Loading restores retained messages with ``router.retained[topic] = message``."""
    router = Router()
    loaded = retained("a/b", expiry=10, now=0.0)
    router.retained[loaded.topic] = loaded
    assert router.retained_for("a/+", 5.0) == [loaded]
    assert router.drop_expired_retained(10.0) == ["a/b"]
    assert router.retained == {}


def test_replacing_an_expiring_retained_message_resets_its_expiry() -> None:
    router = Router()
    router.retain(retained("t", expiry=10, now=0.0))
    router.retain(retained("t"))  # no expiry now
    assert router.drop_expired_retained(1e9) == []
    router.retain(retained("t", expiry=100, now=0.0))
    assert router.drop_expired_retained(50.0) == []
    assert router.drop_expired_retained(100.0) == ["t"]


def test_cleared_retained_message_leaves_no_deadline() -> None:
    router = Router()
    router.retain(retained("t", expiry=10, now=0.0))
    router.retain(Message("t", b"", 1, True))
    router.retain(retained("t"))
    assert router.drop_expired_retained(1e9) == []
    assert [m.topic for m in router.retained_for("t", 1e9)] == ["t"]


# -- the route cache ------------------------------------------------------------------------


def cached_router(topics: list[str]) -> Router:
    router = Router()
    router.subscribe("c", "#", Options(qos=1))
    for topic in topics:
        router.route(publish(topic), everyone)
    return router


def test_unrelated_subscription_changes_keep_cached_routes() -> None:
    router = cached_router(["a/b", "x/y"])
    route = router.route(publish("a/b"), everyone)
    router.subscribe("d", "x/y", Options())
    router.subscribe("d", "x/+", Options())
    router.subscribe("d", "$share/g/x/#", Options())
    router.unsubscribe("d", "x/+")
    router.unsubscribe("nobody", "a/b")  # removes nothing
    assert router.route(publish("a/b"), everyone) is route


def test_exact_filter_forgets_only_its_topic() -> None:
    router = cached_router(["a/b", "a/c"])
    other = router.route(publish("a/c"), everyone)
    router.subscribe("d", "a/b", Options(qos=2))
    assert {cid: t.qos for cid, t in router.route(publish("a/b"), everyone)} == {"c": 1, "d": 2}
    assert router.route(publish("a/c"), everyone) is other


def test_wildcard_filter_forgets_the_topics_it_matches() -> None:
    router = cached_router(["a/b", "a/c", "b/b", "$SYS/b"])
    kept = {topic: router.route(publish(topic), everyone) for topic in ("b/b", "$SYS/b")}
    router.subscribe("d", "a/+", Options())
    router.subscribe("e", "+/c", Options())
    assert [cid for cid, _ in router.route(publish("a/b"), everyone)] == ["c", "d"]
    assert sorted(cid for cid, _ in router.route(publish("a/c"), everyone)) == ["c", "d", "e"]
    for topic, route in kept.items():
        assert router.route(publish(topic), everyone) is route
    router.unsubscribe("d", "a/+")
    assert [cid for cid, _ in router.route(publish("a/b"), everyone)] == ["c"]


def test_shared_and_no_local_subscriptions_reach_cached_topics() -> None:
    router = cached_router(["a/b"])
    router.subscribe("m", "$share/g/a/#", Options())
    assert sorted(cid for cid, _ in router.route(publish("a/b"), everyone)) == ["c", "m"]
    router.unsubscribe("m", "$share/g/a/#")
    router.route(publish("a/b"), everyone)
    router.subscribe("me", "a/b", Options(no_local=True))
    assert [cid for cid, _ in router.route(publish("a/b", origin="me"), everyone)] == ["c"]
    assert sorted(cid for cid, _ in router.route(publish("a/b", "o"), everyone)) == ["c", "me"]


def test_subscription_change_work_does_not_grow_with_cached_routes() -> None:
    """A cached topic is indexed once, at the first change to a wildcard filter after it
    was cached; from then on a change visits only the cached topics its filter matches."""
    small = cached_router([f"t/{index}" for index in range(100)] + ["a/b"])
    large = cached_router([f"t/{index}" for index in range(4000)] + ["a/b"])
    for router in (small, large):
        router.subscribe("w", "warm/+", Options())
    for change in (
        lambda router: router.subscribe("d", "a/+", Options()),
        lambda router: router.subscribe("d", "a/b", Options()),
        lambda router: router.unsubscribe("d", "a/+"),
        lambda router: router.subscribe("d", "$share/g/a/#", Options()),
    ):
        assert lines_run(partial(change, small)) == lines_run(partial(change, large))


route_operation = st.one_of(
    st.tuples(
        st.just("subscribe"),
        st.sampled_from(["c1", "c2", "c3"]),
        st.sampled_from(["a/b", "a/+", "+/b", "#", "a/#", "b", "+", "$s/#", "$s/b"]),
        st.integers(0, 2),
        st.booleans(),
    ),
    st.tuples(
        st.just("unsubscribe"),
        st.sampled_from(["c1", "c2", "c3"]),
        st.sampled_from(["a/b", "a/+", "+/b", "#", "a/#", "b", "+", "$s/#", "$s/b"]),
        st.just(0),
        st.just(False),
    ),
    st.tuples(
        st.just("route"),
        st.sampled_from(["c1", "c2", "other"]),
        st.sampled_from(["a/b", "a", "b", "a/c", "$s/b", "b/b"]),
        st.just(0),
        st.just(False),
    ),
)


def summary(route: list[tuple[str, Target]]) -> list[tuple[str, int, bool, list[int]]]:
    return sorted(
        (cid, t.qos, t.retain_as_published, sorted(t.subscription_ids)) for cid, t in route
    )


@given(operations=st.lists(route_operation, max_size=40))
def test_cached_routes_equal_routes_computed_afresh(
    operations: list[tuple[str, str, str, int, bool]],
) -> None:
    router = Router()
    subscriptions: dict[tuple[str, str], Options] = {}
    for index, (kind, client_id, text, qos, no_local) in enumerate(operations):
        if kind == "subscribe":
            options = Options(qos=qos, no_local=no_local, identifier=index + 1)
            subscriptions[client_id, text] = options
            router.subscribe(client_id, text, options)
        elif kind == "unsubscribe":
            subscriptions.pop((client_id, text), None)
            router.unsubscribe(client_id, text)
        else:
            fresh = Router()
            for (subscriber, topic_filter), options in subscriptions.items():
                fresh.subscribe(subscriber, topic_filter, options)
            message = publish(text, origin=client_id)
            assert summary(router.route(message, everyone)) == summary(
                fresh.route(message, everyone)
            )
