"""``$SYS/broker/...`` topics on a broker whose clock the test moves: published at start,
then every ``sys_interval`` seconds of broker time, those that changed."""

from __future__ import annotations

import math

from brokerthread import BrokerFactory, ManualClock
from paho_helpers import Clients, Conn, wait_until
from roost import __version__


def latest(conn: Conn, topic: str) -> str | None:
    found = [m.payload.decode() for m in conn.messages if m.topic == "$SYS/broker/" + topic]
    return found[-1] if found else None


def wait_for(conn: Conn, topic: str, payload: str) -> None:
    """Wait until ``topic``'s latest value is ``payload`` (the topics of one tick arrive
    one after the other)."""
    wait_until(lambda: latest(conn, topic) == payload, what=f"{topic} = {payload}")


def test_sys_topics_follow_the_broker_clock(
    make_broker: BrokerFactory, clock: ManualClock, clients: Clients
) -> None:
    running = make_broker(clock=clock, sys_interval=10)
    running.advance(0)  # the first tick: everything is published, retained
    watcher = clients.connect(running, "watcher")
    watcher.sub("$SYS/broker/#")
    # Retained, so they come right after SUBACK, in no particular order.
    wait_for(watcher, "version", f"roost version {__version__}")
    wait_for(watcher, "uptime", "0 seconds")
    wait_for(watcher, "clients/connected", "0")
    wait_for(watcher, "transactions/pending", "0")

    publisher = clients.connect(running, "publisher", session_expiry=60)
    for index in range(6):
        publisher.pub("data", str(index).encode(), qos=1)
    running.advance(9)  # not yet due: nothing new
    running.advance(1)
    wait_for(watcher, "uptime", "10 seconds")
    wait_for(watcher, "clients/connected", "2")
    wait_for(watcher, "clients/maximum", "2")
    wait_for(watcher, "messages/received", "6")
    wait_for(watcher, "subscriptions/count", "1")
    # Mosquitto's damped per-minute rate: 6 messages in 10 s are 36 a minute
    expected = 36 * (1 - math.exp(-10 / 60))
    wait_for(watcher, "load/messages/received/1min", f"{expected:.2f}")

    publisher.client.disconnect()
    running.wait_offline("publisher")
    running.advance(10)
    wait_for(watcher, "uptime", "20 seconds")
    wait_for(watcher, "clients/connected", "1")
    wait_for(watcher, "clients/disconnected", "1")
    wait_for(watcher, "clients/total", "2")
    wait_for(watcher, "clients/maximum", "2")
    # an unchanged value is not published again
    assert [m.topic for m in watcher.messages].count("$SYS/broker/version") == 1


def test_a_late_subscriber_gets_the_retained_values(
    make_broker: BrokerFactory, clock: ManualClock, clients: Clients
) -> None:
    running = make_broker(clock=clock, sys_interval=5)
    running.advance(0)
    late = clients.connect(running, "late")
    late.sub("$SYS/broker/retained messages/count")
    wait_for(late, "retained messages/count", "0")


def test_sys_interval_0_turns_them_off(
    make_broker: BrokerFactory, clock: ManualClock, clients: Clients
) -> None:
    running = make_broker(clock=clock, sys_interval=0)
    running.advance(0)
    watcher = clients.connect(running, "watcher")
    watcher.sub("$SYS/broker/#")
    running.advance(60)
    marker = clients.connect(running, "marker")
    marker.pub("$SYS/broker/marker", b"end", qos=1)
    watcher.wait_for_payload(b"end")
    assert [m.topic for m in watcher.messages] == ["$SYS/broker/marker"]
