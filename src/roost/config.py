"""Broker settings: one frozen dataclass, filled from defaults, a TOML file, ROOST_* env vars
and command-line flags (in that order of precedence, flags last).

:func:`load_settings` merges the sources and :func:`validate` checks the result; both raise
:class:`~roost.errors.ConfigError` naming the setting, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields, replace
from typing import get_type_hints

from roost.cluster.assign import POLICIES
from roost.errors import ConfigError
from roost.logs import parse_module_levels


@dataclass(frozen=True, slots=True)
class Listener:
    """One MQTT listener of a node (docs/listeners.md). ``name`` says where it was
    configured (``port``, ``tls_port``, ``[[listeners]] #2``); errors name it."""

    kind: str = "tcp"  # tcp | tls | ws | wss
    host: str = ""  # "" = the node's ``host`` setting
    port: int = -1  # required; 0 = any free port
    certfile: str = ""  # tls, wss: PEM server certificate (chain)
    keyfile: str = ""  # tls, wss: PEM private key
    cafile: str = ""  # tls, wss: PEM CA certificates; client certificates presented are verified
    require_certificate: bool = False  # tls, wss: a client without a valid certificate is refused
    use_identity_as_username: bool = False  # tls, wss: the certificate's CN is the user name
    min_tls_version: str = "1.2"  # tls, wss: "1.2" or "1.3"
    path: str = "/mqtt"  # ws, wss: the HTTP path of the WebSocket endpoint ("/" works too)
    proxy_protocol: bool = False  # tcp: connections start with a PROXY protocol header
    name: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a single Roost node. Field names are the TOML keys; the env var is
    ``ROOST_<NAME>`` and the flag ``--<name-with-dashes>``."""

    host: str = "127.0.0.1"
    port: int = 1883
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line, for log shippers
    log_levels: str = ""  # per module, e.g. "roost.cluster=debug,roost.transport=warning"
    # Limits
    max_connections: int = 100_000
    max_packet_size: int = 1_048_576
    receive_maximum: int = 1024  # inbound QoS>0 PUBLISHes a client may have unacknowledged
    max_inflight: int = 1024  # outbound QoS>0 messages unacknowledged per client
    max_queued_messages: int = 1000  # per session, beyond inflight
    max_topic_length: int = 65535
    max_topic_levels: int = 128
    max_keep_alive: int = 65535  # a client asking for more gets Server Keep Alive
    topic_alias_maximum: int = 64  # aliases a client may use towards the broker
    max_session_expiry: int = 0xFFFFFFFF  # seconds; 0xFFFFFFFF = never expire
    write_stall_timeout: int = 60  # seconds a client may read nothing before it is closed
    # Client identifiers
    strict_client_id: bool = False  # only 1-23 chars of 0-9a-zA-Z [MQTT-3.1.3-5]
    allow_empty_client_id: bool = True
    # Features
    retain_available: bool = True
    wildcard_subscription_available: bool = True
    shared_subscription_available: bool = True
    subscription_identifier_available: bool = True
    maximum_qos: int = 2
    presence_events: bool = True  # $SYS/roost/clients/<id>/connected|disconnected
    response_information: str = ""  # MQTT 5 Response Information prefix ("" = not offered)
    # Storage
    store: str = "sqlite"  # "sqlite" (embedded, durable) or "memory" (nothing survives)
    data_dir: str = "./data"
    durability: str = "full"  # full: ack after commit; batch: commit every interval; none
    commit_interval_ms: int = 50  # for durability = "batch": the window of possible loss
    max_pending_writes: int = 100_000  # statements waiting for the store before publishers wait
    # Transactional (half) messages, see docs/transactions.md
    transaction_timeout: int = 6  # seconds before the first check-back
    transaction_check_interval: int = 30  # seconds between check-backs
    transaction_check_max: int = 15  # check-backs before the final action
    transaction_final_action: str = "rollback"  # rollback, commit or keep
    max_pending_transactions: int = 100_000
    max_pending_transactions_per_group: int = 10_000
    # Cluster, see docs/cluster.md ("" = run alone)
    cluster: str = ""  # redis://HOST:PORT/DB of the Redis/Valkey the nodes share
    node_id: str = ""  # unique per node; default: HOST:PORT of the listener
    advertise: str = ""  # HOST:PORT clients use to reach this node; default: the listener
    # Silence after which a node counts as dead, and a node cut off from Redis stops
    # serving; nodes announce themselves four times in that time.
    node_timeout_ms: int = 3000
    # Access: the HTTP listener, where clients are sent, MQTT 5 redirection (see README)
    http_host: str = "127.0.0.1"
    http_port: int = -1  # -1: no HTTP listener; 0: any free port (logged at start)
    assign_policy: str = "least-connections"  # or round-robin, client-hash
    redirect: str = "never"  # MQTT 5 clients: never, overloaded, always (an entry node)
    soft_max_connections: int = 0  # above it, redirect = "overloaded" sends clients on
    # Behind a load balancer: every connection starts with a PROXY protocol (v2 or v1)
    # header naming the real client (docs/deployment.md)
    proxy_protocol: bool = False
    # Operations, see docs/operations.md
    admin_token: str = ""  # bearer token of the admin API and dashboard ("" = both off)
    sys_interval: int = 10  # seconds between $SYS/broker/... updates (0 = none)
    # Security: authorization, see docs/acl.md
    acl_file: str = ""  # ACL file of topic rights ("" = every client may do everything)
    # Security: authentication, see docs/authentication.md
    password_file: str = ""  # users and their hashes (`roost passwd`); "" = no logins checked
    allow_anonymous: bool = False  # with a password_file: also let clients without user name in
    auth_backoff_after: int = 5  # failed logins from one address before it must wait
    auth_backoff_max: int = 60  # seconds: the longest wait (doubling from 1 s); 0 = no back-off
    # Security: abuse limits, see docs/limits.md (0 = no limit). A client over its rate is
    # not read from until its bucket refills; the bursts come on top of one second's worth.
    client_message_rate: int = 0  # PUBLISHes a second one client may send
    client_message_burst: int = 0
    client_byte_rate: int = 0  # PUBLISH payload bytes a second one client may send
    client_byte_burst: int = 0
    rate_limit_grace: int = 10  # seconds over its rate before a client is disconnected (0: never)
    address_connection_rate: int = 0  # CONNECTs a second from one source address
    address_connection_burst: int = 0
    max_connections_per_user: int = 0  # concurrent connections of one user name
    # Cluster flow control, see docs/cluster.md
    # ms one subscriber may hold back its node's inbox while the node is behind (0 = off);
    # keep it below node_timeout_ms: take-overs in the inbox wait behind it
    inbox_hold_ms: int = 1000
    # inbox entries above which nodes sending to it hold back their publishers' acks
    inbox_max_entries: int = 1000
    # Listeners, see docs/listeners.md. ``host``/``port`` above is the main (plain TCP)
    # listener; these add TLS and WebSocket ones on ``host`` (-1 = off), and [[listeners]]
    # tables in the TOML file add any number of any kind.
    tls_port: int = -1
    ws_port: int = -1  # path /mqtt (and /)
    wss_port: int = -1
    certfile: str = ""  # PEM server certificate (chain) of tls_port and wss_port
    keyfile: str = ""  # its PEM private key
    cafile: str = ""  # PEM CA certificates: client certificates presented are verified
    require_certificate: bool = False  # tls_port, wss_port: refuse clients without one
    listeners: tuple[Listener, ...] = ()  # [[listeners]] of the TOML file (TOML only)
    # Security hardening, see docs/authentication.md: password checks queued or running at
    # once; a login beyond them is refused with 0x89 Server busy (3.1.1: 3) at once
    auth_max_pending: int = 64
    # Workers: every core of one machine, see docs/cluster.md. "1": one process, as ever;
    # N or "auto" (one per core): N processes on the same ports (SO_REUSEPORT) forming a
    # cluster (over ``cluster``, else over a Valkey started under ``data_dir``).
    workers: str = "1"


ENV_PREFIX = "ROOST_"
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})
LOG_FORMATS = frozenset({"text", "json"})
STORE_KINDS = {"memory", "sqlite"}
DURABILITY_MODES = {"full", "batch", "none"}
FINAL_ACTIONS = {"rollback", "commit", "keep"}
REDIRECT_MODES = {"never", "overloaded", "always"}
CLUSTER_SCHEMES = ("redis://", "rediss://", "unix://")

# Inclusive (low, high) bounds; None means unbounded above.
RANGES: dict[str, tuple[int, int | None]] = {
    "port": (0, 65535),
    "max_connections": (1, None),
    "max_packet_size": (16, 268_435_460),  # largest encodable packet (section 2.1.4)
    "receive_maximum": (1, 65535),  # Receive Maximum 0 is a Protocol Error (3.2.2.3.3)
    "max_inflight": (1, 65535),
    "max_queued_messages": (0, None),
    "max_topic_length": (1, 65535),
    "max_topic_levels": (1, None),
    "max_keep_alive": (1, 65535),
    "topic_alias_maximum": (0, 65535),
    "max_session_expiry": (0, 0xFFFFFFFF),
    "write_stall_timeout": (1, 86_400),
    "maximum_qos": (0, 2),
    "commit_interval_ms": (1, 60_000),
    "max_pending_writes": (1, None),
    "transaction_timeout": (0, 86_400),
    "transaction_check_interval": (1, 86_400),
    "transaction_check_max": (0, 1000),
    "max_pending_transactions": (1, None),
    "max_pending_transactions_per_group": (1, None),
    "node_timeout_ms": (200, 600_000),
    "http_port": (-1, 65535),
    "soft_max_connections": (0, None),
    "sys_interval": (0, 86_400),
    "auth_backoff_after": (1, 1_000_000),
    "auth_backoff_max": (0, 86_400),
    "client_message_rate": (0, None),
    "client_message_burst": (0, None),
    "client_byte_rate": (0, None),
    "client_byte_burst": (0, None),
    "rate_limit_grace": (0, 86_400),
    "address_connection_rate": (0, None),
    "address_connection_burst": (0, None),
    "max_connections_per_user": (0, None),
    "inbox_hold_ms": (0, 600_000),
    "inbox_max_entries": (2, None),
    "auth_max_pending": (1, 100_000),
}

# A burst is extra on top of its rate: meaningless without one.
BURST_OF_RATE = {
    "client_message_burst": "client_message_rate",
    "client_byte_burst": "client_byte_rate",
    "address_connection_burst": "address_connection_rate",
}

SECRET_SETTINGS = frozenset({"admin_token"})  # never shown (the admin API's node info)

CHOICES: dict[str, AbstractSet[str]] = {
    "log_level": LOG_LEVELS,
    "log_format": LOG_FORMATS,
    "store": STORE_KINDS,
    "durability": DURABILITY_MODES,
    "transaction_final_action": FINAL_ACTIONS,
    "assign_policy": POLICIES,
    "redirect": REDIRECT_MODES,
}

_HINTS = get_type_hints(Settings)
# The flat settings: each has a flag and an env var; [[listeners]] is read apart.
FIELD_TYPES: dict[str, type] = {
    field.name: _HINTS[field.name] for field in fields(Settings) if field.name != "listeners"
}

_BOOL_WORDS = {
    "true": True, "1": True, "yes": True, "on": True,
    "false": False, "0": False, "no": False, "off": False,
}  # fmt: skip
_TYPE_NAMES = {
    int: "an integer",
    bool: f"a boolean ({'/'.join(_BOOL_WORDS)})",
    str: "a string",
}


def _check_type(name: str, value: object, source: str) -> object:
    """Return ``value`` if it has the field's type (a bool is not an int), else raise."""
    expected = FIELD_TYPES[name]
    if type(value) is not expected:
        raise ConfigError(
            f"setting {name!r}{source} must be {_TYPE_NAMES[expected]}, got {value!r}"
        )
    return value


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


# Parsers from environment text; on failure they return the text for _check_type to reject.
_ENV_PARSERS: dict[type, Callable[[str], object]] = {
    int: _int_or_text,
    bool: lambda text: _BOOL_WORDS.get(text.strip().lower(), text),
    str: str,
}


def _read_file(path: str) -> dict[str, object]:
    """Typed values of a flat TOML file whose keys are Settings field names."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    listeners = data.pop("listeners", None)
    for key in data:
        if key not in FIELD_TYPES:
            raise ConfigError(f"unknown setting {key!r} in config file {path}")
    values = {key: _check_type(key, value, f" in {path}") for key, value in data.items()}
    if listeners is not None:
        values["listeners"] = _read_listeners(listeners, path)
    return values


def load_settings(
    args: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Build validated Settings: defaults < TOML file < ``ROOST_<NAME>`` variables in
    ``env`` < ``args`` (typed values, e.g. ``vars()`` of parsed flags, where None means not
    given and keys that are not settings are ignored). ``env=None`` reads no variables."""
    values = _read_file(config_path) if config_path is not None else {}
    for name in FIELD_TYPES:
        var = ENV_PREFIX + name.upper()
        if env is not None and var in env:
            parsed = _ENV_PARSERS[FIELD_TYPES[name]](env[var])
            values[name] = _check_type(name, parsed, f" (from ${var})")
        given = None if args is None else args.get(name)
        if given is not None:
            values[name] = _check_type(name, given, " (command line)")
    settings = Settings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Raise ConfigError for the first setting of the wrong type or outside what
    RANGES and CHOICES allow."""
    for name in FIELD_TYPES:
        _check_type(name, getattr(settings, name), "")
    for name, (low, high) in RANGES.items():
        value = getattr(settings, name)
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f">= {low}"
            raise ConfigError(f"setting {name!r} = {value} is out of range; allowed: {allowed}")
    for name, choices in CHOICES.items():
        value = getattr(settings, name)
        if value not in choices:
            allowed = ", ".join(sorted(choices))
            raise ConfigError(f"setting {name!r} = {value!r} is not allowed; allowed: {allowed}")
    _check_module_levels(settings.log_levels)
    if settings.cluster and not settings.cluster.startswith(CLUSTER_SCHEMES):
        raise ConfigError(
            f"setting 'cluster' = {settings.cluster!r} is not a redis:// or rediss:// URL"
        )
    if settings.advertise and not _is_host_port(settings.advertise):
        raise ConfigError(f"setting 'advertise' = {settings.advertise!r} is not HOST:PORT")
    if settings.redirect == "overloaded" and not settings.soft_max_connections:
        raise ConfigError("setting 'redirect' = 'overloaded' needs soft_max_connections > 0")
    for burst, rate in BURST_OF_RATE.items():
        if getattr(settings, burst) and not getattr(settings, rate):
            raise ConfigError(f"setting {burst!r} needs {rate} > 0")
    _validate_listeners(listeners_of(settings))
    _check_workers(settings.workers)


WORKERS_AUTO = "auto"
MAX_WORKERS = 1024


def _check_workers(text: str) -> None:
    number = text.isascii() and text.isdecimal()
    if text == WORKERS_AUTO or (number and 1 <= int(text) <= MAX_WORKERS):
        return
    raise ConfigError(
        f"setting 'workers' = {text!r} is not allowed; allowed: 1..{MAX_WORKERS} or 'auto'"
    )


def _check_module_levels(text: str) -> None:
    try:
        levels = parse_module_levels(text)
    except ValueError as exc:
        raise ConfigError(f"setting 'log_levels' = {text!r}: {exc}") from None
    for name, level in levels.items():
        if level not in LOG_LEVELS:
            allowed = ", ".join(sorted(LOG_LEVELS))
            raise ConfigError(
                f"setting 'log_levels': level {level!r} of {name!r} is not allowed; "
                f"allowed: {allowed}"
            )


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


# -- Listeners ---------------------------------------------------------------------------

LISTENER_KINDS = ("tcp", "tls", "ws", "wss")
TLS_KINDS = frozenset({"tls", "wss"})
WEBSOCKET_KINDS = frozenset({"ws", "wss"})
TLS_VERSIONS = ("1.2", "1.3")
ANY_HOST = frozenset({"0.0.0.0", "::"})  # a listener there clashes with any host
_LISTENER_HINTS = get_type_hints(Listener)
LISTENER_KEYS: dict[str, type] = {
    field.name: _LISTENER_HINTS[field.name] for field in fields(Listener) if field.name != "name"
}
_TLS_ONLY = ("certfile", "keyfile", "cafile", "require_certificate", "use_identity_as_username")


def _read_listeners(tables: object, path: str) -> tuple[Listener, ...]:
    """The ``[[listeners]]`` array of tables: each key checked like a setting's."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"'listeners' in {path} must be an array of tables ([[listeners]])")
    listeners = []
    for number, table in enumerate(tables, 1):
        name = f"[[listeners]] #{number}"
        for key, value in table.items():
            if key not in LISTENER_KEYS:
                raise ConfigError(f"{name} in {path}: unknown key {key!r}")
            expected = LISTENER_KEYS[key]
            if type(value) is not expected:
                raise ConfigError(
                    f"{name} in {path}: {key!r} must be {_TYPE_NAMES[expected]}, got {value!r}"
                )
        if "port" not in table:
            raise ConfigError(f"{name} in {path}: 'port' is required")
        listeners.append(Listener(**table, name=name))
    return tuple(listeners)


def listeners_of(settings: Settings) -> tuple[Listener, ...]:
    """Every MQTT listener of the node, the main TCP one first, hosts filled in."""
    main = Listener(
        "tcp", settings.host, settings.port, proxy_protocol=settings.proxy_protocol, name="port"
    )
    flagged = [
        Listener(kind, settings.host, port, name=f"{kind}_port")
        if kind == "ws"
        else Listener(
            kind,
            settings.host,
            port,
            settings.certfile,
            settings.keyfile,
            settings.cafile,
            settings.require_certificate,
            name=f"{kind}_port",
        )
        for kind, port in (
            ("tls", settings.tls_port),
            ("ws", settings.ws_port),
            ("wss", settings.wss_port),
        )
        if port != -1
    ]
    listed = [replace(lst, host=lst.host or settings.host) for lst in settings.listeners]
    return (main, *flagged, *listed)


def _validate_listeners(listeners: tuple[Listener, ...]) -> None:
    """Raise ConfigError naming the listener and the key of the first bad listener."""
    taken: dict[int, list[Listener]] = {}
    for listener in listeners:
        _validate_listener(listener)
        for other in taken.get(listener.port, ()):
            if listener.host == other.host or {listener.host, other.host} & ANY_HOST:
                raise ConfigError(
                    f"{listener.name}: 'port' {listener.host}:{listener.port} is taken by "
                    f"{other.name} already"
                )
        if listener.port:  # 0: any free port, never a clash
            taken.setdefault(listener.port, []).append(listener)


def _validate_listener(listener: Listener) -> None:
    name, kind = listener.name, listener.kind
    if kind not in LISTENER_KINDS:
        raise ConfigError(f"{name}: 'kind' = {kind!r}; allowed: {', '.join(LISTENER_KINDS)}")
    if not 0 <= listener.port <= 65535:
        where = f"setting {name!r}" if "[" not in name else f"{name}: 'port'"
        raise ConfigError(f"{where} = {listener.port} is out of range; allowed: 0..65535")
    if kind in TLS_KINDS:
        for key in ("certfile", "keyfile"):
            _check_readable(listener, key, required=True)
        _check_readable(listener, "cafile", required=listener.require_certificate)
        if listener.use_identity_as_username and not listener.require_certificate:
            raise ConfigError(f"{name}: 'use_identity_as_username' needs require_certificate")
        if listener.min_tls_version not in TLS_VERSIONS:
            raise ConfigError(
                f"{name}: 'min_tls_version' = {listener.min_tls_version!r}; "
                f"allowed: {', '.join(TLS_VERSIONS)}"
            )
    else:
        for key in _TLS_ONLY:
            if getattr(listener, key):
                raise ConfigError(f"{name}: {key!r} is for tls and wss listeners, not {kind}")
    if kind in WEBSOCKET_KINDS and not listener.path.startswith("/"):
        raise ConfigError(f"{name}: 'path' = {listener.path!r} must start with '/'")
    if listener.proxy_protocol and kind != "tcp":
        raise ConfigError(f"{name}: 'proxy_protocol' is for tcp listeners only")


def _check_readable(listener: Listener, key: str, required: bool) -> None:
    path = getattr(listener, key)
    if not path:
        if required:
            why = "a client certificate is required" if key == "cafile" else listener.kind
            raise ConfigError(f"{listener.name}: {key!r} is required ({why})")
        return
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError(f"{listener.name}: {key!r} = {path!r} is not a readable file")
