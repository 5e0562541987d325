"""A null MQTT broker that costs (almost) nothing, to measure the load generator's ceiling.

``python -m bench.nullbroker MODE PORT QOS``

* ``sink``: answer CONNECT with CONNACK, then read and discard everything.
* ``source``: answer CONNECT and SUBSCRIBE, then write a pre-encoded block of PUBLISH packets
  (QoS ``QOS``, 64-byte payload) in a loop while discarding whatever the client sends.

One thread per connection, blocking sockets: all per-byte work happens in the kernel, so the
rate a client reaches against it is the client's own limit.
"""

from __future__ import annotations

import socket
import sys
import threading

HOST = "127.0.0.1"
TOPIC = b"bench/fanin"
PAYLOAD = bytes(64)
BLOCK_MESSAGES = 1000


def _publish_block(qos: int) -> bytes:
    parts = []
    for i in range(BLOCK_MESSAGES):
        body = len(TOPIC).to_bytes(2, "big") + TOPIC
        if qos:
            body += (i + 1).to_bytes(2, "big")
        body += PAYLOAD
        parts.append(bytes([0x30 | (qos << 1), len(body)]) + body)
    return b"".join(parts)


def _read_packet(sock: socket.socket, buf: bytearray) -> tuple[int, bytes] | None:
    """One packet (type byte, body) from ``sock``; leftover bytes stay in ``buf``."""
    while True:
        if len(buf) >= 2:
            length = 0
            shift = 0
            pos = 1
            while pos < len(buf) and pos <= 4:
                byte = buf[pos]
                length |= (byte & 0x7F) << shift
                shift += 7
                pos += 1
                if byte < 0x80:
                    if len(buf) >= pos + length:
                        first = buf[0]
                        body = bytes(buf[pos : pos + length])
                        del buf[: pos + length]
                        return first, body
                    break
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk


def _discard(sock: socket.socket) -> None:
    scratch = bytearray(1 << 18)
    try:
        while sock.recv_into(scratch):
            pass
    except OSError:
        pass


def _handle(sock: socket.socket, mode: str, block: bytes) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    try:
        packet = _read_packet(sock, buf)
        if packet is None or packet[0] != 0x10:
            return
        sock.sendall(b"\x20\x02\x00\x00")
        if mode == "sink":
            _discard(sock)
            return
        packet = _read_packet(sock, buf)
        if packet is None or packet[0] != 0x82:
            return
        sock.sendall(b"\x90\x03" + packet[1][:2] + bytes([packet[1][-1]]))
        threading.Thread(target=_discard, args=(sock,), daemon=True).start()
        while True:
            sock.sendall(block)
    except OSError:
        pass
    finally:
        sock.close()


def main(argv: list[str]) -> int:
    mode, port, qos = argv[0], int(argv[1]), int(argv[2])
    if mode not in ("sink", "source"):
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    block = _publish_block(qos)
    server = socket.create_server((HOST, port), backlog=1024)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_handle, args=(conn, mode, block), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
