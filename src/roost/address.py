"""HOST:PORT text, as in the ``advertise`` setting, heartbeats and MQTT 5 Server References,
and as a client's address is logged."""

from __future__ import annotations

from typing import Any


def host_port(address: tuple[Any, ...] | None) -> str:
    """``HOST:PORT`` of a socket address (``peername``), or "?" for none."""
    return f"{address[0]}:{address[1]}" if address else "?"


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` or ``[IPv6]:PORT``; a text without a port gets
    ``default_port`` if given. ValueError for anything else."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a bare host name or IPv6 address
        host, port = text, ""
    if host and not port and default_port is not None:
        return host, default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)
