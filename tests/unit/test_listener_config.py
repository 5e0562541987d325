"""The listener settings: [[listeners]] tables in the TOML file, the --tls-port / --ws-port /
--wss-port flags, and validation errors that name the listener and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost import cli
from roost.config import Listener, Settings, listeners_of, load_settings
from roost.errors import ConfigError


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A readable file where a certificate is expected (validation checks presence and
    readability; the broker loads the contents at start)."""
    path = tmp_path / "server.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def load(tmp_path: Path, text: str, **args: object) -> Settings:
    path = tmp_path / "roost.toml"
    path.write_text(text)
    return load_settings(args, {}, str(path))


def test_listener_tables_and_flags_make_the_node_s_listeners(tmp_path: Path, pem: Path) -> None:
    settings = load(
        tmp_path,
        f"""
        host = "10.0.0.1"
        port = 1883
        [[listeners]]
        kind = "tls"
        port = 8883
        certfile = "{pem}"
        keyfile = "{pem}"
        cafile = "{pem}"
        require_certificate = true
        use_identity_as_username = true
        min_tls_version = "1.3"
        [[listeners]]
        kind = "ws"
        host = "0.0.0.0"
        port = 8080
        path = "/"
        """,
        ws_port=9001,
    )
    main, ws_flag, tls, ws = listeners_of(settings)
    assert main == Listener("tcp", "10.0.0.1", 1883, name="port")
    assert ws_flag == Listener("ws", "10.0.0.1", 9001, name="ws_port")
    assert tls == Listener(
        "tls", "10.0.0.1", 8883, str(pem), str(pem), str(pem), True, True, "1.3", name=tls.name
    )
    assert tls.name == "[[listeners]] #1"
    assert (ws.kind, ws.host, ws.port, ws.path, ws.name) == (
        "ws", "0.0.0.0", 8080, "/", "[[listeners]] #2",
    )  # fmt: skip


def test_tls_flags_share_the_certificate(pem: Path) -> None:
    settings = load_settings(
        {"tls_port": 8883, "wss_port": 8884, "certfile": str(pem), "keyfile": str(pem)}
    )
    _, tls, wss = listeners_of(settings)
    assert (tls.kind, tls.port, tls.certfile, tls.cafile) == ("tls", 8883, str(pem), "")
    assert (wss.kind, wss.port, wss.keyfile, wss.path) == ("wss", 8884, str(pem), "/mqtt")


def test_the_main_listener_keeps_the_proxy_protocol_setting() -> None:
    (main,) = listeners_of(Settings(proxy_protocol=True))
    assert main.proxy_protocol


@pytest.mark.parametrize(
    ("table", "pattern"),
    [
        ('kind = "quic"\nport = 1', r"\[\[listeners\]\] #1: 'kind' = 'quic'; allowed: tcp"),
        ('kind = "tls"\nport = 8883', r"#1: 'certfile' is required"),
        ('kind = "tls"\nport = 8883\ncertfile = "/nonexistent.pem"', r"'certfile' = '/nonex"),
        ('kind = "ws"\nport = 70000', r"#1: 'port' = 70000 is out of range"),
        ('kind = "ws"', r"#1 in .*'port' is required"),
        ('kind = "ws"\nport = "80"', r"#1 in .*'port' must be an integer"),
        ('kind = "ws"\nport = 80\nwebsocket_path = "/"', r"#1 in .*unknown key 'websocket_path'"),
        ('kind = "ws"\nport = 80\npath = "mqtt"', r"#1: 'path' = 'mqtt' must start with '/'"),
        ('kind = "tcp"\nport = 80\ncafile = "x"', r"#1: 'cafile' is for tls and wss"),
        ('kind = "tls"\nport = 1\ncertfile = "{pem}"\nkeyfile = "{pem}"\nproxy_protocol = true',
         r"#1: 'proxy_protocol' is for tcp"),
        ('kind = "tls"\nport = 1\ncertfile = "{pem}"\nkeyfile = "{pem}"\nmin_tls_version = "1.1"',
         r"#1: 'min_tls_version' = '1.1'; allowed: 1.2, 1.3"),
        ('kind = "tls"\nport = 1\ncertfile = "{pem}"\nkeyfile = "{pem}"\n'
         "require_certificate = true", r"#1: 'cafile' is required \(a client certificate is"),
        ('kind = "tls"\nport = 1\ncertfile = "{pem}"\nkeyfile = "{pem}"\ncafile = "{pem}"\n'
         "use_identity_as_username = true", r"#1: 'use_identity_as_username' needs require_"),
        ('kind = "ws"\nport = 1883', r"#1: 'port' 127.0.0.1:1883 is taken by port"),
    ],
)  # fmt: skip
def test_listener_errors_name_the_listener_and_key(tmp_path, pem, table, pattern) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load(tmp_path, "[[listeners]]\n" + table.format(pem=pem) + "\n")


def test_two_listeners_on_one_port_clash_across_any_address(tmp_path: Path) -> None:
    text = '[[listeners]]\nkind = "ws"\nport = 9001\n[[listeners]]\nkind = "tcp"\n'
    text += 'host = "0.0.0.0"\nport = 9001\n'
    with pytest.raises(ConfigError, match=r"#2: 'port' 0.0.0.0:9001 is taken by \[\[listeners"):
        load(tmp_path, text)
    load(tmp_path, text.replace("9001\n", "0\n"))  # any free port: never a clash


def test_listeners_must_be_an_array_of_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="array of tables"):
        load(tmp_path, 'listeners = ["tls"]\n')


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ({"tls_port": 8883}, r"tls_port: 'certfile' is required"),
        ({"wss_port": 70000}, r"setting 'wss_port' = 70000 is out of range"),
        ({"ws_port": 1883}, r"ws_port: 'port' 127.0.0.1:1883 is taken by port"),
    ],
)
def test_flag_errors_name_the_setting(args: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_settings(args)


def test_serve_stops_on_a_listener_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "roost.toml"
    config.write_text('[[listeners]]\nkind = "wss"\nport = 8884\nkeyfile = "k.pem"\n')
    assert cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roost: error: [[listeners]] #1") and "'certfile' is required" in err
