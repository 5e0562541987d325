"""Plain TCP listeners served from one epoll set each, for connections that cost little.

A uvloop TCP transport costs about 1,270 bytes per connection (its ``TCPTransport``, the
libuv handle, bound methods, a write-buffer list, a weak reference), more than Roost keeps
per idle client. Here a listener owns an epoll set that the event loop watches as one
reader; every connection is an :class:`EpollTransport` of nine slots over the bare file
descriptor, found by its number in a list. What an idle connection costs the I/O layer
drops to about 200 bytes.

An ``EpollTransport`` behaves like asyncio's TCP transport where Roost's connection
shells (``roost.transport.stream``) rely on it: a write goes to the socket at once and only
what the socket does not take is buffered (with ``pause_writing``/``resume_writing`` at
the buffer limits); ``close`` sends what is buffered first, ``abort`` does not;
``write_eof`` half-closes after the buffer; ``connection_lost`` comes in a later
callback, and the descriptor is closed after it, so a connection's number is not reused
while its events may still be in a batch. A connection is in the epoll set only while it
wants something (input, or room for buffered output): a paused, idle one is not woken by
a hang-up it cannot act on (it leaves the set at the first event after the pause).

TLS listeners keep asyncio's transports (the handshake and the record layer are theirs);
where there is no epoll (not Linux) every listener does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
from collections.abc import Callable
from typing import Any, cast

from roost.address import host_port

log = logging.getLogger("roost.transport")

AVAILABLE = hasattr(select, "epoll")
READ_SIZE = 262_144  # as uvloop's read buffer
ACCEPTS_PER_CALL = 128  # connections accepted per wakeup of a listening socket
# Ready connections served per wakeup: the loop then turns, so that a storm (thousands of
# clients closing at once) leaves room for its timers and other sockets (the cluster's
# heartbeat) between batches, not after the whole storm.
EVENTS_PER_CALL = 256
ACCEPT_RETRY_SECONDS = 1.0  # out of descriptors: how long accepting rests, as asyncio's
WRITE_LIMIT_HIGH = 65_536  # asyncio's defaults, until set_write_buffer_limits
_IN = select.EPOLLIN if AVAILABLE else 1
_OUT = select.EPOLLOUT if AVAILABLE else 4
_HANG_UP = (select.EPOLLHUP | select.EPOLLERR) if AVAILABLE else 0x18
_REGISTERED = _IN | _OUT  # the state's low bits: what the epoll set watches for
_READING = 0x100  # the protocol wants input (not paused)
_CLOSING = 0x200  # close or abort was called: no more writes, no more input
_EOF = 0x400  # write_eof was called: shut the output once the buffer is out
_WRITING_PAUSED = 0x800  # pause_writing was called and resume_writing not yet
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class EpollTransport(asyncio.Transport):
    """One accepted connection: asyncio's ``Transport`` over a descriptor in an epoll set."""

    __slots__ = ("_address", "_fd", "_high", "_low", "_out", "_protocol", "_server", "_state")

    def __init__(
        self, server: EpollServer, fd: int, address: Any, protocol: asyncio.Protocol
    ) -> None:
        # asyncio.BaseTransport.__init__ is not called: it would give every connection an
        # "extra" dict, and get_extra_info is answered from the slots.
        self._server = server
        self._fd = fd  # -1 once closed
        self._address = address  # IPv4 packed in an int (host << 16 | port), else as given
        self._protocol = protocol
        self._out: bytearray | None = None  # what the socket has not taken yet
        self._state = _READING
        self._high = WRITE_LIMIT_HIGH
        self._low = WRITE_LIMIT_HIGH // 4

    # -- asyncio.Transport -------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            address = self._address
            if isinstance(address, int):
                return socket.inet_ntoa((address >> 16).to_bytes(4, "big")), address & 0xFFFF
            return address
        if self._fd < 0:
            return default
        if name == "sockname":
            return _ask_socket(self._fd, socket.socket.getsockname)
        if name == "socket":  # a duplicate: closing it leaves the connection open
            return socket.socket(fileno=os.dup(self._fd))
        return default

    def is_closing(self) -> bool:
        return bool(self._state & _CLOSING)

    def close(self) -> None:
        if self._state & _CLOSING:
            return
        self._state = (self._state | _CLOSING) & ~_READING
        if self._out is None:
            self._lose(None)
        else:
            self._watch()

    def abort(self) -> None:
        self._lose(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def is_reading(self) -> bool:
        return bool(self._state & _READING)

    def pause_reading(self) -> None:
        # The epoll set keeps watching for input until some arrives (see EpollServer._poll):
        # a connection paused and resumed between two polls (an input budget used up in
        # one loop turn, given back in the next) then costs no system call.
        self._state &= ~_READING

    def resume_reading(self) -> None:
        if not self._state & (_READING | _CLOSING):
            self._state |= _READING
            self._watch()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = WRITE_LIMIT_HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._writing_maybe_full()

    def get_write_buffer_size(self) -> int:
        return 0 if self._out is None else len(self._out)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state & (_CLOSING | _EOF):
            if self._state & _EOF and not self._state & _CLOSING:
                raise RuntimeError("cannot write after write_eof()")
            return
        if not data:
            return
        out = self._out
        if out is not None:
            out += data
        else:
            sent = self._send(data)
            if sent < 0 or sent == len(data):
                return
            self._out = bytearray(memoryview(data)[sent:])
            self._watch()
        self._writing_maybe_full()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._state & (_CLOSING | _EOF):
            return
        self._state |= _EOF
        if self._out is None:
            self._shut_output()

    # -- driven by the server's epoll set ------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        protocol = self._protocol
        try:
            if data:
                protocol.data_received(data)
            elif not protocol.eof_received():
                self.close()
            else:
                self.pause_reading()  # the protocol keeps its output open: no more input
        except Exception as exc:
            log.exception("the connection from %s failed", self._peer())
            self._lose(exc)

    def _write_ready(self) -> None:
        out = self._out
        assert out is not None
        sent = self._send(out)
        if sent <= 0:
            return
        del out[:sent]
        if out:
            self._writing_maybe_free()
            return
        self._out = None
        self._watch()
        self._writing_maybe_free()
        if self._state & _CLOSING:
            self._lose(None)
        elif self._state & _EOF:
            self._shut_output()

    # -- inside ------------------------------------------------------------------------------

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the socket takes of ``data``: the bytes taken (0 when it takes
        none now), or -1 when it failed and the connection is being lost."""
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fail(exc)
            return -1

    def _watch(self) -> None:
        """Bring the epoll set in line with what the connection waits for."""
        state = self._state
        if self._fd < 0:
            return
        want = (_IN if state & _READING else 0) | (_OUT if self._out is not None else 0)
        have = state & _REGISTERED
        if want == have:
            return
        epoll = self._server.epoll
        if not have:
            epoll.register(self._fd, want)
        elif not want:
            epoll.unregister(self._fd)
        else:
            epoll.modify(self._fd, want)
        self._state = state & ~_REGISTERED | want

    def _writing_maybe_full(self) -> None:
        if (
            self._out is not None
            and len(self._out) > self._high
            and not self._state & _WRITING_PAUSED
        ):
            self._state |= _WRITING_PAUSED
            self._tell_protocol("pause_writing")

    def _writing_maybe_free(self) -> None:
        if self._state & _WRITING_PAUSED and self.get_write_buffer_size() <= self._low:
            self._state &= ~_WRITING_PAUSED
            self._tell_protocol("resume_writing")

    def _tell_protocol(self, what: str) -> None:
        try:
            getattr(self._protocol, what)()
        except Exception:
            log.exception("protocol.%s() of the connection from %s failed", what, self._peer())

    def _shut_output(self) -> None:
        try:
            _ask_socket(self._fd, socket.socket.shutdown, socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """The socket failed (reset, broken pipe, timed out): drop the connection."""
        if not isinstance(exc, ConnectionError | TimeoutError):
            log.error("the connection from %s failed: %s", self._peer(), exc)
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        """Leave the epoll set now; tell the protocol and close the descriptor in a later
        callback (as asyncio does), so the number stays ours while a batch may name it."""
        if self._fd < 0 or self._server.transports[self._fd] is not self:
            return
        if self._state & _REGISTERED:
            self._server.epoll.unregister(self._fd)
        self._state = (self._state | _CLOSING) & ~(_READING | _REGISTERED)
        self._out = None
        self._server.transports[self._fd] = None
        self._server.loop.call_soon(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._server.detach()

    def _peer(self) -> str:
        return host_port(self.get_extra_info("peername"))


def _ask_socket(fd: int, method: Callable[..., Any], *args: Any) -> Any:
    """Call a ``socket.socket`` method on a bare descriptor, which stays open."""
    sock = socket.socket(fileno=fd)
    try:
        return method(sock, *args)
    finally:
        sock.detach()


def _packed(address: Any) -> Any:
    """An IPv4 peer address in one int (32 bytes instead of a tuple, a str and an int)."""
    if isinstance(address, tuple) and len(address) == 2:
        return int.from_bytes(socket.inet_aton(address[0]), "big") << 16 | address[1]
    return address


class EpollServer(asyncio.AbstractServer):
    """Listening sockets whose connections are :class:`EpollTransport` s of one epoll set.

    As uvloop's server (and asyncio's before Python 3.12), ``close`` stops accepting and
    leaves the connections open, and ``wait_closed`` does not wait for them: the broker
    closes its connections itself (each may linger, or wait for an attach). The epoll set
    is closed with the last connection after ``close``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sockets = tuple(sockets)
        self._factory = protocol_factory
        self.epoll = select.epoll()
        self.transports: list[EpollTransport | None] = []  # by descriptor
        self._active = 0
        self._serving = False
        self._closed = False
        loop.add_reader(self.epoll.fileno(), self._poll)

    @classmethod
    async def listen(
        cls,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        backlog: int = 100,
    ) -> EpollServer:
        """A server bound to every address ``host`` names (all of them for ""), not serving
        yet. Raises OSError when an address cannot be resolved or bound."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return cls(loop, sockets, protocol_factory)

    # -- asyncio.AbstractServer --------------------------------------------------------------

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            if self._serving:
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self._serving = False
        self._release_if_done()

    async def wait_closed(self) -> None:
        return

    # -- inside ------------------------------------------------------------------------------

    def detach(self) -> None:
        """A connection's descriptor has been closed."""
        self._active -= 1
        self._release_if_done()

    def _release_if_done(self) -> None:
        if self._closed and not self._active and not self.epoll.closed:
            self.loop.remove_reader(self.epoll.fileno())
            self.epoll.close()

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_CALL):
            try:
                sock, address = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                log.error(
                    "cannot accept connections on %s for %g s: %s",
                    listening.getsockname(),
                    ACCEPT_RETRY_SECONDS,
                    exc.strerror,
                )
                self.loop.remove_reader(listening.fileno())
                self.loop.call_later(ACCEPT_RETRY_SECONDS, self._accept_again, listening)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start(sock.detach(), _packed(address))

    def _accept_again(self, listening: socket.socket) -> None:
        if self._serving:
            self.loop.add_reader(listening.fileno(), self._accept, listening)

    def _start(self, fd: int, address: Any) -> None:
        try:
            protocol = self._factory()
        except Exception:
            log.exception("cannot start a connection")
            os.close(fd)
            return
        transports = self.transports
        if fd >= len(transports):
            transports.extend([None] * (fd + 1 - len(transports)))
        transport = transports[fd] = EpollTransport(self, fd, address, protocol)
        self._active += 1
        try:
            protocol.connection_made(transport)
        except Exception as exc:
            log.exception("cannot start the connection from %s", transport._peer())
            transport._lose(exc)
            return
        transport._watch()

    def _poll(self) -> None:
        transports = self.transports
        for fd, events in self.epoll.poll(0, EVENTS_PER_CALL):
            transport = transports[fd]
            if transport is None:
                continue  # closed earlier in this batch
            if events & (_IN | _HANG_UP):
                if transport._state & _READING:
                    transport._read_ready()
                else:
                    transport._watch()  # paused since: stop watching for input now
            if events & (_OUT | _HANG_UP) and transport._out is not None:
                transport._write_ready()
