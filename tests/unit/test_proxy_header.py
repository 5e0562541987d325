"""The PROXY protocol parser: the client's address from valid v2 and v1 headers, "need
more" for every incomplete prefix, and an error, never a crash, for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxyheaders
from roost.transport.proxy import ProxyHeader, ProxyHeaderError, parse_proxy_header

CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"

VALID = [
    (proxyheaders.v2(), ("203.0.113.7", 40000)),
    (proxyheaders.v2("2001:db8::7", 65535, "2001:db8::1"), ("2001:db8::7", 65535)),
    (proxyheaders.v2(tlvs=b"\x03\x00\x04abcd"), ("203.0.113.7", 40000)),  # a CRC32C TLV
    (proxyheaders.v2_local(), None),
    (proxyheaders.v1(), ("198.51.100.2", 5555)),
    (proxyheaders.v1("2001:db8::2", 1), ("2001:db8::2", 1)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
]


@pytest.mark.parametrize(("header", "source"), VALID)
def test_a_valid_header_names_the_client_and_its_length(
    header: bytes, source: tuple[str, int] | None
) -> None:
    assert parse_proxy_header(header + CONNECT) == ProxyHeader(len(header), source)


@pytest.mark.parametrize(("header", "source"), VALID)
def test_every_incomplete_header_needs_more(header: bytes, source: object) -> None:
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None, header[:end]


@pytest.mark.parametrize(
    "data",
    [
        CONNECT,  # a client that connects without the balancer
        b"GET / HTTP/1.1\r\n",
        proxyheaders.SIGNATURE + b"\x11\x11\x00\x0c",  # version 1 in a v2 header
        proxyheaders.SIGNATURE + b"\x2f\x11\x00\x0c",  # unknown command
        proxyheaders.SIGNATURE + b"\x21\x41\x00\x0c",  # unknown family
        proxyheaders.SIGNATURE + b"\x21\x11\x00\x08",  # IPv4 block shorter than 12 bytes
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",  # family and addresses disagree
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 " + b"1" * 100,  # no CRLF within 107 bytes
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


@given(st.binary(max_size=300))
def test_random_bytes_are_refused_or_wait_never_crash(data: bytes) -> None:
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    assert header is None or 0 < header.length <= len(data)


@given(st.sampled_from([header for header, _ in VALID]), st.binary(max_size=64))
def test_random_bytes_after_the_signature_never_crash(header: bytes, tail: bytes) -> None:
    """Random v2 fixed parts and v1 lines: beyond what random bytes alone would reach."""
    data = header[:16] + tail if header.startswith(proxyheaders.SIGNATURE) else header[:6] + tail
    try:
        parsed = parse_proxy_header(data)
    except ProxyHeaderError:
        return
    assert parsed is None or 0 < parsed.length <= len(data)


@given(st.sampled_from(VALID), st.binary(max_size=64))
def test_what_follows_a_header_does_not_change_it(
    valid: tuple[bytes, tuple[str, int] | None], rest: bytes
) -> None:
    header, source = valid
    assert parse_proxy_header(header + rest) == ProxyHeader(len(header), source)
