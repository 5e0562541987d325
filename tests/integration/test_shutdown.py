"""Graceful shutdown on SIGTERM: MQTT 5 clients are told, pending state reaches the disk."""

from __future__ import annotations

from pathlib import Path

from brokerproc import BrokerProcess
from paho_helpers import V5, connect, disconnect, subscribe
from rawmqtt import RawFactory


def test_sigterm_tells_mqtt5_clients_and_closes_mqtt311_ones(
    tmp_path: Path, raw: RawFactory
) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        v5, _ = raw.connected(broker, "v5-client", 5)
        v311, _ = raw.connected(broker, "v311-client", 4)
        assert broker.terminate() == 0
        packets = v5.wait_closed()
        assert [(p.name, p.reason_code) for p in packets] == [("DISCONNECT", 0x8B)]
        assert v311.read_until_closed() == b""  # 3.1.1 has no server DISCONNECT
    finally:
        broker.kill()


def test_sigterm_writes_what_the_batch_window_still_held(tmp_path: Path) -> None:
    """With durability=batch and a long commit interval, acknowledged messages are still
    only in memory when SIGTERM arrives: the shutdown must write them."""
    data = tmp_path / "data"
    broker = BrokerProcess(data, "--durability", "batch", "--commit-interval-ms", "60000")
    broker.start()
    try:
        sub, collector = connect(broker, "keeper", V5, clean=False, session_expiry=3600)
        subscribe(sub, collector, "kept/#", 1)
        disconnect(sub)
        publisher, _ = connect(broker, "publisher", V5)
        for i in range(10):
            publisher.publish("kept/x", str(i).encode(), 1).wait_for_publish(10)
        disconnect(publisher)
        assert broker.terminate() == 0

        broker.start()
        sub, collector = connect(broker, "keeper", V5, clean=False, session_expiry=3600)
        collector.wait_for_messages(10)
        disconnect(sub)
        assert [int(m.payload) for m in collector.messages] == list(range(10))
    finally:
        broker.kill()
