"""An asyncio MQTT 3.1.1 / 5.0 client: one TCP connection, one reader task.

Usage::

    async with await MQTTClient.connect("127.0.0.1", 1883, "me") as client:
        await client.subscribe("a/#", qos=1)
        await client.publish("a/b", b"hello", qos=1)
        async for message in client.messages():
            ...

In-flight state (packet identifiers, QoS 2 exchanges) lives with the connection: a client
resuming a session on a new connection does not retransmit what the old one left unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, TypeVar

from roost.address import split_host_port
from roost.client.errors import (
    ConnectError,
    ConnectionLost,
    PublishError,
    RedirectError,
    reason_name,
)
from roost.client.packet_ids import PacketIds
from roost.codec import (
    MQTT_5,
    NO_PROPERTIES,
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
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from roost.errors import ProtocolError, ReasonCode

MAX_PACKET_SIZE = 268_435_460  # the largest packet MQTT can frame: 1 + 4 + 268,435,455
READ_SIZE = 65536
FAILURE = 0x80  # reason codes from here up are failures [MQTT 2.4]
MAX_REDIRECTS = 3  # servers a connect follows after the first
MAX_RECEIVE = 65535  # the Receive Maximum in force when a CONNACK names none [MQTT 3.2.2.3.3]

Reply = TypeVar("Reply", PubAck, PubRec, PubComp, SubAck, UnsubAck)


class MQTTClient:
    """A connected MQTT client; create it with :meth:`connect`.

    ``closed`` is set when the connection ends, for whatever reason, and ``close_reason``
    then says why; a DISCONNECT the server sent before closing is kept in
    ``disconnect_packet``.
    """

    connack: ConnAck

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol_level: int,
        client_id: str,
        properties: Properties,
    ) -> None:
        self.protocol_level = protocol_level
        self.client_id = client_id
        self.closed = asyncio.Event()
        self.disconnect_packet: Disconnect | None = None
        self.close_reason = ""
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._framer = Framer(properties.maximum_packet_size or MAX_PACKET_SIZE)
        self._framer.protocol_level = protocol_level
        self._topic_alias_maximum = properties.topic_alias_maximum or 0
        self._topic_aliases: dict[int, str] = {}
        self._packet_ids = PacketIds()
        self._pending: dict[int, tuple[type[Packet], asyncio.Future[Packet]]] = {}
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        self._send_quota = asyncio.Semaphore(MAX_RECEIVE)
        self._messages: asyncio.Queue[Publish | None] = asyncio.Queue()
        self._awaiting_pubrel: set[int] = set()
        self._last_sent = self._loop.time()
        self._awaiting_pingresp = False
        self._keep_alive_task: asyncio.Task[None] | None = None
        self._reader_task = self._loop.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        client_id: str = "",
        *,
        protocol_level: int = MQTT_5,
        clean_start: bool = True,
        keep_alive: int = 60,
        session_expiry: int | None = None,
        username: str | None = None,
        password: str | bytes | None = None,
        will: Will | None = None,
        properties: Properties | None = None,
        timeout: float | None = 10.0,
        max_redirects: int = MAX_REDIRECTS,
        tls: ssl.SSLContext | None = None,
    ) -> MQTTClient:
        """Open a connection and complete the CONNECT/CONNACK handshake within ``timeout``.

        ``session_expiry`` and ``properties`` apply to MQTT 5 only. A server that answers
        "use another server" or "server moved" with a Server Reference is followed, at most
        ``max_redirects`` times. With ``tls``, the connection is MQTT over TLS with that
        context (the server's certificate checked as it says). Raises ConnectError if the
        server refuses (RedirectError if the redirects loop or go on), OSError if it cannot
        be reached.
        """
        properties = properties or NO_PROPERTIES
        if session_expiry is not None:
            properties = replace(properties, session_expiry_interval=session_expiry)
        if protocol_level < MQTT_5:
            properties = NO_PROPERTIES
        if isinstance(password, str):
            password = password.encode()
        connect = Connect(
            client_id,
            protocol_level,
            clean_start,
            keep_alive,
            username,
            password,
            will,
            properties,
        )
        visited = [(host, port)]
        while True:
            try:
                return await cls._connect_to(host, port, connect, timeout, tls)
            except ConnectError as exc:
                if exc.server_reference is None or max_redirects <= 0:
                    raise
                host, port = _first_server(exc.server_reference, port)
                if (host, port) in visited or len(visited) > max_redirects:
                    raise RedirectError(visited, (host, port), max_redirects) from exc
                visited.append((host, port))

    @classmethod
    async def _connect_to(
        cls,
        host: str,
        port: int,
        connect: Connect,
        timeout: float | None,
        tls: ssl.SSLContext | None,
    ) -> MQTTClient:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            client = cls(
                reader, writer, connect.protocol_level, connect.client_id, connect.properties
            )
            try:
                await client._handshake(connect)
            except BaseException:
                client._close()
                raise
        return client

    async def _handshake(self, connect: Connect) -> None:
        """Send CONNECT, wait for CONNACK and adopt what the server decided."""
        await self.send(connect)
        self.connack = connack = await self._connack
        if connack.reason_code:
            raise ConnectError(connack.reason_code, self.protocol_level, connack.properties)
        properties = connack.properties
        self.client_id = properties.assigned_client_identifier or self.client_id
        self._send_quota = asyncio.Semaphore(properties.receive_maximum or MAX_RECEIVE)
        keep_alive = properties.server_keep_alive
        if keep_alive is None:
            keep_alive = connect.keep_alive
        if keep_alive:
            self._keep_alive_task = self._loop.create_task(self._keep_alive_loop(keep_alive))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.closed.is_set():
            await self.disconnect()

    async def send(self, packet: Packet) -> None:
        """Write one packet and wait until the transport accepts more; ConnectionLost if closed."""
        self._write(packet)
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise ConnectionLost(f"connection lost: {exc}") from exc

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> PubAck | PubComp | None:
        """Publish and, for QoS 1 and 2, wait for the flow to complete.

        Returns the PUBACK (QoS 1), PUBCOMP (QoS 2) or None (QoS 0); raises PublishError
        if the server answers with a failure reason code.
        """
        if isinstance(payload, str):
            payload = payload.encode()
        properties = properties or NO_PROPERTIES
        if not qos:
            await self.send(Publish(topic, payload, 0, retain, properties=properties))
            return None
        async with self._send_quota:
            # An identifier is freed only when its flow completes: if the wait is cancelled
            # the server may still hold it, so it stays allocated for this connection.
            packet_id = self._packet_ids.allocate()
            publish = Publish(
                topic, payload, qos, retain, packet_id=packet_id, properties=properties
            )
            ack: PubAck | PubRec | PubComp
            if qos == 1:
                ack = await self._request(publish, packet_id, PubAck)
            else:
                ack = await self._request(publish, packet_id, PubRec)
                if ack.reason_code < FAILURE:
                    ack = await self._request(PubRel(packet_id), packet_id, PubComp)
            self._packet_ids.release(packet_id)
        if isinstance(ack, PubRec) or ack.reason_code >= FAILURE:
            raise PublishError(ack)
        return ack

    async def subscribe(
        self,
        *subscriptions: Subscription | str,
        qos: int = 0,
        properties: Properties | None = None,
    ) -> SubAck:
        """Subscribe to filters (a plain string gets ``qos``); returns the SUBACK as sent."""
        entries = tuple(
            Subscription(entry, qos) if isinstance(entry, str) else entry for entry in subscriptions
        )
        packet_id = self._packet_ids.allocate()
        subscribe = Subscribe(packet_id, entries, properties or NO_PROPERTIES)
        suback = await self._request(subscribe, packet_id, SubAck)
        self._packet_ids.release(packet_id)
        return suback

    async def unsubscribe(
        self, *topic_filters: str, properties: Properties | None = None
    ) -> UnsubAck:
        """Unsubscribe from filters; returns the UNSUBACK as sent."""
        packet_id = self._packet_ids.allocate()
        unsubscribe = Unsubscribe(packet_id, topic_filters, properties or NO_PROPERTIES)
        unsuback = await self._request(unsubscribe, packet_id, UnsubAck)
        self._packet_ids.release(packet_id)
        return unsuback

    async def messages(self) -> AsyncIterator[Publish]:
        """Received PUBLISH packets, in order, until the connection ends."""
        while (message := await self._messages.get()) is not None:
            yield message
        self._messages.put_nowait(None)  # end every other iterator too

    async def disconnect(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        """Send DISCONNECT, close the connection and wait for the client's tasks to end."""
        with contextlib.suppress(ConnectionLost):
            await self.send(Disconnect(reason_code, properties or NO_PROPERTIES))
        self._close("disconnected by the client")
        await asyncio.gather(self._reader_task, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _request(self, packet: Packet, packet_id: int, reply_type: type[Reply]) -> Reply:
        """Send ``packet`` and wait for the ``reply_type`` packet answering ``packet_id``."""
        future: asyncio.Future[Packet] = self._loop.create_future()
        self._pending[packet_id] = (reply_type, future)
        try:
            await self.send(packet)
            reply = await future
        finally:
            if self._pending.get(packet_id, (None, None))[1] is future:
                del self._pending[packet_id]
        assert isinstance(reply, reply_type)  # checked by _resolve
        return reply

    def _write(self, packet: Packet) -> None:
        if self.closed.is_set():
            raise ConnectionLost(self.close_reason)
        self._writer.write(encode(packet, self.protocol_level))
        self._last_sent = self._loop.time()

    async def _read_loop(self) -> None:
        """Feed the framer from the socket and handle each packet until the connection ends."""
        try:
            while data := await self._reader.read(READ_SIZE):
                self._framer.feed(data)
                for packet in self._framer:
                    self._handle(packet)
        except ProtocolError as exc:
            self._protocol_error(exc)
        except OSError as exc:
            self._close(f"connection lost: {exc}")
        except ConnectionLost:
            pass
        finally:
            self._close()

    def _handle(self, packet: Packet) -> None:
        """Act on one packet from the server; acknowledgements are written without waiting."""
        self._awaiting_pingresp = False
        if isinstance(packet, Publish):
            self._receive_publish(packet)
        elif isinstance(packet, PubRel):
            known = packet.packet_id in self._awaiting_pubrel
            self._awaiting_pubrel.discard(packet.packet_id)
            reason = 0 if known else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
            self._write(PubComp(packet.packet_id, reason))
        elif isinstance(packet, PubAck | PubRec | PubComp | SubAck | UnsubAck):
            self._resolve(packet)
        elif isinstance(packet, ConnAck) and not self._connack.done():
            self._connack.set_result(packet)
        elif isinstance(packet, Disconnect):
            self.disconnect_packet = packet
            self._close()
        elif not isinstance(packet, PingResp):
            raise ProtocolError(f"unexpected {type(packet).__name__} from the server")

    def _receive_publish(self, publish: Publish) -> None:
        """Queue a message once and acknowledge it: PUBACK for QoS 1, PUBREC for QoS 2."""
        publish = self._resolve_topic_alias(publish)
        if publish.qos == 2:
            if publish.packet_id not in self._awaiting_pubrel:
                self._awaiting_pubrel.add(publish.packet_id)
                self._messages.put_nowait(publish)
            self._write(PubRec(publish.packet_id))
            return
        self._messages.put_nowait(publish)
        if publish.qos == 1:
            self._write(PubAck(publish.packet_id))

    def _resolve_topic_alias(self, publish: Publish) -> Publish:
        """Register or look up a server topic alias [MQTT 3.3.2.3.4]."""
        alias = publish.properties.topic_alias
        if alias is None:
            if not publish.topic:
                raise ProtocolError("PUBLISH without topic name or topic alias")
            return publish
        if not 0 < alias <= self._topic_alias_maximum:
            raise ProtocolError(
                f"topic alias {alias} outside 1..{self._topic_alias_maximum}",
                ReasonCode.TOPIC_ALIAS_INVALID,
            )
        if publish.topic:
            self._topic_aliases[alias] = publish.topic
            return publish
        topic = self._topic_aliases.get(alias)
        if topic is None:
            raise ProtocolError(f"topic alias {alias} was never set")
        return replace(publish, topic=topic)

    def _resolve(self, reply: PubAck | PubRec | PubComp | SubAck | UnsubAck) -> None:
        """Hand an acknowledgement to the request waiting for it; late ones are dropped."""
        pending = self._pending.get(reply.packet_id)
        if pending is None:
            return
        reply_type, future = pending
        if not isinstance(reply, reply_type):
            raise ProtocolError(
                f"{type(reply).__name__} for packet id {reply.packet_id}, "
                f"expected {reply_type.__name__}"
            )
        del self._pending[reply.packet_id]
        if not future.done():  # a cancelled request leaves _pending only when it next runs
            future.set_result(reply)

    def _protocol_error(self, error: ProtocolError) -> None:
        """Tell an MQTT 5 server why the connection ends [MQTT 4.13.2], then close it."""
        if self.protocol_level >= MQTT_5 and not self.closed.is_set():
            self._write(Disconnect(error.reason_code, Properties(reason_string=str(error))))
        self._close(f"protocol error: {error}")

    async def _keep_alive_loop(self, interval: int) -> None:
        """PINGREQ after ``interval`` idle seconds; close if the previous one got no answer."""
        while True:
            await asyncio.sleep(self._last_sent + interval - self._loop.time())
            if self._loop.time() - self._last_sent < interval:
                continue
            if self._awaiting_pingresp:
                self._close(f"no answer to PINGREQ within {interval}s")
                return
            self._awaiting_pingresp = True
            self._write(PingReq())

    def _close(self, reason: str | None = None) -> None:
        """End the connection: fail waiting requests, end message iterators, stop tasks."""
        if self.closed.is_set():
            return
        self.closed.set()
        self._writer.close()
        self.close_reason = reason = reason or self._close_reason()
        waiting: list[asyncio.Future[Any]] = [self._connack]
        waiting += (future for _, future in self._pending.values())
        self._pending.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(ConnectionLost(reason))
        self._messages.put_nowait(None)
        current = asyncio.current_task()
        for task in (self._reader_task, self._keep_alive_task):
            if task is not None and task is not current:
                task.cancel()

    def _close_reason(self) -> str:
        if self.disconnect_packet is None:
            return "connection closed by the server"
        return f"server sent DISCONNECT {reason_name(self.disconnect_packet.reason_code)}"


def _first_server(reference: str, port: int) -> tuple[str, int]:
    """The first server of a Server Reference (space-separated ``HOST[:PORT]``; the port
    defaults to the one just used)."""
    try:
        return split_host_port(reference.split()[0], port)
    except (ValueError, IndexError) as exc:
        raise ProtocolError(f"unusable Server Reference {reference!r}") from exc
