"""The node's log as a log shipper or an operator reads it: one line per client connect and
disconnect with client id, address, protocol version and reason; JSON lines with those
as fields; a level per module. Real ``roost serve`` processes, real clients."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerproc import BrokerProcess
from paho_helpers import V311, Clients, wait_until
from rawmqtt import RawFactory


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    processes: list[BrokerProcess] = []

    def start(*flags: str) -> BrokerProcess:
        process = BrokerProcess(tmp_path / f"data{len(processes)}", *flags).start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


def json_records(process: BrokerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(process.log)]


def record_of(process: BrokerProcess, start_of_message: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [r for r in json_records(process) if r["message"].startswith(start_of_message)]
        return bool(found)

    wait_until(logged, what=f"a log record {start_of_message!r}")
    return found[0]


def test_json_lines_carry_the_clients_details(
    started: Any, clients: Clients, raw: RawFactory
) -> None:
    broker = started("--log-format", "json")
    lamp = clients.connect(broker, "lamp")
    lamp.stop()  # DISCONNECT
    connected = record_of(broker, "client lamp connected")
    assert connected["level"] == "info" and connected["logger"] == "roost.protocol"
    assert connected["client_id"] == "lamp" and connected["protocol"] == "5.0"
    host, _, port = connected["peer"].rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()
    assert connected["time"].endswith("+00:00")
    disconnected = record_of(broker, "client lamp disconnected")
    assert (disconnected["reason"], disconnected["peer"]) == ("DISCONNECT", connected["peer"])

    sensor, _ = raw.connected(broker, "sensor", version=4)
    host, port = sensor.sock.getsockname()
    sensor.drop()  # the socket closes without DISCONNECT
    gone = record_of(broker, "client sensor disconnected")
    assert (gone["protocol"], gone["reason"]) == ("3.1.1", "connection lost")
    assert gone["peer"] == f"{host}:{port}"  # asked of the transport as it closes

    meter, _ = raw.connected(broker, "meter", version=4)
    host, port = meter.sock.getsockname()
    meter.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    meter.drop()  # reset: the socket itself no longer knows its peer
    reset = record_of(broker, "client meter disconnected")
    assert (reset["reason"], reset["peer"]) == ("connection lost", f"{host}:{port}")
    assert all(isinstance(record, dict) for record in json_records(broker))  # every line


def line_with(process: BrokerProcess, text: str) -> str:
    wait_until(lambda: any(text in line for line in process.log), what=f"a log line {text!r}")
    return next(line for line in process.log if text in line).rstrip()


def test_text_lines_name_client_address_version_and_reason(started: Any, clients: Clients) -> None:
    broker = started()
    clients.connect(broker, "meter", version=V311)
    clients.connect(broker, "meter", version=V311)  # takes the session over
    connected = line_with(broker, "client meter connected from 127.0.0.1:")
    assert connected.endswith("(MQTT 3.1.1)") and " INFO roost.protocol: " in connected
    assert line_with(broker, "client meter disconnected from").endswith(": session taken over")


def test_a_module_level_quiets_that_module_only(started: Any, clients: Clients) -> None:
    broker = started("--log-levels", "roost.protocol=warning")
    clients.connect(broker, "quiet").stop()
    # The broker's own info lines still come; the protocol module's are held back
    wait_until(lambda: any("roost listening" in line for line in broker.log))
    clients.connect(broker, "marker", version=V311)
    assert not any("client quiet" in line or "client marker" in line for line in broker.log)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--log-format", "xml"], "'log_format' = 'xml' is not allowed; allowed: json, text"),
        (["--log-levels", "roost.cluster"], "'roost.cluster' is not MODULE=LEVEL"),
        (["--log-levels", "roost.cluster=loud"], "level 'loud' of 'roost.cluster'"),
    ],
)
def test_bad_log_settings_stop_start_up(flags: list[str], message: str) -> None:
    command = [sys.executable, "-m", "roost", "serve", "--port", "0", *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("roost: error: setting 'log_") and message in done.stderr
