"""MQTTClient and the ``roost pub`` / ``roost sub`` commands against a real broker, plus the
client rules a broker does not exercise (server topic aliases, duplicate QoS 2 deliveries,
keep alive, rejected acknowledgements) against a server the test scripts by hand."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import pytest

from roost.client import ClientError, ConnectError, MQTTClient, PacketIds, PublishError
from roost.codec import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    Framer,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscription,
    encode,
)

TIMEOUT = 10.0
LEVELS = pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5], ids=["v311", "v5"])
T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async test scenario on a fresh event loop, failing it after TIMEOUT."""

    async def bounded() -> T:
        async with asyncio.timeout(TIMEOUT):
            return await scenario()

    return asyncio.run(bounded())


def connect(
    broker: Any, client_id: str, level: int = MQTT_5, **options: Any
) -> Awaitable[MQTTClient]:
    return MQTTClient.connect(broker.host, broker.port, client_id, protocol_level=level, **options)


async def next_message(client: MQTTClient) -> Publish:
    async for message in client.messages():
        return message
    raise AssertionError(f"no message: {client.close_reason}")


# --------------------------------------------------------------------------------------------
# MQTTClient against the broker


@LEVELS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip(broker: Any, level: int, qos: int) -> None:
    async def scenario() -> tuple[Publish, object]:
        async with (
            await connect(broker, "sub", level) as sub,
            await connect(broker, "pub", level) as pub,
        ):
            suback = await sub.subscribe("rt/#", qos=2)
            assert suback.reason_codes == (2,)
            ack = await pub.publish("rt/a", b"payload", qos=qos)
            return await next_message(sub), ack

    message, ack = run(scenario)
    assert (message.topic, message.payload, message.qos) == ("rt/a", b"payload", qos)
    assert type(ack) is {0: type(None), 1: PubAck, 2: PubComp}[qos]


def test_concurrent_qos2_publishes_use_distinct_packet_ids(broker: Any) -> None:
    async def scenario() -> tuple[list[PubAck | PubComp | None], list[bytes]]:
        async with (
            await connect(broker, "sub") as sub,
            await connect(broker, "pub") as pub,
        ):
            await sub.subscribe("many", qos=2)
            payloads = [str(n).encode() for n in range(20)]
            acks = await asyncio.gather(*(pub.publish("many", p, qos=2) for p in payloads))
            received = [(await next_message(sub)).payload for _ in payloads]
            return acks, received

    acks, received = run(scenario)
    assert all(isinstance(ack, PubComp) for ack in acks)
    assert len({ack.packet_id for ack in acks if ack}) == 20
    assert sorted(received) == sorted(str(n).encode() for n in range(20))


def test_packet_ids_are_reused_after_release() -> None:
    ids = PacketIds()
    allocated = [ids.allocate() for _ in range(65535)]
    assert sorted(allocated) == list(range(1, 65536))
    with pytest.raises(ClientError, match="in use"):
        ids.allocate()
    ids.release(300)
    ids.release(7)
    assert (ids.allocate(), ids.allocate()) == (7, 300)
    assert len(ids) == 65535


def test_connack_refusal_raises_connect_error(broker: Any) -> None:
    async def scenario() -> None:
        # MQTT 3.1.1: an empty client id needs a clean session [MQTT-3.1.3-8]
        await connect(broker, "", MQTT_3_1_1, clean_start=False)

    with pytest.raises(ConnectError, match="identifier rejected") as refused:
        run(scenario)
    assert refused.value.reason_code == 2


def test_server_disconnect_is_visible(broker: Any) -> None:
    async def scenario() -> tuple[str, Disconnect | None]:
        first = await connect(broker, "twin")
        async with await connect(broker, "twin"):
            await first.closed.wait()
        return first.close_reason, first.disconnect_packet

    reason, disconnect = run(scenario)
    assert disconnect is not None and disconnect.reason_code == 0x8E
    assert "session taken over" in reason


def test_persistent_session_keeps_subscription_and_queues_messages(broker: Any) -> None:
    async def scenario() -> tuple[bool, Publish]:
        async with await connect(broker, "keeper", clean_start=False, session_expiry=60) as c:
            await c.subscribe(Subscription("kept", qos=1))
        async with await connect(broker, "pub") as pub:
            await pub.publish("kept", b"while away", qos=1)
        async with await connect(broker, "keeper", clean_start=False, session_expiry=0) as c:
            return c.connack.session_present, await next_message(c)

    present, message = run(scenario)
    assert present
    assert (message.payload, message.qos) == (b"while away", 1)


def test_unsubscribe_reports_each_filter(broker: Any) -> None:
    async def scenario() -> tuple[int, ...]:
        async with await connect(broker, "unsub") as client:
            await client.subscribe("here")
            unsuback = await client.unsubscribe("here", "never")
            return unsuback.reason_codes

    assert run(scenario) == (0x00, 0x11)


# --------------------------------------------------------------------------------------------
# MQTTClient against a scripted server


class Peer:
    """The server end of one connection: the test receives and sends its packets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = Framer()

    async def receive(self) -> Packet:
        while (packet := self.framer.next_packet()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError("client closed the connection")
            self.framer.feed(data)
        return packet

    async def send(self, *packets: Packet) -> None:
        for packet in packets:
            self.writer.write(encode(packet, self.framer.protocol_level))
        await self.writer.drain()

    async def wait_eof(self) -> None:
        while await self.reader.read(65536):
            pass


class ScriptedServer:
    """Listens on an ephemeral port and hands each accepted connection to the test."""

    def __init__(self) -> None:
        self._accepted: asyncio.Queue[Peer] = asyncio.Queue()
        self._peers: list[Peer] = []

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port: int = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for peer in self._peers:
            peer.writer.close()
        self._server.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self._peers.append(peer)
        self._accepted.put_nowait(peer)

    async def connect(self, **options: Any) -> tuple[MQTTClient, Peer]:
        """Connect an MQTTClient and accept its CONNECT."""
        connecting = asyncio.create_task(MQTTClient.connect("127.0.0.1", self.port, "c", **options))
        peer = await self._accepted.get()
        assert isinstance(await peer.receive(), Connect)
        await peer.send(ConnAck())
        return await connecting, peer


def test_server_topic_aliases_are_resolved() -> None:
    async def scenario() -> tuple[list[str], Packet]:
        async with ScriptedServer() as server:
            client, peer = await server.connect(properties=Properties(topic_alias_maximum=2))
            await peer.send(
                Publish("a/b", b"1", properties=Properties(topic_alias=1)),
                Publish("", b"2", properties=Properties(topic_alias=1)),
                Publish("c", b"3", properties=Properties(topic_alias=2)),
                Publish("", b"4", properties=Properties(topic_alias=1)),
            )
            topics = [(await next_message(client)).topic for _ in range(4)]
            await peer.send(Publish("", b"5", properties=Properties(topic_alias=3)))
            refusal = await peer.receive()
            await client.closed.wait()
            return topics, refusal

    topics, refusal = run(scenario)
    assert topics == ["a/b", "a/b", "c", "a/b"]
    assert isinstance(refusal, Disconnect) and refusal.reason_code == 0x94


def test_topic_alias_refused_when_not_announced() -> None:
    async def scenario() -> Packet:
        async with ScriptedServer() as server:
            _, peer = await server.connect()
            await peer.send(Publish("a", properties=Properties(topic_alias=1)))
            return await peer.receive()

    refusal = run(scenario)
    assert isinstance(refusal, Disconnect) and refusal.reason_code == 0x94


def test_qos2_duplicate_is_delivered_once() -> None:
    async def scenario() -> tuple[list[Packet], list[bytes]]:
        async with ScriptedServer() as server:
            client, peer = await server.connect()
            replies = []
            await peer.send(Publish("q", b"once", qos=2, packet_id=7))
            replies.append(await peer.receive())
            await peer.send(Publish("q", b"once", qos=2, dup=True, packet_id=7))
            replies.append(await peer.receive())
            await peer.send(PubRel(7), Publish("q", b"marker"))
            replies.append(await peer.receive())
            payloads = [(await next_message(client)).payload for _ in range(2)]
            await client.disconnect()
            return replies, payloads

    replies, payloads = run(scenario)
    assert replies == [PubRec(7), PubRec(7), PubComp(7)]
    assert payloads == [b"once", b"marker"]


def test_rejected_publish_raises_and_frees_its_packet_id() -> None:
    async def scenario() -> tuple[PublishError, PubAck | PubComp | None]:
        async with ScriptedServer() as server:
            client, peer = await server.connect()
            publishing = asyncio.create_task(client.publish("t", b"x", qos=1))
            first = await peer.receive()
            assert isinstance(first, Publish)
            await peer.send(PubAck(first.packet_id, 0x87))
            with pytest.raises(PublishError) as rejected:
                await publishing
            publishing = asyncio.create_task(client.publish("t", b"y", qos=2))
            second = await peer.receive()
            assert isinstance(second, Publish)
            await peer.send(PubRec(second.packet_id))
            assert await peer.receive() == PubRel(second.packet_id)
            await peer.send(PubComp(second.packet_id))
            return rejected.value, await publishing

    rejected, completed = run(scenario)
    assert rejected.reason_code == 0x87 and "not authorized" in str(rejected)
    assert isinstance(completed, PubComp)


def test_keep_alive_pings_and_gives_up_without_pingresp() -> None:
    async def scenario() -> tuple[Packet, Packet, str]:
        async with ScriptedServer() as server:
            client, peer = await server.connect(keep_alive=1)
            first = await peer.receive()
            await peer.send(PingResp())
            second = await peer.receive()
            await client.closed.wait()
            return first, second, client.close_reason

    first, second, reason = run(scenario)
    assert first == second == PingReq()
    assert "PINGREQ" in reason


# --------------------------------------------------------------------------------------------
# roost pub / roost sub as subprocesses


async def roost(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    """Run ``roost ARGS`` to completion; its exit status, stdout and stderr."""
    process = await spawn(*args)
    out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out, err


async def spawn(*args: str) -> asyncio.subprocess.Process:
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roost", *args, stdin=pipe, stdout=pipe, stderr=pipe
    )


def test_sub_prints_messages_from_pub(broker: Any) -> None:
    port = str(broker.port)

    async def scenario() -> tuple[int, bytes]:
        # A retained message shows when the subscription is in place: it arrives after SUBACK.
        status, _, err = await roost(
            "pub", "-p", port, "-t", "cli/t", "-m", "first", "-r", "-q", "1"
        )
        assert status == 0, err
        sub = await spawn("sub", "-p", port, "-t", "cli/#", "-C", "2", "-v", "-q", "1")
        try:
            assert sub.stdout is not None
            first = await sub.stdout.readline()
            assert first == b"cli/t first\n", await sub.communicate()
            status, _, err = await roost("pub", "-p", port, "-t", "cli/t", "-m", "second")
            assert status == 0, err
            rest, _ = await sub.communicate()
            assert sub.returncode is not None
            return sub.returncode, first + rest
        finally:
            if sub.returncode is None:
                sub.kill()
                await sub.wait()

    assert run(scenario) == (0, b"cli/t first\ncli/t second\n")


def test_pub_sends_each_stdin_line(broker: Any) -> None:
    async def scenario() -> list[bytes]:
        async with await connect(broker, "lines") as client:
            await client.subscribe("lines", qos=1)
            status, _, err = await roost(
                "pub", "-p", str(broker.port), "-t", "lines", "-l", "-q", "1",
                "--user-property", "k", "v",
                stdin=b"one\n\ntwo\r\nthree",
            )  # fmt: skip
            assert status == 0, err
            messages = [await next_message(client) for _ in range(3)]
            assert all(m.properties.user_properties == (("k", "v"),) for m in messages)
            return [m.payload for m in messages]

    assert run(scenario) == [b"one", b"two", b"three"]


def test_sub_timeout_without_messages_fails(broker: Any) -> None:
    status, out, _ = run(lambda: roost("sub", "-p", str(broker.port), "-t", "quiet", "-W", "0.3"))
    assert (status, out) == (1, b"")


def test_pub_to_closed_port_fails_clearly() -> None:
    with socket.socket() as bound:  # bound but not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        status, _, err = run(lambda: roost("pub", "-p", str(port), "-t", "t", "-m", "x"))
    assert status == 1
    assert f"roost pub: error: cannot connect to 127.0.0.1:{port}" in err.decode()
