"""A broker whose store cannot keep up stops reading from publishers instead of queueing
their messages in memory without bound, and reads on, losing nothing, once the store has
caught up.

The store is really held back: a second SQLite connection takes the database's write lock
(BEGIN EXCLUSIVE), so the store's writer thread waits in SQLite's busy handler. That wait is
bounded by the busy timeout of the store's connection (sqlite3's default, 5 s; after it the
write fails and the broker stops), so the lock is released as soon as the test has seen what
it looks for, well within it.

The broker acknowledges at once (durability "none"), so every PUBACK the publisher gets
tells that the broker has read and handled one more PUBLISH. Each PUBLISH to the offline
persistent subscriber queues at least one write (its message and its delivery), and the
broker handles at most ``PACKET_BUDGET`` packets of a connection per loop turn before it
checks the backlog: while the writer is stuck, no more than ``MAX_PENDING +
PACKET_BUDGET`` publishes can be read. The publisher sends all its publishes in one write,
so the broker's first read holds most of them: what is already read must wait too, not
only the socket.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from brokerthread import BrokerFactory, RunningBroker
from paho_helpers import wait_until
from rawmqtt import TIMEOUT, Pkt, RawClient, RawFactory, publish_bytes
from roost.protocol import PACKET_BUDGET
from roost.store.sqlite import DATABASE_NAME

MAX_PENDING = 16  # --max-pending-writes
PUBLISHES = 1000  # far more than can be read while the writer is stuck
READ_AT_MOST = MAX_PENDING + PACKET_BUDGET
FENCES = 8  # clients that connect while the publisher waits: each a turn of the broker's loop
TOPIC = "backlog/t"


def store_of(broker: RunningBroker) -> Any:
    core = broker.broker.core
    assert core is not None
    return core.store


def packets_arrived(client: RawClient) -> list[Pkt]:
    """The packets the broker has sent ``client`` so far: what its socket holds now."""
    client.sock.setblocking(False)
    try:
        while True:
            try:
                chunk = client.sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            client.buf += chunk
    finally:
        client.sock.settimeout(TIMEOUT)
    packets = []
    while (pkt := client.parse_buffered()) is not None:
        packets.append(pkt)
    return packets


def writer_locked_out(data_dir: str) -> sqlite3.Connection:
    """A connection of its own holding the database's write lock until it rolls back."""
    locker = sqlite3.connect(Path(data_dir) / DATABASE_NAME, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


def test_a_backlogged_store_stops_reading_from_the_publisher_until_it_catches_up(
    make_broker: BrokerFactory, raw: RawFactory, tmp_path: Path
) -> None:
    broker = make_broker(durability="none", max_pending_writes=MAX_PENDING)
    store = store_of(broker)
    keeper, _ = raw.connected(broker, "keeper", version=5, clean=False, session_expiry=3600)
    assert keeper.subscribe(1, [(TOPIC, 1)]).reason_codes == [1]
    keeper.disconnect()
    broker.wait_offline("keeper")
    wait_until(lambda: store.pending_writes == 0, what="the subscription written")
    publisher, _ = raw.connected(broker, "flood")

    locker = writer_locked_out(broker.settings.data_dir)
    try:
        publisher.send(
            b"".join(
                publish_bytes(TOPIC.encode(), b"m%d" % i, level=4, qos=1, packet_id=i)
                for i in range(1, PUBLISHES + 1)
            )
        )
        wait_until(lambda: store.backlogged, what="the store backlogged")
        for n in range(FENCES):  # the broker goes on serving others meanwhile
            raw.connected(broker, f"fence{n}")
        acked_while_stuck = packets_arrived(publisher)
        assert store.backlogged, "the writer cannot have caught up: the lock is still held"
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert {p.name for p in acked_while_stuck} == {"PUBACK"}
    assert 0 < len(acked_while_stuck) <= READ_AT_MOST, (
        f"the broker read {len(acked_while_stuck)} publishes while its store was stuck"
    )
    acked = [p.packet_id for p in acked_while_stuck]
    while len(acked) < PUBLISHES:
        acked.append(publisher.expect("PUBACK").packet_id)
    assert acked == list(range(1, PUBLISHES + 1))

    # Everything read was written: a broker started from what is on disk now delivers it all.
    wait_until(lambda: store.pending_writes == 0, what="the store caught up")
    restarted = make_broker(data_dir=broker.disk_image(tmp_path / "image"))
    keeper, connack = raw.connected(restarted, "keeper", version=5, clean=False)
    assert connack.session_present
    payloads = []
    for _ in range(PUBLISHES):
        message = keeper.expect("PUBLISH")
        keeper.ack("PUBACK", message.packet_id)
        payloads.append(message.payload)
    assert payloads == [b"m%d" % i for i in range(1, PUBLISHES + 1)]
