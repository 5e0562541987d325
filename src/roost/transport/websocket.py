"""MQTT over WebSocket (``ws``) and WebSocket over TLS (``wss``), as MQTT section 6 says:
binary frames carry the MQTT byte stream (a packet may span frames, a frame may hold
several packets), the subprotocol is ``mqtt``.

Built on the sans-I/O ``websockets.server.ServerProtocol`` under the same asyncio.Protocol
shell as TCP (:class:`~roost.transport.stream.StreamConnection`), not on the websockets
asyncio server: that server hands each connection to a coroutine that awaits whole
messages, so MQTT would need a task per connection, a queue between it and the sans-I/O
ServerConnection, and a second copy of flow control (its ``drain`` against our
pause/resume). Here a frame's payload goes straight to the MQTT framer as it is parsed,
gathered writes leave as one binary frame per flush, reading pauses with the transport,
and back-pressure is the transport's write buffer, as for TCP. TLS is asyncio's layer
below, as for ``tls`` listeners.

Handshake: the path must be the listener's ``path`` (default ``/mqtt``, what paho and
most brokers use) or ``/`` (what MQTT.js sends for a URL without a path); else 404. A client
must offer the ``mqtt`` subprotocol [MQTT-6.0.0-3]: one that offers none or another gets 400
(as EMQX's default ``fail_if_no_subprotocol``). A text frame closes the connection with
1003 [MQTT-6.0.0-1]. The PROXY protocol is not read on WebSocket listeners.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets import http11
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from roost.config import Listener
from roost.core import BrokerCore
from roost.protocol import Attach
from roost.transport.stream import StreamConnection, log

SUBPROTOCOLS = [Subprotocol("mqtt")]
MIN_FRAME_LIMIT = 65_536  # bytes; see _frame_limit
_MQTT_OPCODES = frozenset({Opcode.BINARY, Opcode.CONT})

# The handshake request a socket may send before it is refused (431 is not sent: it is
# closed): 32 header lines of at most 4 KiB, instead of websockets' 128 of 8 KiB (1 MiB). A
# browser sends about 15; MQTT clients fewer. websockets reads these module settings (also
# settable by its WEBSOCKETS_MAX_* variables) at each parse.
http11.MAX_NUM_HEADERS = 32
http11.MAX_LINE_LENGTH = 4096

# websockets logs every opening and closing at INFO: too much for a broker's log.
_websockets_log = logging.getLogger("roost.transport.websocket")
_websockets_log.setLevel(logging.WARNING)


def _frame_limit(max_packet_size: int) -> int:
    """The largest frame read: a whole packet of the largest size with more behind it.
    Messages are not limited: frames go to the framer one by one, never gathered."""
    return max(2 * max_packet_size, MIN_FRAME_LIMIT)


class WebSocketConnection(StreamConnection):
    """One accepted WebSocket connection (on a TLS transport for ``wss``)."""

    __slots__ = ("_ws",)

    def __init__(self, core: BrokerCore, attach: Attach, listener: Listener) -> None:
        super().__init__(core, attach, listener)
        self._ws = ServerProtocol(
            subprotocols=SUBPROTOCOLS,
            max_size=(None, _frame_limit(core.settings.max_packet_size)),
            logger=_websockets_log,
        )

    def _opened(self) -> None:
        self._wait_at_most("WebSocket handshake")

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
                continue
            assert isinstance(event, Frame)  # (a server receives no Response)
            if event.opcode in _MQTT_OPCODES:
                self._mqtt_received(bytes(event.data))  # (bytes already: not copied)
            elif event.opcode is Opcode.TEXT:
                log.warning("closing the WebSocket of %s: a text frame [MQTT-6.0.0-1]", self.peer)
                ws.fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                break
            # PING, PONG and CLOSE frames: the protocol answers them itself
        self._send_pending()

    def _handshake(self, request: Request) -> None:
        ws = self._ws
        path = urlsplit(request.path).path
        if path in (self.listener.path, "/"):
            response = ws.accept(request)  # 400 without the mqtt subprotocol
        else:
            response = ws.reject(HTTPStatus.NOT_FOUND, f"MQTT is at {self.listener.path}\n")
        ws.send_response(response)
        if response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            self._start_mqtt()
        else:
            why = ws.handshake_exc or f"path {path!r}"
            log.info(
                "refused the WebSocket handshake of %s: %d (%s)",
                self.peer,
                response.status_code,
                why,
            )

    def _send_pending(self) -> None:
        """Write what the WebSocket protocol has to send (handshake response, frames,
        pongs, its close frame); an empty chunk means: close the connection."""
        transport = self._transport
        if transport is None:
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                if self._ws.parser_exc is not None:
                    log.warning("closing the WebSocket of %s: %s", self.peer, self._ws.parser_exc)
                if self._shut(transport):
                    self._linger(transport)

    def _send(self, transport: asyncio.Transport, data: bytes) -> None:
        if self._ws.state is State.OPEN:
            self._ws.send_binary(data)
            self._send_pending()

    def _end_output(self, transport: asyncio.Transport) -> None:
        """Send a close frame; the client's answer ends the connection (``_send_pending``)."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(CloseCode.NORMAL_CLOSURE)
            self._send_pending()
        elif not self._shut(transport):
            return
        self._linger(transport)
