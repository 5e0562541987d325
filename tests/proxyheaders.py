"""PROXY protocol headers built by hand from the spec (independently of
``roost.transport.proxy``), for the parser's unit tests and the listener's tests."""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY, LOCAL = 0x21, 0x20  # version 2 with the PROXY / LOCAL command
TCP4, TCP6, UNSPEC = 0x11, 0x21, 0x00


def v2(
    source: str = "203.0.113.7",
    source_port: int = 40000,
    destination: str = "192.0.2.1",
    destination_port: int = 1883,
    command: int = PROXY,
    tlvs: bytes = b"",
) -> bytes:
    """A version 2 header for a TCP connection over IPv4 or IPv6 (by the addresses)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = TCP4 if src.version == 4 else TCP6
    block = src.packed + dst.packed + struct.pack("!HH", source_port, destination_port) + tlvs
    return SIGNATURE + bytes([command, family]) + struct.pack("!H", len(block)) + block


def v2_local() -> bytes:
    """What a balancer's health check sends: LOCAL, no addresses."""
    return SIGNATURE + bytes([LOCAL, UNSPEC]) + b"\x00\x00"


def v1(source: str = "198.51.100.2", source_port: int = 5555) -> bytes:
    """A version 1 (text) header."""
    family = "TCP4" if ipaddress.ip_address(source).version == 4 else "TCP6"
    destination = "192.0.2.1" if family == "TCP4" else "2001:db8::1"
    return f"PROXY {family} {source} {destination} {source_port} 1883\r\n".encode()
