"""The node's writer to Redis, on a real Valkey server: each loop turn's records go out as a
round of their own without waiting for the replies to the rounds before; callbacks run once
everything queued before them is in Redis, in order; a refused command or a Redis that does
not answer fails the sender, and the next round connects again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from paho_helpers import wait_until
from redis_store_helpers import stopped, turn
from roost.cluster import keys
from roost.cluster.localserver import LocalServer
from roost.cluster.redislinks import WRITE_BUFFER_LIMIT
from roost.cluster.sender import Sender, SenderClosed

TIMEOUT = 10.0
SHORT_TIMEOUT = 1.0  # seconds a round's replies may take, for the test of a silent Redis


class Writer:
    """A Sender on the test's loop, and the failures it reported."""

    def __init__(
        self,
        server: LocalServer,
        loop: asyncio.AbstractEventLoop,
        socket_timeout: float = TIMEOUT,
    ) -> None:
        self.loop = loop
        self.client = Redis.from_url(server.url, socket_timeout=socket_timeout)
        self.failures: list[Exception] = []
        self.sender = Sender(self.client, self.failures.append)

    def record(self, record: bytes) -> None:
        """Queue ``record`` for node B's inbox and let the loop turn (the round goes)."""
        self.inside(lambda: self.sender.record("B", record))

    def inside(self, call: Callable[[], object]) -> None:
        """Run ``call`` on the loop, then let the loop turn (a round it queued goes)."""

        async def run() -> None:
            call()
            await asyncio.sleep(0.01)

        self.loop.run_until_complete(run())

    def connect(self) -> None:
        """Send a first entry: the sender connects for its first round."""
        self.record(b"hello")
        self.sent()

    def sent(self) -> None:
        self.loop.run_until_complete(asyncio.wait_for(self.sender.sent(), TIMEOUT))

    def close(self) -> None:
        self.loop.run_until_complete(self.sender.aclose())
        self.loop.run_until_complete(self.client.aclose())


@pytest.fixture
def make_writer(
    redis_server: LocalServer, loop: asyncio.AbstractEventLoop
) -> Iterator[Callable[..., Writer]]:
    """Writers (with the given socket timeout), closed after the test."""
    made: list[Writer] = []

    def make(socket_timeout: float = TIMEOUT) -> Writer:
        made.append(Writer(redis_server, loop, socket_timeout))
        return made[-1]

    yield make
    for writer in made:
        writer.close()


@pytest.fixture
def writer(make_writer: Callable[..., Writer]) -> Writer:
    return make_writer()


@pytest.fixture
def peek(redis_server: LocalServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def inbox(peek: redis.Redis) -> list[bytes]:
    return [fields[b"b"] for _, fields in peek.xrange(keys.inbox("B"))]


def test_each_turn_sends_its_own_entry_while_earlier_ones_wait_for_their_replies(
    writer: Writer, peek: redis.Redis, redis_server: LocalServer
) -> None:
    writer.connect()
    with stopped(redis_server):
        for index in range(3):
            writer.record(b"turn %d" % index)
    writer.sent()
    assert inbox(peek) == [b"hello", b"turn 0", b"turn 1", b"turn 2"]
    assert writer.sender.entries == 4
    assert not writer.failures


def test_callbacks_run_once_everything_queued_before_them_is_in_redis_in_order(
    writer: Writer, peek: redis.Redis, redis_server: LocalServer
) -> None:
    writer.connect()
    done: list[str] = []
    with stopped(redis_server):
        writer.record(b"first")
        writer.inside(
            lambda: writer.sender.after_sent(lambda: done.append(f"first, {len(inbox(peek)) > 0}"))
        )
        writer.record(b"second")
        writer.inside(lambda: writer.sender.after_sent(lambda: done.append("second")))
        turn(writer.loop, 0.05)
        assert done == []  # nothing is answered while Redis is frozen
    writer.sent()
    assert done == ["first, True", "second"]


def test_a_refused_command_fails_the_sender_and_the_next_round_connects_again(
    writer: Writer, peek: redis.Redis, redis_server: LocalServer
) -> None:
    writer.connect()
    peek.set("not-a-number", "x")
    done: list[str] = []
    with stopped(redis_server):  # the command and the callback wait in one round
        writer.inside(lambda: writer.sender.command(lambda client: client.incr("not-a-number")))
        writer.inside(lambda: writer.sender.after_sent(lambda: done.append("acknowledged")))
    with pytest.raises(ResponseError):
        writer.sent()
    assert [type(failure) for failure in writer.failures] == [ResponseError]
    assert done == []  # what waited for the refused round is never acknowledged
    writer.record(b"after")
    writer.sent()
    assert inbox(peek) == [b"hello", b"after"]


def test_a_redis_that_does_not_answer_fails_the_sender_within_the_socket_timeout(
    make_writer: Callable[..., Writer], redis_server: LocalServer
) -> None:
    writer = make_writer(SHORT_TIMEOUT)
    writer.connect()
    with stopped(redis_server):
        writer.record(b"lost")
        with pytest.raises(RedisTimeoutError):
            writer.sent()
    assert [type(failure) for failure in writer.failures] == [RedisTimeoutError]


def test_records_wait_and_join_one_entry_while_redis_is_behind_on_what_is_written(
    writer: Writer, redis_server: LocalServer, peek: redis.Redis
) -> None:
    writer.connect()
    big = [bytes([ord("a") + index]) * 2 * WRITE_BUFFER_LIMIT for index in range(3)]
    with stopped(redis_server):
        for record in [*big, b"d", b"e"]:
            writer.record(record)
    writer.sent()
    entries = inbox(peek)
    assert b"".join(entries) == b"hello" + b"".join(big) + b"de"
    # once what was written passed the limit, the records after it waited for Redis
    # to take it and then went as one entry (one per loop turn otherwise)
    assert len(entries) < 1 + 5
    assert entries[-1].endswith(b"de") and len(entries[-1]) > 2
    assert not writer.failures


def test_what_is_queued_after_close_is_dropped_without_connecting_again(
    writer: Writer, peek: redis.Redis
) -> None:
    writer.connect()
    writer.loop.run_until_complete(writer.sender.aclose())
    done: list[str] = []
    writer.record(b"late")
    writer.inside(lambda: writer.sender.command(lambda client: client.set("late", "1")))
    writer.inside(lambda: writer.sender.after_sent(lambda: done.append("acknowledged")))
    with pytest.raises(SenderClosed):
        writer.sent()
    assert inbox(peek) == [b"hello"]
    assert peek.get("late") is None
    assert done == []  # what was dropped is never acknowledged
    # the sender's connection is gone and none took its place: only peek's is left
    wait_until(lambda: len(peek.client_list()) == 1, what="the sender's connection to close")
    assert not writer.failures


def test_a_wait_for_a_round_that_close_cut_short_fails(
    writer: Writer, redis_server: LocalServer
) -> None:
    writer.connect()

    async def close_while_waiting() -> None:
        waiting = asyncio.ensure_future(writer.sender.sent())
        await asyncio.sleep(0)  # one loop turn: the wait has begun
        await writer.sender.aclose()
        with pytest.raises(SenderClosed):
            await asyncio.wait_for(waiting, TIMEOUT)

    with stopped(redis_server):  # the round's replies never come before the close
        writer.record(b"unanswered")
        writer.loop.run_until_complete(close_while_waiting())
