"""The PROXY protocol header (versions 2 and 1) a TCP load balancer puts in front of a
connection to tell the server who the client really is.

Behind HAProxy (``send-proxy-v2``) every connection a node accepts comes from the balancer;
without this header the node's logs, limits and authenticator would see the balancer's
address instead of the client's. Pure: :func:`parse_proxy_header` looks at the first bytes
of a connection and says "need more", "here is the client, skip N bytes", or raises.

Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from roost.errors import RoostError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, address block length
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included

_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
_V2_SIZES = {_UNSPEC: 0, _INET: 12, _INET6: 36, _UNIX: 216}  # address block, per family
_V2_SOURCES = {_INET: "!4s4sHH", _INET6: "!16s16sHH"}  # source, destination, their ports
_V1_FAMILIES = {b"TCP4": 4, b"TCP6": 6}


class ProxyHeaderError(RoostError):
    """The connection does not start with a well-formed PROXY header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header: ``length`` bytes long; ``source`` is the client's address and
    port, or None when the header names none (a LOCAL health check from the balancer, an
    UNKNOWN or UNIX connection): the connection's own peer then stands."""

    length: int
    source: tuple[str, int] | None


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or None if more bytes are needed to tell.

    Raises ProxyHeaderError when ``data`` cannot start a valid header, whatever follows.
    """
    if data[:12] == V2_SIGNATURE[: len(data)]:
        return _parse_v2(data) if len(data) >= V2_FIXED else None
    if data[:6] == V1_PREFIX[: len(data)]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v2(data: bytes) -> ProxyHeader | None:
    version_command, family_transport, size = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2: unknown version {version_command >> 4}")
    command = version_command & 0xF
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY v2: unknown command {command}")
    family, transport = family_transport >> 4, family_transport & 0xF
    if family not in _V2_SIZES or transport > 2:
        raise ProxyHeaderError(f"PROXY v2: unknown address family 0x{family_transport:02X}")
    if size < _V2_SIZES[family]:
        raise ProxyHeaderError(f"PROXY v2: address block of {size} bytes is too short")
    length = V2_FIXED + size
    if len(data) < length:
        return None
    if command == _LOCAL or family not in _V2_SOURCES or transport != _STREAM:
        return ProxyHeader(length, None)
    source, _, source_port, _ = struct.unpack_from(_V2_SOURCES[family], data, V2_FIXED)
    return ProxyHeader(length, (str(ipaddress.ip_address(source)), source_port))


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyHeaderError("PROXY v1: no CRLF within 107 bytes")
        return None
    fields = data[:end].split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(end + 2, None)
    if len(fields) != 6 or fields[1] not in _V1_FAMILIES:
        raise ProxyHeaderError("PROXY v1: malformed line")
    source = _v1_address(fields[2], _V1_FAMILIES[fields[1]])
    _v1_address(fields[3], _V1_FAMILIES[fields[1]])
    source_port = _v1_port(fields[4])
    _v1_port(fields[5])
    return ProxyHeader(end + 2, (source, source_port))


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("PROXY v1: malformed address") from None
    if address.version != version:
        raise ProxyHeaderError("PROXY v1: address does not match the family")
    return str(address)


def _v1_port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ProxyHeaderError("PROXY v1: malformed port")
    return int(text)
