"""Several listeners in one node: ``roost serve`` with [[listeners]] from a TOML file
serves TCP, TLS, WS and WSS at once (a publish over TCP reaches a subscriber over WSS),
logs every listener at start, and lists them in the admin API; a certificate it cannot load
stops it with a message naming the listener and the key."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tlspki import SERVER_NAME, Endpoint, Pki, over_websocket

from adminhttp import TOKEN, AdminApi
from brokerproc import BrokerProcess
from paho_helpers import V5
from roost.config import Listener

LISTENER = re.compile(r"127\.0\.0\.1:(\d+) \((tcp|tls|ws|wss)[ )]")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def listener_tables(pki: Pki, *kinds: str) -> str:
    tables = []
    for kind in kinds:
        table = f'[[listeners]]\nkind = "{kind}"\nport = 0\n'
        if kind in ("tls", "wss"):
            table += f'certfile = "{pki.certfile}"\nkeyfile = "{pki.keyfile}"\n'
        tables.append(table)
    return "\n".join(tables)


def test_one_node_serves_tcp_tls_ws_and_wss_from_a_toml_file(tmp_path, pki, clients) -> None:
    config = tmp_path / "roost.toml"
    config.write_text(listener_tables(pki, "tls", "ws", "wss"))
    node = BrokerProcess(tmp_path / "data", "--config", str(config)).start()
    try:
        (line,) = [line for line in node.log if "roost listening on" in line]
        ports = {kind: int(port) for port, kind in LISTENER.findall(line)}
        assert set(ports) == {"tcp", "tls", "ws", "wss"}
        assert ports["tcp"] == node.port
        wss = clients.connect(
            Endpoint(SERVER_NAME, ports["wss"]), "wss-sub", V5, prepare=over_websocket(pki=pki)
        )
        wss.sub("everywhere", qos=1)
        tls = clients.connect(
            Endpoint(SERVER_NAME, ports["tls"]), "tls-sub", V5, prepare=pki.paho_tls()
        )
        tls.sub("everywhere", qos=1)
        ws = clients.connect(
            Endpoint(SERVER_NAME, ports["ws"]), "ws-sub", V5, prepare=over_websocket()
        )
        ws.sub("everywhere", qos=1)
        clients.connect(node, "tcp-pub", V5).pub("everywhere", b"one for all", qos=1)
        for subscriber in (wss, tls, ws):
            subscriber.wait_for_payload(b"one for all")
    finally:
        clients.close_all()
        assert node.terminate() == 0


def serve_fails(tmp_path: Path, toml: str) -> str:
    """Run ``roost serve`` with this config, expecting it to stop at start; its stderr."""
    config = tmp_path / "roost.toml"
    config.write_text(toml)
    command = [sys.executable, "-m", "roost", "serve", "--port", "0", "--config", str(config)]
    started = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1, started.stderr
    return started.stderr


def test_a_certificate_that_cannot_be_loaded_stops_the_node(tmp_path: Path, pki: Pki) -> None:
    toml = listener_tables(pki, "ws", "wss").replace(pki.certfile, pki.cafile)  # no key for it
    stderr = serve_fails(tmp_path, toml)
    assert "cannot start: [[listeners]] #2: cannot use 'certfile'" in stderr


def test_a_port_in_use_stops_the_node(tmp_path: Path, pki: Pki) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        toml = listener_tables(pki, "ws").replace("port = 0", f"port = {port}")
        stderr = serve_fails(tmp_path, toml)
    assert f"cannot start: [[listeners]] #1: cannot listen on 127.0.0.1:{port}" in stderr


def test_the_admin_api_lists_every_listener(make_broker, pki) -> None:
    wss = Listener("wss", "127.0.0.1", 0, pki.certfile, pki.keyfile, path="/ws", name="secure")
    broker = make_broker(
        http_port=0,
        admin_token=TOKEN,
        tls_port=0,
        ws_port=0,
        listeners=(wss,),
        **pki.server_settings(),
    )
    status, info = AdminApi(broker).get("/api/v1/node")
    assert status == 200
    port_of = broker.broker.port_of
    assert info["listeners"]["mqtt"] == f"127.0.0.1:{broker.port}"
    assert info["listeners"]["all"] == [
        {"name": "port", "kind": "tcp", "address": f"127.0.0.1:{broker.port}"},
        {
            "name": "tls_port",
            "kind": "tls",
            "address": f"127.0.0.1:{port_of('tls')}",
            "require_certificate": False,
        },
        {"name": "ws_port", "kind": "ws", "address": f"127.0.0.1:{port_of('ws')}", "path": "/mqtt"},
        {
            "name": "secure",
            "kind": "wss",
            "address": f"127.0.0.1:{port_of('wss')}",
            "path": "/ws",
            "require_certificate": False,
        },
    ]
