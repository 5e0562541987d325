"""EpollServer and EpollTransport on real sockets, under uvloop and asyncio's own loop: what
the connection shells rely on of an asyncio TCP transport (order, back-pressure, close,
abort, half-close, pausing, resets) holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from roost.transport.epoll import EVENTS_PER_CALL, EpollServer, EpollTransport

TIMEOUT = 10.0


class Recorder(asyncio.Protocol):
    """Records what the transport tells it; ``fail_on`` makes data_received raise."""

    def __init__(self, fail_on: bytes | None = None, keep_open_at_eof: bool = False) -> None:
        self.transport: EpollTransport | None = None
        self.received = bytearray()
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()
        self._fail_on = fail_on
        self._keep_open_at_eof = keep_open_at_eof

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, EpollTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._fail_on is not None and self._fail_on in data:
            raise ValueError("bad input")
        self.received += data
        self.changed.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.changed.set()
        return self._keep_open_at_eof

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.changed.set()

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


class Served:
    """An EpollServer on an ephemeral port whose connections are Recorders."""

    def __init__(self, server: EpollServer, protocols: asyncio.Queue[Recorder]) -> None:
        self.server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self._protocols = protocols

    @classmethod
    async def start(cls, protocol_class: type[Recorder] = Recorder, **recorder: Any) -> Served:
        protocols: asyncio.Queue[Recorder] = asyncio.Queue()

        def made() -> Recorder:
            protocol = protocol_class(**recorder)
            protocols.put_nowait(protocol)
            return protocol

        server = await EpollServer.listen(made, "127.0.0.1", 0)
        await server.start_serving()
        return cls(server, protocols)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Recorder]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        async with asyncio.timeout(TIMEOUT):
            protocol = await self._protocols.get()
        return reader, writer, protocol


LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    def running(scenario: Awaitable[Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(scenario)  # type: ignore[arg-type]

    return running


def test_bytes_go_both_ways_in_order_and_the_addresses_are_answered(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        reader, writer, protocol = await served.connect()
        for i in range(100):
            writer.write(b"%d," % i)
        await protocol.wait_for(lambda: protocol.received.endswith(b"99,"))
        assert bytes(protocol.received) == b"".join(b"%d," % i for i in range(100))
        transport = protocol.transport
        assert transport is not None
        for i in range(100):
            transport.write(b"<%d>" % i)
        expected = b"".join(b"<%d>" % i for i in range(100))
        assert await reader.readexactly(len(expected)) == expected
        assert transport.get_extra_info("peername") == writer.get_extra_info("sockname")
        assert transport.get_extra_info("sockname") == ("127.0.0.1", served.port)
        nodelay = transport.get_extra_info("socket")
        assert nodelay.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        nodelay.close()  # a duplicate: the connection stays open
        transport.write(b"still open")
        assert await reader.readexactly(10) == b"still open"
        writer.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["eof", "lost"]

    run(scenario())


def test_writes_the_client_does_not_read_pause_the_protocol_and_arrive_whole(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        reader, writer, protocol = await served.connect()
        transport = protocol.transport
        assert transport is not None
        transport.set_write_buffer_limits(high=65_536, low=16_384)
        chunk = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        while "pause_writing" not in protocol.events:
            transport.write(chunk)
            sent += len(chunk)
            assert sent < 256 * len(chunk), "the socket never filled up"
        assert transport.get_write_buffer_size() > 65_536
        transport.write(b"end")  # buffered after the rest
        received = await reader.readexactly(sent + 3)
        assert received == chunk * (sent // len(chunk)) + b"end"
        await protocol.wait_for(lambda: "resume_writing" in protocol.events)
        assert protocol.events == ["pause_writing", "resume_writing"]
        assert transport.get_write_buffer_size() == 0
        writer.close()
        await asyncio.wait_for(protocol.lost, TIMEOUT)

    run(scenario())


def test_close_sends_what_is_buffered_then_closes_the_descriptor(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        reader, writer, protocol = await served.connect()
        transport = protocol.transport
        assert transport is not None
        data = os.urandom(4_000_000)  # more than the socket takes at once
        transport.write(data)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        assert transport.is_closing()
        transport.write(b"after close")  # dropped, as asyncio does
        assert await reader.read() == data  # all of it, then EOF
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert served.server.transports.count(None) == len(served.server.transports)
        writer.close()

    run(scenario())


def test_abort_drops_the_buffer_and_loses_the_connection_once(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        reader, writer, protocol = await served.connect()
        transport = protocol.transport
        assert transport is not None
        transport.write(os.urandom(4_000_000))
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        transport.abort()
        transport.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["pause_writing", "lost"]  # once, and no resume_writing
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await reader.readexactly(4_000_000)
        writer.close()

    run(scenario())


def test_write_eof_half_closes_and_input_still_arrives(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        reader, writer, protocol = await served.connect()
        transport = protocol.transport
        assert transport is not None
        transport.write(b"last words")
        transport.write_eof()
        with pytest.raises(RuntimeError):
            transport.write(b"more")
        assert await reader.read() == b"last words"  # then EOF
        writer.write(b"the client goes on")
        await protocol.wait_for(lambda: protocol.received == b"the client goes on")
        writer.close()
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        assert protocol.events == ["eof", "lost"]

    run(scenario())


def test_input_waits_while_reading_is_paused_and_an_eof_is_not_lost(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        _, writer, protocol = await served.connect()
        transport = protocol.transport
        assert transport is not None
        transport.pause_reading()
        assert not transport.is_reading()
        writer.write(b"held")
        writer.close()
        # another connection's round trip: the loop has polled since "held" arrived
        _, other, other_protocol = await served.connect()
        other.write(b"ping")
        await other_protocol.wait_for(lambda: other_protocol.received == b"ping")
        assert protocol.received == b"" and protocol.events == []
        transport.resume_reading()
        await protocol.wait_for(lambda: "eof" in protocol.events)
        assert protocol.received == b"held"
        assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
        other.close()

    run(scenario())


def test_a_reset_loses_the_connection_with_the_error_and_keeps_the_peer(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        client = socket.create_connection(("127.0.0.1", served.port))
        async with asyncio.timeout(TIMEOUT):
            protocol = await served._protocols.get()
        transport = protocol.transport
        assert transport is not None
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer = client.getsockname()
        client.close()  # with linger 0: a reset
        assert isinstance(await asyncio.wait_for(protocol.lost, TIMEOUT), ConnectionResetError)
        assert transport.get_extra_info("peername") == peer

    run(scenario())


def test_a_failing_protocol_loses_its_own_connection_only(run, caplog) -> None:
    async def scenario() -> None:
        served = await Served.start(fail_on=b"boom")
        _, bad, bad_protocol = await served.connect()
        _, good, good_protocol = await served.connect()
        bad.write(b"boom")
        assert isinstance(await asyncio.wait_for(bad_protocol.lost, TIMEOUT), ValueError)
        good.write(b"fine")
        await good_protocol.wait_for(lambda: good_protocol.received == b"fine")
        assert not good_protocol.lost.done()
        good.close()
        bad.close()

    run(scenario())
    assert "failed" in caplog.text


class LoopTurns:
    """Counts the turns of the running loop: a callback that schedules itself again."""

    def __init__(self) -> None:
        self.count = 0
        self._handle = asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._turn)

    def stop(self) -> None:
        self._handle.cancel()


def test_a_storm_of_ready_connections_is_served_over_several_loop_turns(run) -> None:
    """More connections ready at once than EVENTS_PER_CALL are served in batches, the loop
    turning in between (its timers and other sockets, the cluster's heartbeat among
    them, are not held back until the whole storm is served)."""

    async def scenario() -> None:
        turns = LoopTurns()
        served_in: list[int] = []

        class TurnRecorder(Recorder):
            def data_received(self, data: bytes) -> None:
                served_in.append(turns.count)
                super().data_received(data)

        served = await Served.start(TurnRecorder)
        clients = [await served.connect() for _ in range(EVENTS_PER_CALL + 20)]
        for _, writer, _ in clients:  # all before the loop polls again: all ready at once
            writer.write(b"x")
        async with asyncio.timeout(TIMEOUT):
            while len(served_in) < len(clients):
                await asyncio.sleep(0.01)
        turns.stop()
        assert len(set(served_in)) >= 2, f"{len(clients)} connections served in one turn"
        for _, writer, _ in clients:
            writer.close()

    run(scenario())


def test_close_stops_accepting_and_the_epoll_set_goes_with_the_last_connection(run) -> None:
    async def scenario() -> None:
        served = await Served.start()
        reader, writer, protocol = await served.connect()
        server = served.server
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", served.port)
        transport = protocol.transport
        assert transport is not None
        transport.write(b"served on")
        assert await reader.readexactly(9) == b"served on"
        assert not server.epoll.closed
        writer.close()
        await asyncio.wait_for(protocol.lost, TIMEOUT)
        assert server.epoll.closed

    run(scenario())


def test_out_of_descriptors_accepting_rests_and_then_goes_on(run, caplog) -> None:
    """EMFILE at accept is logged; the client waiting in the backlog is accepted once
    descriptors are free again (after ACCEPT_RETRY_SECONDS), and the server goes on."""

    async def scenario() -> None:
        served = await Served.start()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers: list[int] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
            with contextlib.suppress(OSError):
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            os.close(fillers.pop())  # room for the client's socket, none for the server's
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", served.port))
            async with asyncio.timeout(TIMEOUT):
                while "cannot accept connections" not in caplog.text:
                    await asyncio.sleep(0.01)
            assert served._protocols.empty()
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        async with asyncio.timeout(TIMEOUT):
            protocol = await served._protocols.get()
        client.setblocking(True)
        client.sendall(b"in at last")
        await protocol.wait_for(lambda: protocol.received == b"in at last")
        _, writer, other = await served.connect()
        writer.write(b"and the next")
        await other.wait_for(lambda: other.received == b"and the next")
        client.close()
        writer.close()

    run(scenario())
