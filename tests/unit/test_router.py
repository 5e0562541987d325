"""Router: merged targets, no-local, shared groups, pick_subscriber, retained messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from roost.codec import Properties
from roost.message import Message
from roost.router import Router, Target
from roost.session import SubscriptionOptions as Options


def everyone(client_id: str) -> bool:
    return True


def nobody(client_id: str) -> bool:
    return False


def only(*client_ids: str) -> Callable[[str], bool]:
    return lambda client_id: client_id in client_ids


def message(topic: str = "a/b", origin: str = "publisher", payload: bytes = b"x") -> Message:
    return Message(topic, payload, 2, False, origin=origin)


def routed(
    router: Router, msg: Message, online: Callable[[str], bool] = everyone
) -> dict[str, Target]:
    result = router.route(msg, online)
    as_dict = {client_id: target for client_id, target in result}
    assert len(as_dict) == len(result), "a client appears twice without a shared subscription"
    return as_dict


# -- ordinary subscriptions ---------------------------------------------------------------


def test_no_subscription_no_target() -> None:
    router = Router()
    router.subscribe("c", "x/y", Options(qos=1))
    assert router.route(message("a/b"), everyone) == []


def test_overlapping_subscriptions_merge_into_one_target() -> None:
    router = Router()
    router.subscribe("c", "a/+", Options(qos=0, identifier=1))
    router.subscribe("c", "a/#", Options(qos=2, identifier=2))
    router.subscribe("c", "a/b", Options(qos=1))
    targets = routed(router, message("a/b"))
    assert list(targets) == ["c"]
    target = targets["c"]
    assert target.qos == 2
    assert sorted(target.subscription_ids) == [1, 2]


def test_merge_keeps_retain_as_published_if_any_asks() -> None:
    router = Router()
    router.subscribe("c", "a/+", Options(retain_as_published=False))
    router.subscribe("c", "+/b", Options(retain_as_published=True))
    assert routed(router, message("a/b"))["c"].retain_as_published


def test_target_merge_unit() -> None:
    target = Target(Options(qos=1, identifier=5))
    target.merge(Options(qos=0, identifier=6))
    target.merge(Options(qos=0))
    assert target.qos == 1
    assert target.subscription_ids == (5, 6)
    assert not target.retain_as_published


def test_each_client_gets_its_own_target() -> None:
    router = Router()
    router.subscribe("c1", "a/b", Options(qos=1))
    router.subscribe("c2", "#", Options(qos=0, identifier=9))
    targets = routed(router, message("a/b"))
    assert {cid: (t.qos, t.subscription_ids) for cid, t in targets.items()} == {
        "c1": (1, ()),
        "c2": (0, (9,)),
    }


def test_offline_sessions_are_still_targets_of_ordinary_subscriptions() -> None:
    router = Router()
    router.subscribe("c", "a/b", Options(qos=1))
    assert list(routed(router, message("a/b"), nobody)) == ["c"]


def test_no_local_skips_only_the_publisher() -> None:
    router = Router()
    router.subscribe("me", "a/b", Options(no_local=True))
    router.subscribe("other", "a/b", Options(no_local=True))
    assert set(routed(router, message("a/b", origin="me"))) == {"other"}
    assert set(routed(router, message("a/b", origin="someone"))) == {"me", "other"}


def test_no_local_on_one_filter_does_not_hide_another() -> None:
    router = Router()
    router.subscribe("me", "a/b", Options(no_local=True, qos=2, identifier=1))
    router.subscribe("me", "a/#", Options(no_local=False, qos=1, identifier=2))
    targets = routed(router, message("a/b", origin="me"))
    assert targets["me"].qos == 1
    assert targets["me"].subscription_ids == (2,)


def test_unsubscribe_stops_routing_and_reports_existence() -> None:
    router = Router()
    assert router.subscribe("c", "a/b", Options())
    assert not router.subscribe("c", "a/b", Options(qos=1))  # replaced
    assert router.subscription_count() == 1
    assert router.unsubscribe("c", "a/b")
    assert not router.unsubscribe("c", "a/b")
    assert router.route(message("a/b"), everyone) == []
    assert router.subscription_count() == 0


def test_routes_follow_subscription_changes() -> None:
    router = Router()
    router.subscribe("c1", "a/+", Options(qos=0))
    assert list(routed(router, message("a/b"))) == ["c1"]
    router.subscribe("c2", "a/b", Options(qos=1))
    assert sorted(routed(router, message("a/b"))) == ["c1", "c2"]
    router.subscribe("c1", "a/+", Options(qos=2))
    assert routed(router, message("a/b"))["c1"].qos == 2
    router.unsubscribe("c1", "a/+")
    assert list(routed(router, message("a/b"))) == ["c2"]
    router.unsubscribe("c2", "a/b")
    assert router.route(message("a/b"), everyone) == []


def test_replaced_subscription_uses_new_options() -> None:
    router = Router()
    router.subscribe("c", "a/b", Options(qos=0))
    router.subscribe("c", "a/b", Options(qos=2, identifier=3))
    target = routed(router, message("a/b"))["c"]
    assert (target.qos, target.subscription_ids) == (2, (3,))


# -- shared subscriptions -----------------------------------------------------------------


def shared_router(members: list[str], topic_filter: str = "$share/g/a/+") -> Router:
    router = Router()
    for member in members:
        router.subscribe(member, topic_filter, Options(qos=1))
    return router


def test_shared_group_gives_each_message_to_one_member_alternating() -> None:
    router = shared_router(["m1", "m2"])
    receivers = []
    for _ in range(6):
        result = router.route(message("a/x"), everyone)
        assert len(result) == 1
        receivers.append(result[0][0])
    assert receivers == ["m1", "m2"] * 3


@given(members=st.integers(1, 6), messages=st.integers(0, 40))
def test_shared_group_round_robin_is_fair(members: int, messages: int) -> None:
    names = [f"m{i}" for i in range(members)]
    router = shared_router(names)
    counts: Counter[str] = Counter()
    for _ in range(messages):
        (result,) = router.route(message("a/x"), everyone)
        counts[result[0]] += 1
    assert sum(counts.values()) == messages
    assert max(counts.values(), default=0) - min(counts[name] for name in names) <= 1


def test_shared_group_prefers_online_members() -> None:
    router = shared_router(["m1", "m2", "m3"])
    online = only("m2")
    receivers = [router.route(message("a/x"), online)[0][0] for _ in range(4)]
    assert receivers == ["m2"] * 4


def test_shared_group_alternates_among_online_members_only() -> None:
    router = shared_router(["m1", "m2", "m3", "m4"])
    online = only("m1", "m3")
    receivers = [router.route(message("a/x"), online)[0][0] for _ in range(4)]
    assert sorted(receivers) == ["m1", "m1", "m3", "m3"]
    assert receivers[0] != receivers[1]


def test_shared_group_with_nobody_online_still_picks_one_member() -> None:
    router = shared_router(["m1", "m2"])
    receivers = [router.route(message("a/x"), nobody)[0][0] for _ in range(4)]
    assert sorted(receivers) == ["m1", "m1", "m2", "m2"]


def test_two_groups_each_get_a_copy() -> None:
    router = Router()
    router.subscribe("a1", "$share/ga/t", Options(qos=1))
    router.subscribe("a2", "$share/ga/t", Options(qos=1))
    router.subscribe("b1", "$share/gb/t", Options(qos=0))
    for expected_a in ["a1", "a2", "a1"]:
        result = router.route(message("t"), everyone)
        assert sorted(client_id for client_id, _ in result) == [expected_a, "b1"]


def test_shared_and_ordinary_subscription_of_one_client_give_two_entries() -> None:
    router = Router()
    router.subscribe("c", "a/b", Options(qos=0, identifier=1))
    router.subscribe("c", "$share/g/a/b", Options(qos=2, identifier=2))
    result = router.route(message("a/b"), everyone)
    assert [client_id for client_id, _ in result] == ["c", "c"]
    assert sorted((t.qos, t.subscription_ids) for _, t in result) == [(0, (1,)), (2, (2,))]


# -- pick_subscriber ----------------------------------------------------------------------


def test_pick_subscriber_alternates_among_online_subscribers() -> None:
    router = Router()
    for client_id in ["c", "a", "b"]:
        router.subscribe(client_id, "$tx/check/g", Options(qos=1, identifier=4))
    router.subscribe("z", "$share/x/$tx/check/g", Options(qos=1))
    online = only("a", "b", "z")
    picks = [router.pick_subscriber("$tx/check/g", online) for _ in range(4)]
    assert [pick[0] for pick in picks if pick] == ["a", "b", "a", "b"]
    assert picks[0] is not None
    assert picks[0][1] == Options(qos=1, identifier=4)


def test_pick_subscriber_takes_turns_as_members_come_and_go() -> None:
    router = Router()
    for client_id in ["a", "b", "c"]:
        router.subscribe(client_id, "t", Options(qos=1))
    picks = [router.pick_subscriber("t", only("a", "c")) for _ in range(4)]
    assert [pick[0] for pick in picks if pick] == ["a", "c", "a", "c"]
    router.unsubscribe("c", "t")
    picks = [router.pick_subscriber("t", only("a", "c")) for _ in range(2)]
    assert [pick[0] for pick in picks if pick] == ["a", "a"]


def test_pick_subscriber_counts_only_the_exact_filter() -> None:
    """A wildcard subscriber (a monitor on $tx/#) is not a member of every group."""
    router = Router()
    router.subscribe("monitor", "$tx/#", Options(qos=1))
    router.subscribe("other-groups", "$tx/check/+", Options(qos=1))
    assert router.pick_subscriber("$tx/check/g", everyone) is None
    router.subscribe("member", "$tx/check/g", Options(qos=1))
    picks = {router.pick_subscriber("$tx/check/g", everyone) for _ in range(3)}
    assert picks == {("member", Options(qos=1))}


def test_pick_subscriber_none_when_nobody_online() -> None:
    router = Router()
    router.subscribe("a", "t", Options(qos=1))
    assert router.pick_subscriber("t", nobody) is None
    assert router.pick_subscriber("other", everyone) is None


def test_pick_subscriber_ignores_shared_subscriptions() -> None:
    router = Router()
    router.subscribe("a", "$share/g/t", Options(qos=1))
    assert router.pick_subscriber("t", everyone) is None


# -- retained messages --------------------------------------------------------------------


def retained(
    topic: str, payload: bytes = b"v", expiry: int | None = None, now: float = 0.0
) -> Message:
    return Message(topic, payload, 1, True, Properties(message_expiry_interval=expiry), "p", now)


def test_retain_replace_and_clear() -> None:
    router = Router()
    first = retained("a/b", b"1")
    router.retain(first)
    assert router.retained_for("a/b", 0) == [first]
    second = retained("a/b", b"2")
    router.retain(second)
    assert router.retained_for("a/b", 0) == [second]
    router.retain(retained("a/b", b""))
    assert router.retained_for("a/b", 0) == []
    assert router.retained == {}
    router.retain(retained("never/set", b""))  # clearing nothing is fine
    assert router.retained == {}


def test_retained_for_wildcards() -> None:
    router = Router()
    for topic in ["a", "a/b", "a/c", "a/b/c", "b/b"]:
        router.retain(retained(topic))

    def found(topic_filter: str) -> set[str]:
        return {m.topic for m in router.retained_for(topic_filter, 0)}

    assert found("a/+") == {"a/b", "a/c"}
    assert found("a/#") == {"a", "a/b", "a/c", "a/b/c"}
    assert found("+/b") == {"a/b", "b/b"}
    assert found("#") == {"a", "a/b", "a/c", "a/b/c", "b/b"}
    assert found("a/b/c") == {"a/b/c"}
    assert found("x/#") == set()
    assert found("$share/g/a/+") == {"a/b", "a/c"}


def test_dollar_topics_not_matched_by_leading_wildcards() -> None:
    router = Router()
    router.retain(retained("$SYS/uptime"))
    router.retain(retained("plain"))
    assert [m.topic for m in router.retained_for("#", 0)] == ["plain"]
    assert [m.topic for m in router.retained_for("+/uptime", 0)] == []
    assert [m.topic for m in router.retained_for("$SYS/#", 0)] == ["$SYS/uptime"]
    assert [m.topic for m in router.retained_for("$SYS/+", 0)] == ["$SYS/uptime"]


def test_expired_retained_messages_are_not_given_and_then_dropped() -> None:
    router = Router()
    short = retained("a/short", expiry=10, now=100.0)
    long = retained("a/long", expiry=100, now=100.0)
    forever = retained("a/forever")
    for item in (short, long, forever):
        router.retain(item)
    assert len(router.retained_for("a/+", 109.9)) == 3
    assert {m.topic for m in router.retained_for("a/+", 110.0)} == {"a/long", "a/forever"}
    assert {m.topic for m in router.retained_for("a/+", 1e9)} == {"a/forever"}
    assert router.drop_expired_retained(109.9) == []
    assert router.drop_expired_retained(110.0) == ["a/short"]
    assert set(router.retained) == {"a/long", "a/forever"}
    assert router.drop_expired_retained(1e9) == ["a/long"]
    assert set(router.retained) == {"a/forever"}


def test_expired_retained_message_outside_the_filter_is_kept_until_asked() -> None:
    router = Router()
    router.retain(retained("x", expiry=1, now=0.0))
    assert router.retained_for("y", 50.0) == []
    assert "x" in router.retained


def test_retained_message_is_not_routed_by_itself() -> None:
    router = Router()
    router.retain(retained("a/b"))
    assert router.route(message("a/b"), everyone) == []
