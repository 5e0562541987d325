"""A store write that fails stops a real broker process: the PUBACK that waited for the
write is never sent, connections are closed, the log names the file and the cause, and the
process exits with a non-zero status."""

from __future__ import annotations

from pathlib import Path

from brokerproc import BrokerProcess
from paho_helpers import V5, connect, disconnect, subscribe, wait_until
from roost.store.sqlite import DATABASE_NAME
from store_helpers import count, query


def test_failed_write_stops_the_broker_without_acknowledging(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    broker = BrokerProcess(data_dir).start()
    publisher = None
    try:
        keeper, collector = connect(broker, "keeper", V5, clean=False, session_expiry=3600)
        subscribe(keeper, collector, "f/#", 1)
        disconnect(keeper)  # offline: a message for it must be stored before the PUBACK
        query(
            data_dir,
            "CREATE TRIGGER refuse BEFORE INSERT ON messages"
            " BEGIN SELECT RAISE(FAIL, 'disk says no'); END",
        )

        publisher, published = connect(broker, "publisher", V5)
        info = publisher.publish("f/1", b"lost", 1)
        assert broker.process is not None
        assert broker.process.wait(20) == 1
        wait_until(published.disconnected.is_set, what="the publisher's connection to close")
        assert not info.is_published()  # and the process is gone: it never will be
        wait_until(lambda: "disk says no" in "".join(broker.log), what="the failure in the log")
        failure = next(line for line in broker.log if "disk says no" in line)
        assert str(data_dir / DATABASE_NAME) in failure
    finally:
        if publisher is not None:
            publisher.loop_stop()
        broker.kill()

    assert count(data_dir, "messages") == 0  # the failed batch left nothing behind
    assert query(data_dir, "SELECT topic_filter FROM subscriptions") == [("f/#",)]
