"""WebSocket and secure WebSocket listeners: paho (3.1.1, 5.0) and MQTT.js clients; binary
frames carry the MQTT stream whatever the framing (a packet across frames, several in one,
a fragmented message); the handshake needs the ``mqtt`` subprotocol and the right path; a
text frame closes the connection; a client that does not read holds a bounded buffer."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mqttjs import ensure_mqttjs
from tlspki import SERVER_NAME, Pki, endpoint, over_websocket
from wsraw import HandshakeRefused, WsRawClient

from brokerthread import RunningBroker
from paho_helpers import V5, V311, wait_until
from rawmqtt import connect_bytes, frame, publish_bytes, utf8
from roost.config import Listener
from roost.protocol import CONNECT_TIMEOUT
from roost.transport import stream
from roost.transport.stream import WRITE_BUFFER_HIGH


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def ws_raw() -> Iterator[Callable[..., WsRawClient]]:
    """``ws_raw(broker, version, path=..., subprotocols=...)``: raw MQTT over WebSocket,
    closed at teardown."""
    opened: list[WsRawClient] = []

    def open_client(broker: RunningBroker, version: int = 4, **options: object) -> WsRawClient:
        port = broker.broker.port_of("ws")
        client = WsRawClient("127.0.0.1", port, version, **options)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.drop()


@pytest.mark.parametrize("version", [V311, V5])
def test_paho_over_websocket(make_broker, clients, version) -> None:
    broker = make_broker(ws_port=0)
    ws = endpoint(broker, "ws")
    subscriber = clients.connect(ws, "ws-sub", version, prepare=over_websocket())
    subscriber.sub("ws/+", qos=1)
    tcp = clients.connect(broker, "tcp-pub", version)
    tcp.pub("ws/a", b"from tcp", qos=1)
    assert subscriber.wait_for_payload(b"from tcp").topic == "ws/a"
    tcp.sub("back", qos=1)
    subscriber.pub("back", b"from ws", qos=1)
    tcp.wait_for_payload(b"from ws")


@pytest.mark.parametrize("version", [V311, V5])
def test_paho_over_secure_websocket_at_the_root_path(make_broker, clients, pki, version) -> None:
    broker = make_broker(wss_port=0, **pki.server_settings())
    wss = endpoint(broker, "wss")
    subscriber = clients.connect(wss, "wss-sub", version, prepare=over_websocket("/", pki))
    subscriber.sub("secure", qos=1)
    clients.connect(broker, "tcp-pub", version).pub("secure", b"sealed", qos=1)
    subscriber.wait_for_payload(b"sealed")


def test_a_packet_split_across_frames_and_several_packets_in_one(make_broker, ws_raw) -> None:
    broker = make_broker(ws_port=0)
    client = ws_raw(broker)
    connect = connect_bytes("framing")
    client.send_frames(connect[:3], connect[3:9], connect[9:])  # CONNECT in three frames
    assert client.expect("CONNACK").reason_code == 0
    subscribe = frame(0x82, b"\x00\x01" + utf8("f/#") + b"\x00")
    one = publish_bytes(b"f/1", b"first", level=4)
    two = publish_bytes(b"f/2", b"second", level=4)
    three = publish_bytes(b"f/3", b"x" * 70_000, level=4)  # larger than a read of the socket
    # SUBSCRIBE, two whole PUBLISHes and the start of a third in one frame, its rest in two.
    client.send_frames(subscribe + one + two + three[:100], three[100:50_000], three[50_000:])
    assert client.expect("SUBACK").reason_codes == [0]
    got = [client.expect("PUBLISH") for _ in range(3)]
    assert [(p.topic, p.payload) for p in got] == [
        ("f/1", b"first"),
        ("f/2", b"second"),
        ("f/3", b"x" * 70_000),
    ]


def test_a_fragmented_message_is_one_stream(make_broker, ws_raw) -> None:
    broker = make_broker(ws_port=0)
    client = ws_raw(broker, 5)
    connect = connect_bytes("fragments", level=5)
    client.send_fragmented(connect[:5], connect[5:], b"\xc0", b"\x00")  # CONNECT + PINGREQ
    assert client.expect("CONNACK").reason_code == 0
    client.expect("PINGRESP")


def test_a_text_frame_closes_the_connection(make_broker, ws_raw, caplog) -> None:
    broker = make_broker(ws_port=0)
    client = ws_raw(broker)
    client.connect("texter")
    client.send_text("PUBLISH?")
    assert client.wait_closed() == []
    assert client.close_code == 1003  # unsupported data [MQTT-6.0.0-1]
    assert "text frame" in caplog.text
    broker.wait_offline("texter")


def test_a_frame_beyond_the_limit_closes_the_connection(make_broker, ws_raw) -> None:
    broker = make_broker(ws_port=0, max_packet_size=1024)  # frames up to 64 KiB
    client = ws_raw(broker)
    client.connect("big-framer")
    client.send_frames(b"\xc0\x00" * 32_768 + b"\xc0")  # 65,537 bytes of PINGREQs
    assert client.wait_closed() == []
    assert client.close_code == 1009  # message too big
    broker.wait_offline("big-framer")


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({"subprotocols": ()}, 400),  # none offered [MQTT-6.0.0-3]
        ({"subprotocols": ("mqttv3.1",)}, 400),
        ({"path": "/elsewhere"}, 404),
    ],
)
def test_the_handshake_needs_the_mqtt_subprotocol_and_path(make_broker, ws_raw, options, status):
    broker = make_broker(ws_port=0)
    with pytest.raises(HandshakeRefused) as refused:
        ws_raw(broker, **options)
    assert refused.value.status == status


def test_a_client_that_never_completes_the_handshake_is_closed(
    make_broker, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(stream, "CONNECT_TIMEOUT", 0.2)  # read when a connection opens
    broker = make_broker(ws_port=0)
    with socket.create_connection(("127.0.0.1", broker.broker.port_of("ws")), 10) as silent:
        silent.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        try:
            answer = silent.recv(1024)
        except ConnectionResetError:  # (the broker aborts the connection)
            answer = b""
        assert answer == b""  # closed, no answer
    assert "no WebSocket handshake within 0.2 s" in caplog.text


def test_the_path_is_configurable(make_broker, ws_raw) -> None:
    listener = Listener("ws", "127.0.0.1", 0, path="/brokers/roost", name="ws")
    broker = make_broker(listeners=(listener,))
    for path in ("/brokers/roost", "/brokers/roost?client=1", "/"):
        assert ws_raw(broker, path=path).connect(f"at{len(path)}").reason_code == 0
    with pytest.raises(HandshakeRefused):
        ws_raw(broker, path="/mqtt")


def test_a_websocket_client_that_does_not_read_is_not_buffered_for(make_broker, ws_raw) -> None:
    """As over TCP: once the broker's writes to the client back up, it stops reading it,
    so what the broker holds for it stays bounded."""
    broker = make_broker(ws_port=0, store="memory", write_stall_timeout=3600)
    client = ws_raw(broker, 5, receive_buffer=4096)
    client.connect("no-reader")
    core = broker.broker.core
    (connection,) = core.open_connections
    transport = connection.transport._transport  # the broker's asyncio transport

    def small_send_buffer() -> None:  # what the broker holds, not what the kernel does
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    def buffered_and_reading() -> tuple[int, bool]:
        return int(transport.get_write_buffer_size()), bool(transport.is_reading())

    broker.on_loop(small_send_buffer)
    pings = client.frame_bytes(b"\xc0\x00" * 32_768)  # each PINGREQ gets a PINGRESP
    client.sock.setblocking(False)
    sent = 0

    def send_more() -> bool:
        """Send on from where the stream of frames stands; False once the kernel refuses."""
        nonlocal sent
        offset = sent % len(pings)
        try:
            sent += client.sock.send(pings[offset:])
        except BlockingIOError:
            return False
        return True

    deadline = time.monotonic() + 60
    while not core.blocked_writers:
        assert time.monotonic() < deadline, f"the broker kept reading: {sent} bytes accepted"
        if not send_more():
            threading.Event().wait(0.01)
    while send_more():  # the broker reads no more: the kernel's buffers fill and refuse more
        assert time.monotonic() < deadline, f"the kernel kept accepting: {sent} bytes accepted"

    buffered, reading = broker.on_loop(buffered_and_reading)
    assert sent > WRITE_BUFFER_HIGH
    assert buffered <= WRITE_BUFFER_HIGH + 256 * 1024
    assert not reading
    assert core.blocked_writers


@pytest.mark.parametrize(("kind", "version"), [("ws", 4), ("ws", 5), ("wss", 5)])
def test_mqttjs_over_websocket(make_broker, clients, pki, kind, version) -> None:
    js_dir = ensure_mqttjs()
    broker = make_broker(ws_port=0, wss_port=0, **pki.server_settings())
    tcp = clients.connect(broker, "tcp-side", V5)
    tcp.sub("mqttjs/out", qos=1)
    scheme = "wss" if kind == "wss" else "ws"
    url = f"{scheme}://{SERVER_NAME}:{broker.broker.port_of(kind)}"  # no path: MQTT.js sends /
    command = ["node", "roundtrip.js", url, str(version)]
    if kind == "wss":
        command.append(pki.cafile)
    with subprocess.Popen(
        command, cwd=js_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as node:
        try:
            assert node.stdout is not None
            line = node.stdout.readline()
            assert line == "ready\n", (
                f"MQTT.js: {line!r} {node.stderr.read() if node.stderr else ''}"
            )
            tcp.wait_for_payload(b"hello from mqtt.js")
            tcp.pub("mqttjs/in", b"hello from paho", qos=1)
            received = json.loads(node.stdout.readline())
            assert received == {"topic": "mqttjs/in", "payload": "hello from paho"}
            assert node.wait(20) == 0
        finally:
            if node.poll() is None:
                node.kill()
    wait_until(lambda: not broker.broker.core.is_online(f"mqttjs-v{version}"), what="MQTT.js gone")


def closed_by_broker(sock: socket.socket, within: float = 10) -> bool:
    """Wait until the broker closes ``sock`` (EOF or reset; anything it sent first, such as
    a 400 answer, is read and discarded); a socket still open after ``within`` seconds
    fails the test."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_sockets_in_the_handshake_count_against_max_connections(make_broker) -> None:
    """Sockets that have not finished their WebSocket handshake are counted from accept:
    beyond max_connections (and the few accepted to be told why at CONNECT), a socket is
    closed at once instead of holding headers for the CONNECT timeout."""
    broker = make_broker(ws_port=0, max_connections=5)
    traffic = broker.broker.core.traffic
    limit = 5 + stream.OVER_LIMIT_SOCKETS
    slow = []
    for _ in range(limit + 10):
        sock = socket.create_connection(("127.0.0.1", broker.broker.port_of("ws")), 10)
        sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2000 + b"\r\n")
        slow.append(sock)
    wait_until(lambda: traffic.sockets_refused == 10, what="10 sockets refused")
    assert traffic.sockets == limit
    assert all(closed_by_broker(sock) for sock in slow[limit:])
    for sock in slow:
        sock.close()
    wait_until(lambda: traffic.sockets == 0, what="every socket closed")


def test_a_handshake_with_too_many_or_too_long_headers_is_refused(make_broker) -> None:
    broker = make_broker(ws_port=0)
    port = broker.broker.port_of("ws")
    many = b"".join(f"X-Pad-{n}: a\r\n".encode() for n in range(40))
    long_line = b"X-Pad: " + b"a" * 5000 + b"\r\n"
    for headers in (many, long_line):
        with socket.create_connection(("127.0.0.1", port), 10) as sock:
            sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n" + headers)
            assert closed_by_broker(sock, within=CONNECT_TIMEOUT / 2)  # not by the timeout
    wait_until(lambda: broker.broker.core.traffic.sockets == 0, what="sockets closed")
