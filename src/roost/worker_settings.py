"""What the worker processes of ``roost serve --workers N`` share: the ports of the node's
listeners, fixed by the parent before any worker starts, and the settings every worker
runs with, handed over as a TOML file.

The parent resolves the settings once (file < ``ROOST_*`` variables < flags), binds every
listener's address with SO_REUSEPORT (port 0 gets its free port here, so that all workers
share it) and keeps those sockets bound, not listening, for its whole run: a worker that
is restarted finds its port still reserved for it. The sockets never accept a connection
(the kernel spreads connections over the listening sockets only).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import fields, replace
from pathlib import Path

from roost.config import LISTENER_KEYS, WORKERS_AUTO, Listener, Settings, listeners_of
from roost.errors import ConfigError
from roost.logs import parse_module_levels

WORKER_SEPARATOR = "/w"  # node id of worker i: <node_id or HOST:PORT>/w<i>
# Logs "roost listening on" at info: the line by which the parent sees a worker ready.
READY_LOGGER = "roost.broker"


def worker_count(settings: Settings) -> int:
    """The number of worker processes: ``workers``, with "auto" one per usable core."""
    if settings.workers == WORKERS_AUTO:
        return max(1, len(os.sched_getaffinity(0)))
    return int(settings.workers)


def check_http_ports(settings: Settings, count: int) -> None:
    """Worker i serves HTTP on ``http_port + i``: all of them must be ports."""
    last = settings.http_port + count - 1
    if settings.http_port > 0 and last > 65535:
        raise ConfigError(
            f"setting 'http_port' = {settings.http_port}: {count} workers need ports "
            f"{settings.http_port}..{last}, beyond 65535"
        )


class PortReservation:
    """One bound (not listening) SO_REUSEPORT socket per listener of the node."""

    def __init__(self, listeners: tuple[Listener, ...]) -> None:
        self.listeners = listeners
        self._sockets: list[socket.socket] = []

    def bind(self) -> list[int]:
        """Bind every listener's address; returns their ports. Raises ConfigError naming
        the listener whose address cannot be bound (taken, not of this machine)."""
        try:
            return [self._bind(listener) for listener in self.listeners]
        except ConfigError:
            self.close()
            raise

    def _bind(self, listener: Listener) -> int:
        address = f"{listener.host}:{listener.port}"
        try:
            family, kind, proto, _, where = socket.getaddrinfo(
                listener.host or None,
                listener.port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )[0]
            sock = socket.socket(family, kind, proto)
            self._sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(where)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise ConfigError(f"{listener.name}: cannot listen on {address}: {why}") from exc
        port: int = sock.getsockname()[1]
        return port

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def with_ports(settings: Settings, ports: list[int]) -> Settings:
    """``settings`` with the listeners' ports as bound (in the order of
    :func:`~roost.config.listeners_of`): the flagged ones and the [[listeners]] tables."""
    listeners = listeners_of(settings)
    port_of = dict(zip((listener.name for listener in listeners), ports, strict=True))
    flagged = {
        f"{kind}_port": port_of[f"{kind}_port"]
        for kind in ("tls", "ws", "wss")
        if f"{kind}_port" in port_of
    }
    listed = tuple(
        replace(listener, port=port)
        for listener, port in zip(
            settings.listeners, ports[len(ports) - len(settings.listeners) :], strict=True
        )
    )
    return replace(settings, port=port_of["port"], listeners=listed, **flagged)  # type: ignore[arg-type]


def shared_settings(settings: Settings, ports: list[int], cluster: str) -> Settings:
    """What every worker runs with: the bound ports, the cluster's URL and the node's
    address (``advertise``, default HOST:PORT of the main listener) shared by all."""
    bound = with_ports(settings, ports)
    advertise = settings.advertise or f"{bound.host}:{bound.port}"
    log_levels = _ready_line_shown(settings.log_level, settings.log_levels)
    return replace(bound, cluster=cluster, advertise=advertise, log_levels=log_levels)


def _ready_line_shown(log_level: str, log_levels: str) -> str:
    """``log_levels`` with READY_LOGGER at info when ``log_level`` or a level of
    ``log_levels`` would hide its lines (the few lines of starting and stopping)."""
    levels = parse_module_levels(log_levels)
    owners = [name for name in levels if f"{READY_LOGGER}.".startswith(f"{name}.")]
    # the most specific logger configured for it wins, as in the logging module
    applied = levels[max(owners, key=len)] if owners else log_level
    if applied in ("debug", "info"):
        return log_levels
    levels[READY_LOGGER] = "info"
    return ",".join(f"{name}={level}" for name, level in levels.items())


def worker_node_id(settings: Settings, index: int) -> str:
    """``<node_id or HOST:PORT>/w<index>``; ``settings`` has the bound ports."""
    return f"{settings.node_id or f'{settings.host}:{settings.port}'}{WORKER_SEPARATOR}{index}"


def worker_http_port(settings: Settings, index: int) -> int:
    """Worker i's HTTP listener: ``http_port + i`` (0: each a free port; -1: none)."""
    return settings.http_port + index if settings.http_port > 0 else settings.http_port


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def settings_toml(settings: Settings) -> str:
    """``settings`` as a TOML file that :func:`~roost.config.load_settings` reads back
    to the same Settings (every flat setting, then the [[listeners]] tables)."""
    lines = [
        f"{field.name} = {_toml_value(getattr(settings, field.name))}"
        for field in fields(Settings)
        if field.name != "listeners"
    ]
    for listener in settings.listeners:
        lines += ["", "[[listeners]]"]
        lines += [f"{key} = {_toml_value(getattr(listener, key))}" for key in LISTENER_KEYS]
    return "\n".join(lines) + "\n"


def write_settings(settings: Settings, directory: Path) -> Path:
    """Write :func:`settings_toml` to ``directory``/workers.toml, readable by the owner
    only (it may hold the admin token)."""
    path = directory / "workers.toml"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(settings_toml(settings))
    return path
