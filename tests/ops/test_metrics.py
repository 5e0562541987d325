"""``/metrics`` on a real broker: the counters follow what paho clients did."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adminhttp import scrape, value
from brokerthread import BrokerFactory
from paho_helpers import Clients, wait_until


def test_metrics_count_connections_messages_and_drops(
    make_broker: BrokerFactory, clients: Clients
) -> None:
    running = make_broker(http_port=0, max_queued_messages=1, allow_empty_client_id=False)
    small = Properties(PacketTypes.CONNECT)
    small.MaximumPacketSize = 64
    subscriber = clients.connect(running, "small", properties=small)
    subscriber.sub("t/#", 1)
    offline = clients.connect(running, "away", session_expiry=600)
    offline.sub("t/#", 1)
    offline.client.disconnect()
    running.wait_offline("away")
    publisher = clients.connect(running, "pub")
    for _ in range(3):
        publisher.pub("t/a", b"hello", qos=0)
    publisher.pub("t/a", b"x" * 100, qos=1)  # too large for "small"; queued for "away"
    publisher.pub("t/a", b"again", qos=1)  # "away"'s queue is full: dropped
    subscriber.wait_for_payload(b"again")
    refused = clients.connect(running, "", expect_success=False)
    assert refused.connack_rc != 0

    samples = scrape(running)
    assert value(samples, "roost_clients_connected") == 2
    assert value(samples, "roost_sessions") == 3
    assert value(samples, "roost_connections_total") == 3
    assert (
        value(samples, "roost_connections_refused_total", reason="client_identifier_not_valid") == 1
    )
    assert value(samples, "roost_messages_received_total", qos="0") == 3
    assert value(samples, "roost_messages_received_total", qos="1") == 2
    assert value(samples, "roost_payload_bytes_received_total", qos="1") == 105
    assert value(samples, "roost_messages_sent_total", qos="0") == 3
    assert value(samples, "roost_messages_sent_total", qos="1") == 1
    assert value(samples, "roost_deliveries_dropped_total", reason="too_large") == 1
    assert value(samples, "roost_deliveries_dropped_total", reason="queue_full") == 1
    assert value(samples, "roost_queued_messages") == 1
    assert value(samples, "roost_bytes_received_total") > 100
    assert value(samples, "roost_bytes_sent_total") > 0
    assert value(samples, "roost_store_commit_seconds_count") >= 1
    assert value(samples, "roost_store_commit_seconds_bucket", le="+Inf") == value(
        samples, "roost_store_commit_seconds_count"
    )
    assert value(samples, "roost_transactions_pending") == 0
    assert ("roost_cluster_forwarded_messages_total", ()) not in samples


def test_inflight_and_retained_are_read_at_scrape_time(
    make_broker: BrokerFactory, clients: Clients
) -> None:
    running = make_broker(http_port=0)
    publisher = clients.connect(running, "pub")
    publisher.pub("r/1", b"kept", qos=1, retain=True)
    samples = scrape(running)
    assert value(samples, "roost_retained_messages") == 1
    publisher.pub("r/1", b"", qos=1, retain=True)
    wait_until(lambda: value(scrape(running), "roost_retained_messages") == 0)
