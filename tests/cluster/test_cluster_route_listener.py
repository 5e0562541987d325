"""A node's route listener outlives a Redis error met while applying an announcement (here
a WRONGTYPE from reading another node's route set), and a malformed announcement, goes on
applying the announcements after them, and the node stops without raising the error.
In-process nodes on a real Valkey."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import redis

from brokerthread import RunningBroker
from clusterfixtures import route_filters
from paho_helpers import Clients, wait_until
from roost.cluster import keys
from roost.cluster.localserver import LocalServer


@pytest.fixture
def peek(redis_server: LocalServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def a_following_b(
    make_node: Callable[..., RunningBroker], clients: Clients, peek: redis.Redis
) -> tuple[RunningBroker, int]:
    """Nodes a and b, b with a route ("first") that a holds; returns a and the version of
    b's route set."""
    a, b = make_node("a"), make_node("b")
    clients.connect(b, "subscriber").sub("first", 1)
    wait_until(lambda: route_filters(a, "b") == {"first"}, what="b's route at a")
    return a, int(peek.get(keys.routes_version("b")) or 0)


def test_the_route_listener_goes_on_after_a_redis_error_and_stop_does_not_raise_it(
    make_node: Callable[..., RunningBroker],
    clients: Clients,
    peek: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="roost.cluster")
    a, version = a_following_b(make_node, clients, peek)
    members = peek.smembers(keys.routes("b"))
    # b's route set becomes unreadable; an announcement with a gap makes a read it
    peek.delete(keys.routes("b"))
    peek.set(keys.routes("b"), "not a set")
    peek.spublish(keys.routes_channel("b"), f"{version + 5}\0+lost")
    # the next announcement in order needs no read: the listener applies it if it lives
    peek.spublish(keys.routes_channel("b"), f"{version + 1}\0+second")
    wait_until(lambda: route_filters(a, "b") == {"first", "second"}, what="the next announcement")
    assert any(
        "route announcements interrupted" in record.getMessage()
        and "WRONGTYPE" in record.getMessage()
        for record in caplog.records
    )
    peek.delete(keys.routes("b"))
    peek.sadd(keys.routes("b"), *members)
    a.stop()  # the listener's error is not raised out of the node's stop


def test_the_route_listener_skips_a_malformed_announcement(
    make_node: Callable[..., RunningBroker],
    clients: Clients,
    peek: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, version = a_following_b(make_node, clients, peek)
    peek.spublish(keys.routes_channel("b"), b"\xff\0+not-utf-8")
    peek.spublish(keys.routes_channel("b"), b"no version\0+x")
    peek.spublish(keys.routes_channel("b"), f"{version + 1}\0+second")
    wait_until(lambda: route_filters(a, "b") == {"first", "second"}, what="the next announcement")
    ignored = [m for m in caplog.messages if "malformed route announcement" in m]
    assert len(ignored) == 2, ignored
