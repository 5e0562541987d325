"""Keep alive: a silent client is dropped at 1.5 x Keep Alive (and its will published),
PINGREQ keeps it alive, 0 disables the timeout, and MQTT 5 Server Keep Alive overrides it.

The broker runs on a ManualClock: each test moves broker time to just before the deadline
(the client must still be connected) and then to the deadline (it must be gone)."""

from __future__ import annotations

from typing import Any

from brokerthread import MOMENT, ManualClock
from paho_helpers import V5, Clients, Conn
from rawmqtt import LEVELS, Pkt, RawClient, RawFactory, Will


def assert_timeout_close(packets: list[Pkt]) -> None:
    """Closed silently, or (MQTT 5) after DISCONNECT 0x8D Keep alive timeout."""
    assert all(p.name == "DISCONNECT" and p.reason_code == 0x8D for p in packets), packets


def silent_client(
    raw: RawFactory, broker: Any, client_id: str, level: int, keep_alive: int, **options: Any
) -> tuple[RawClient, Pkt]:
    """A raw client subscribed to ``probe/<client_id>`` (so :func:`assert_connected` can
    reach it without it sending anything); returns it and its CONNACK."""
    client, connack = raw.connected(broker, client_id, level, keep_alive=keep_alive, **options)
    assert client.subscribe(1, [(f"probe/{client_id}", 0)]).reason_codes == [0]
    return client, connack


def assert_connected(client: RawClient, client_id: str, prober: Conn) -> None:
    """The broker still serves ``client``: a probe published now reaches it."""
    prober.pub(f"probe/{client_id}", b"probe", qos=1)
    assert client.expect("PUBLISH").payload == b"probe"


@LEVELS
def test_silent_client_dropped_at_one_and_a_half_keep_alive(
    make_broker: Any, clock: ManualClock, clients: Clients, raw: RawFactory, level: int
) -> None:
    broker = make_broker(clock=clock)
    watcher = clients.connect(broker, "ka-watch", V5)
    watcher.sub("probe/#", 1)
    watcher.sub("ka/will", 1)
    will = Will("ka/will", b"timed out", qos=1)
    client, _ = silent_client(raw, broker, "ka1", level, keep_alive=2, will=will)

    broker.advance(3 - MOMENT)
    assert_connected(client, "ka1", watcher)
    assert watcher.before(b"probe") == [], "will published before the keep-alive deadline"

    broker.advance(MOMENT)
    assert_timeout_close(client.wait_closed())
    assert watcher.wait_for_payload(b"timed out").topic == "ka/will"


def test_pingreq_keeps_connection_alive(
    make_broker: Any, clock: ManualClock, clients: Clients, raw: RawFactory
) -> None:
    """A PINGREQ every 1.25 s keeps a keep-alive-1 client connected well past 1.5 s after
    its CONNECT; once it stops, the timeout counts from its last PINGREQ."""
    broker = make_broker(clock=clock)
    prober = clients.connect(broker, "prober", V5)
    client, _ = silent_client(raw, broker, "pinger", 5, keep_alive=1)
    for _ in range(4):  # 5 s in all
        broker.advance(1.25)
        client.ping()  # answered: the connection is still open

    broker.advance(1.5 - MOMENT)
    assert_connected(client, "pinger", prober)
    broker.advance(MOMENT)
    assert_timeout_close(client.wait_closed())


def test_keep_alive_zero_never_times_out(
    make_broker: Any, clock: ManualClock, raw: RawFactory
) -> None:
    """Run side by side: the keep-alive-1 client is dropped, the keep-alive-0 one is not."""
    broker = make_broker(clock=clock)
    forever, _ = raw.connected(broker, "ka0", 5, keep_alive=0)
    short, _ = raw.connected(broker, "ka1", 5, keep_alive=1)
    broker.advance(1.5)
    assert_timeout_close(short.wait_closed())
    broker.advance(24 * 3600)
    forever.ping()


def test_server_keep_alive_caps_client_value(
    make_broker: Any, clock: ManualClock, clients: Clients, raw: RawFactory
) -> None:
    broker = make_broker(clock=clock, max_keep_alive=2)
    prober = clients.connect(broker, "prober", V5)
    client, connack = silent_client(raw, broker, "greedy", 5, keep_alive=60)
    assert connack.props["ServerKeepAlive"] == 2, connack

    broker.advance(3 - MOMENT)
    assert_connected(client, "greedy", prober)
    broker.advance(MOMENT)
    assert_timeout_close(client.wait_closed())
