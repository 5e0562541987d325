"""A raw MQTT client over WebSocket: ``rawmqtt.RawClient`` (hand-encoded packets, exact
reason codes, timeouts) whose bytes travel in WebSocket binary frames, framed by the
``websockets`` library's sans-I/O client. ``send_frames`` puts chosen chunks in frames of
their own, so a test can split a packet across frames or put several packets in one."""

from __future__ import annotations

import contextlib
import time

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from rawmqtt import TIMEOUT, RawClient, recv_before


class HandshakeRefused(AssertionError):
    def __init__(self, response: Response) -> None:
        super().__init__(f"WebSocket handshake refused: {response.status_code}")
        self.status = response.status_code


class WsRawClient(RawClient):
    """Connects to ``ws://host:port{path}`` offering ``subprotocols``; raises
    HandshakeRefused when the broker answers anything but 101."""

    def __init__(
        self,
        host: str,
        port: int,
        version: int = 4,
        path: str = "/mqtt",
        subprotocols: tuple[str, ...] = ("mqtt",),
        receive_buffer: int | None = None,
    ) -> None:
        super().__init__(host, port, version, receive_buffer)
        self.ws = ClientProtocol(
            parse_uri(f"ws://{host}:{port}{path}"),
            subprotocols=[Subprotocol(name) for name in subprotocols] or None,
            max_size=None,
        )
        self.close_code: int | None = None  # of the broker's close frame
        self.ws.send_request(self.ws.connect())
        self._push()
        deadline = time.monotonic() + TIMEOUT
        events: list[Response | Frame] = []
        while not any(isinstance(event, Response) for event in events):
            assert self._receive(deadline), f"no handshake response: {self.ws.handshake_exc}"
            events += self.ws.events_received()
        response = events.pop(0)
        assert isinstance(response, Response)
        if response.status_code != 101:
            raise HandshakeRefused(response)
        self._take(events)

    def _push(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _receive(self, deadline: float) -> bool:
        """Feed what the socket has to the WebSocket protocol; False on EOF / reset."""
        chunk = recv_before(self.sock, deadline)
        if not chunk:
            return False
        self.ws.receive_data(chunk)
        return True

    def _take(self, events: list[Response | Frame]) -> None:
        """MQTT bytes of the binary frames go to the packet buffer; a close frame's code
        is kept; pongs and the answer to a close are sent."""
        for event in events:
            if not isinstance(event, Frame):
                continue
            if event.opcode in (Opcode.BINARY, Opcode.CONT):
                self.buf += event.data
            elif event.opcode is Opcode.CLOSE and self.ws.close_rcvd is not None:
                self.close_code = self.ws.close_rcvd.code
        self._push()

    def frame_bytes(self, data: bytes) -> bytes:
        """``data`` as one masked binary frame, not sent (for a test that sends on its own)."""
        self.ws.send_binary(data)
        return b"".join(self.ws.data_to_send())

    # -- RawClient over WebSocket -----------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.send_frames(data)

    def send_frames(self, *chunks: bytes) -> None:
        """Each chunk as a binary frame of its own."""
        for chunk in chunks:
            self.ws.send_binary(chunk)
        self._push()

    def send_fragmented(self, first: bytes, *rest: bytes) -> None:
        """One binary message in fragments: a BINARY frame, then CONTINUATION frames."""
        self.ws.send_binary(first, fin=not rest)
        for index, chunk in enumerate(rest, 1):
            self.ws.send_continuation(chunk, fin=index == len(rest))
        self._push()

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self._push()

    def _fill(self, deadline: float) -> bool:
        if not self._receive(deadline):
            return False
        self._take(list(self.ws.events_received()))
        return True

    def drop(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.ws.send_close()
                self._push()
        super().drop()
