"""RedisStore on a real Valkey server: a session written by one node and fetched by another
(on another clock), all of a session's keys gone with it, retained messages and transactions
read at open, acknowledgements that wait for Redis, a failed pipeline that stops the store,
and the bounded backlog."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from redis_store_helpers import close, fetch, open_store, start_store, stopped, turn
from roost.cluster import keys
from roost.cluster.localserver import LocalServer
from roost.codec import Properties
from roost.errors import StoreError
from roost.message import Message
from roost.session import Delivery, OutboundState, SubscriptionOptions
from roost.store import redis as redis_store
from roost.transactions import HalfMessage, Settled
from store_helpers import commit, run_until, subscribe_many
from store_scenarios import described, persistent, save_rich_session

BOUND = 10


@pytest.fixture
def peek(redis_server: LocalServer) -> Iterator[redis.Redis]:
    """A client of the test's own, to see what the server holds."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def session_keys(peek: redis.Redis, client_id: str) -> list[bytes]:
    return sorted(peek.keys(keys.client(client_id, "*")))


def calls(peek: redis.Redis, command: str) -> int:
    """How often the server ran ``command`` since its statistics were reset."""
    stats = peek.info("commandstats").get(f"cmdstat_{command}", {"calls": 0})
    return int(stats["calls"])


# -- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["plain", "a}b{c", "sensor/7:x"])
def test_a_stored_session_lives_under_the_client_keys_the_cluster_names(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis, client_id: str
) -> None:
    """One scheme names a client's keys: the session the store writes and the owner record
    the cluster claims are in one hash slot (a Lua script may touch both)."""
    store = open_store(redis_server, loop)
    session = persistent(client_id, store)
    session.subscribe("x", SubscriptionOptions(1))
    session.enqueue(Delivery(Message("x", b"m", 1, False), 1, False), 10, now=0.0)
    session.receive_qos2(3)
    commit(store, loop)
    close(store, loop)
    parts = ["out", "qos2", "session", "subs"]
    assert session_keys(peek, client_id) == [keys.client(client_id, p).encode() for p in parts]
    slots = {key_slot(key.encode()) for key in [*map(keys.client, [client_id] * 4, parts)]}
    assert slots == {key_slot(keys.owner(client_id).encode())}


def test_a_session_saved_by_one_node_is_fetched_by_another(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop
) -> None:
    writer = open_store(redis_server, loop)  # broker clock at 0
    saved = described(save_rich_session(writer))
    other = persistent("other", writer)
    other.subscribe("x", SubscriptionOptions(1))
    other.enqueue(Delivery(Message("x", b"not mine", 1, False), 1, False), 10, now=0.0)
    other.receive_qos2(3)
    close(writer, loop)

    # Another node, whose clock reads 1000 when it fetches (the wall clock barely moved).
    reader = open_store(redis_server, loop, now=400.0)
    assert reader.load_session("rich") is None  # fetch_session is the way
    loaded = fetch(reader, loop, "rich", now=1000.0)
    assert loaded is not None
    assert described(loaded, since=1000.0) == saved
    assert loaded.expires_at == pytest.approx(4600.0, abs=1)
    assert loaded.will_due == pytest.approx(1030.0, abs=1)
    assert fetch(reader, loop, "unknown") is None

    # Fetched ready to be attached: what happens to it next is recorded.
    assert loaded.store is reader
    loaded.released(3)  # PUBREC came: a stored delivery moves on
    assert loaded.complete(2, OutboundState.AWAITING_PUBACK)
    loaded.enqueue(Delivery(Message("b", b"later", 1, False), 1, False), 10, now=1000.0)
    loaded.unsubscribe("b")
    assert loaded.release_qos2(9)
    again = fetch(reader, loop, "rich", now=1000.0)
    assert again is not None
    assert described(again) == described(loaded)
    assert [delivery.seq for delivery in again.queue] == [4, 5, 6]
    close(reader, loop)


def test_queued_qos0_deliveries_are_not_stored(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop)
    session = persistent("c", store)
    session.enqueue(Delivery(Message("t", b"at most once", 0, False), 0, False), 10, now=0.0)
    session.enqueue(Delivery(Message("t", b"at least once", 1, False), 1, False), 10, now=0.0)
    commit(store, loop)
    assert peek.hkeys("roost:{c:c}:out") == [b"1"]
    loaded = fetch(store, loop, "c")
    assert loaded is not None
    assert [delivery.message.payload for delivery in loaded.queue] == [b"at least once"]
    close(store, loop)


def test_fetch_reads_what_the_store_has_not_yet_written(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(redis_server, loop)
    session = persistent("c", store)
    session.subscribe("t", SubscriptionOptions(2))
    loaded = fetch(store, loop, "c")  # without a turn of the loop in between
    assert loaded is not None
    assert loaded.subscriptions == {"t": SubscriptionOptions(2)}
    close(store, loop)


def test_deleting_a_session_removes_all_its_keys_and_no_others(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop)
    rich = save_rich_session(store)
    other = persistent("other", store)
    other.subscribe("x", SubscriptionOptions(1))
    other.receive_qos2(1)
    store.save_retained(Message("r", b"kept", 1, True))
    commit(store, loop)
    assert len(session_keys(peek, "rich")) == 4

    rich.forget()
    commit(store, loop)
    assert sorted(peek.keys("*")) == [
        b"roost:{c:other}:qos2",
        b"roost:{c:other}:session",
        b"roost:{c:other}:subs",
        b"roost:{retained}",
    ]
    assert fetch(store, loop, "rich") is None
    close(store, loop)


def test_a_delivery_done_within_one_batch_is_never_sent(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop)
    peek.config_resetstat()
    session = persistent("c", store)
    session.send(Delivery(Message("t", b"acknowledged", 1, False), 1, False), 1)
    session.enqueue(Delivery(Message("t", b"pending", 1, False), 1, False), 10, now=0.0)
    assert session.complete(1, OutboundState.AWAITING_PUBACK)
    leaving = persistent("leaving", store)
    leaving.enqueue(Delivery(Message("t", b"gone", 1, False), 1, False), 10, now=0.0)
    leaving.set_expiry_interval(0, store)  # no longer persistent: leaves the store
    commit(store, loop)
    assert peek.hkeys("roost:{c:c}:out") == [b"2"]
    assert session_keys(peek, "leaving") == []
    # Two session records and the pending delivery; no delivery was written to be deleted.
    assert (calls(peek, "hset"), calls(peek, "hdel")) == (3, 0)
    close(store, loop)


def test_keys_are_under_the_prefix(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    mine = open_store(redis_server, loop, prefix="a")
    theirs = open_store(redis_server, loop, prefix="b")
    persistent("c", mine).subscribe("t", SubscriptionOptions(1))
    commit(mine, loop)
    assert sorted(peek.keys("*")) == [b"a:{c:c}:session", b"a:{c:c}:subs"]
    assert fetch(theirs, loop, "c") is None
    close(mine, loop)
    close(theirs, loop)


# -- retained messages and transactions -----------------------------------------------------


def test_retained_messages_and_transactions_are_read_at_open(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "SETTLED_MEMORY", 3)
    store = open_store(redis_server, loop)
    properties = Properties(message_expiry_interval=600, user_properties=(("k", "v"),))
    store.save_retained(Message("r/kept", b"kept", 1, True, properties, origin="publisher"))
    expired = Message("r/expired", b"old", 0, True, Properties(message_expiry_interval=10), "", -11)
    store.save_retained(expired)
    store.save_retained(Message("r/deleted", b"x", 0, True))
    store.delete_retained("r/deleted")
    checked = HalfMessage("tx-1", "group", Message("t", b"half", 1, False, origin="p"), 60.0)
    checked.checks = 2
    store.save_transaction(checked)
    store.save_transaction(HalfMessage("tx-2", "group", Message("t", b"kept", 2, False), None))
    outcomes = [Settled.COMMITTED, Settled.ROLLED_BACK] * 3
    for index, outcome in enumerate(outcomes[:5]):
        store.save_transaction(HalfMessage(f"s{index}", "g", Message("t", b"", 1, False), 9.0))
        store.settle_transaction(f"s{index}", outcome)
    close(store, loop)

    reader, state = start_store(redis_server, loop, now=100.0)
    assert state.sessions == []  # attached on demand
    [retained] = state.retained
    assert (retained.topic, retained.payload, retained.qos, retained.retain) == (
        "r/kept",
        b"kept",
        1,
        True,
    )
    assert (retained.properties, retained.origin) == (properties, "publisher")
    assert retained.expires_at == pytest.approx(700.0, abs=1)
    halves = {half.transaction_id: half for half in state.transactions}
    assert sorted(halves) == ["tx-1", "tx-2"]
    first = halves["tx-1"]
    assert (first.group, first.checks, first.message.payload, first.message.origin) == (
        "group",
        2,
        b"half",
        "p",
    )
    assert first.next_check == pytest.approx(160.0, abs=1)
    assert halves["tx-2"].next_check is None
    assert halves["tx-2"].message.qos == 2
    assert state.settled == [(f"s{index}", outcomes[index]) for index in (2, 3, 4)]
    close(reader, loop)


# -- acknowledgements -------------------------------------------------------------------------


def test_acknowledgements_wait_for_redis_and_run_in_order(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop)
    acknowledged: list[tuple[str, list[bytes]]] = []

    def acknowledge(what: str) -> None:
        acknowledged.append((what, sorted(peek.hkeys("roost:{c:c}:subs"))))

    store.after_commit(lambda: acknowledge("idle"))  # nothing pending: at once
    assert acknowledged == [("idle", [])]
    with stopped(redis_server):
        store.save_subscription("c", "first", SubscriptionOptions(1))
        store.after_commit(lambda: acknowledge("first"))
        turn(loop)  # the pipeline is sent; Redis does not answer
        store.save_subscription("c", "second", SubscriptionOptions(1))
        store.after_commit(lambda: acknowledge("second"))
        turn(loop)
        assert len(acknowledged) == 1
    run_until(loop, lambda: len(acknowledged) == 3, what="the acknowledgements")
    # One pipeline at a time: the second was sent once the first was acknowledged.
    assert acknowledged[1:] == [("first", [b"first"]), ("second", [b"first", b"second"])]
    close(store, loop)


def test_aclose_writes_what_is_pending(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop)
    persistent("c", store)
    close(store, loop)  # the loop never turned since the session was recorded
    assert peek.exists("roost:{c:c}:session")


def test_close_hands_what_is_pending_to_redis_without_waiting(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop)
    persistent("c", store)
    store.close()
    assert not peek.exists("roost:{c:c}:session")
    run_until(loop, lambda: bool(peek.exists("roost:{c:c}:session")), what="the write")
    close(store, loop)


# -- failures -------------------------------------------------------------------------------


def test_a_lost_server_stops_the_store_once_and_drops_what_waits(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop
) -> None:
    failures: list[StoreError] = []
    store = open_store(redis_server, loop, on_failure=failures.append)
    session = persistent("c", store)
    commit(store, loop)
    redis_server.kill()
    acknowledged: list[str] = []
    session.subscribe("t", SubscriptionOptions(1))
    store.after_commit(lambda: acknowledged.append("batch"))

    run_until(loop, lambda: bool(failures), timeout=30.0, what="the failure report")
    assert len(failures) == 1
    assert isinstance(failures[0].__cause__, redis.ConnectionError)
    assert f"127.0.0.1:{redis_server.port}" in str(failures[0])
    assert acknowledged == []

    # Stopped: new work is dropped and nothing is left waiting.
    session.subscribe("u", SubscriptionOptions(1))
    store.after_commit(lambda: acknowledged.append("later"))
    store.when_drained(lambda: acknowledged.append("drained"))
    assert store.backlogged
    turn(loop, 0.05)
    assert acknowledged == []
    assert len(failures) == 1
    with pytest.raises(StoreError):
        fetch(store, loop, "c")
    with pytest.raises(StoreError):
        store.close()
    with pytest.raises(StoreError):
        close(store, loop)


def test_an_error_reply_stops_the_store(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    failures: list[StoreError] = []
    store = open_store(redis_server, loop, on_failure=failures.append)
    peek.set("roost:{c:c}:subs", b"not a hash")
    session = persistent("c", store)
    session.subscribe("t", SubscriptionOptions(1))
    acknowledged: list[bool] = []
    store.after_commit(lambda: acknowledged.append(True))
    run_until(loop, lambda: bool(failures), what="the failure report")
    assert "WRONGTYPE" in str(failures[0])
    assert acknowledged == []
    with pytest.raises(StoreError, match="WRONGTYPE"):
        close(store, loop)


def test_open_fails_without_a_server(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop
) -> None:
    redis_server.kill()
    with pytest.raises(StoreError, match=f"127.0.0.1:{redis_server.port}"):
        open_store(redis_server, loop)


# -- backlog --------------------------------------------------------------------------------


def test_backlog_counts_the_pipeline_in_flight_until_redis_answers(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop, peek: redis.Redis
) -> None:
    store = open_store(redis_server, loop, max_pending_writes=BOUND)
    subscribe_many(store, BOUND)
    assert not store.backlogged
    subscribe_many(store, 2, first=BOUND)
    assert store.backlogged
    drained: list[int] = []
    with stopped(redis_server):
        turn(loop)  # sent, not answered: still pending
        assert store.backlogged
        store.when_drained(lambda: drained.append(peek.hlen("roost:{c:c}:subs")))
        turn(loop)
        assert drained == []
    run_until(loop, lambda: bool(drained), what="the drained callback")
    assert drained == [BOUND + 2]
    assert not store.backlogged
    close(store, loop)


def test_when_drained_runs_at_once_under_the_low_water_mark(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(redis_server, loop, max_pending_writes=BOUND)
    subscribe_many(store, BOUND // 2)
    called: list[bool] = []
    store.when_drained(lambda: called.append(True))
    assert called == [True]
    close(store, loop)
