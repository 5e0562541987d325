"""The settings the workers of ``roost serve --workers N`` share: the ports reserved by the
parent, the TOML file that hands the resolved settings over, node ids and HTTP ports."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from roost.config import Listener, Settings, listeners_of, load_settings
from roost.errors import ConfigError
from roost.worker_settings import (
    PortReservation,
    check_http_ports,
    shared_settings,
    worker_count,
    worker_http_port,
    worker_node_id,
    write_settings,
)
from roost.workers import check_settings


def test_the_toml_file_reads_back_to_the_same_settings(tmp_path: Path) -> None:
    certificate = tmp_path / "cert.pem"
    certificate.write_text("not read here")
    settings = Settings(
        port=1884,
        log_levels="roost.cluster=debug",
        admin_token='quote " backslash \\ newline \n',
        presence_events=False,
        tls_port=8883,
        certfile=str(certificate),
        keyfile=str(certificate),
        workers="auto",
        listeners=(
            Listener("ws", "127.0.0.1", 9001, path="/x", name="[[listeners]] #1"),
            Listener("tcp", "127.0.0.1", 1885, proxy_protocol=True, name="[[listeners]] #2"),
        ),
    )
    path = write_settings(settings, tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600  # it may hold the admin token
    assert load_settings(config_path=str(path)) == settings


def test_ports_of_every_listener_are_reserved_and_shared() -> None:
    settings = Settings(port=0, ws_port=0, listeners=(Listener("tcp", port=0, name="[[l]] #1"),))
    reservation = PortReservation(listeners_of(settings))
    try:
        ports = reservation.bind()
        assert len(set(ports)) == 3 and 0 not in ports
        shared = shared_settings(settings, ports, "redis://127.0.0.1:6379/0")
        assert [listener.port for listener in listeners_of(shared)] == ports
        assert shared.advertise == f"127.0.0.1:{ports[0]}"
        assert shared.cluster == "redis://127.0.0.1:6379/0"
        with socket.socket() as worker:  # what each worker does: SO_REUSEPORT on the port
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", ports[0]))
            worker.listen()
    finally:
        reservation.close()


def test_a_port_taken_by_another_process_is_a_config_error_naming_the_listener() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        settings = Settings(port=0, ws_port=other.getsockname()[1])
        with pytest.raises(ConfigError, match=r"ws_port: cannot listen on 127\.0\.0\.1:"):
            PortReservation(listeners_of(settings)).bind()


def test_node_ids_and_http_ports_of_the_workers() -> None:
    settings = Settings(port=1883, http_port=8080)
    assert worker_node_id(settings, 1) == "127.0.0.1:1883/w1"
    assert worker_node_id(replace(settings, node_id="edge"), 0) == "edge/w0"
    assert [worker_http_port(settings, i) for i in range(3)] == [8080, 8081, 8082]
    assert worker_http_port(replace(settings, http_port=0), 2) == 0  # each a free port
    assert worker_http_port(replace(settings, http_port=-1), 2) == -1  # none
    with pytest.raises(ConfigError, match="'http_port' = 65535: 2 workers need ports"):
        check_http_ports(replace(settings, http_port=65535), 2)


def test_auto_is_one_worker_per_usable_core() -> None:
    assert worker_count(Settings(workers="auto")) == len(os.sched_getaffinity(0))
    assert worker_count(Settings(workers="3")) == 3


@pytest.mark.parametrize(
    ("log_level", "log_levels", "shared"),
    [
        ("info", "", ""),
        ("warning", "", "roost.broker=info"),
        ("warning", "roost.cluster=debug", "roost.cluster=debug,roost.broker=info"),
        ("info", "roost=error", "roost=error,roost.broker=info"),
        ("error", "roost.broker=debug", "roost.broker=debug"),
    ],
)
def test_workers_always_log_the_line_that_says_they_listen(
    log_level: str, log_levels: str, shared: str
) -> None:
    settings = Settings(port=1, log_level=log_level, log_levels=log_levels)
    assert shared_settings(settings, [1], "redis://h:1/0").log_levels == shared


@pytest.mark.parametrize("value", ["0", "two", "1025", " 2", "٢"])
def test_a_bad_workers_value_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="setting 'workers'"):
        load_settings(env={"ROOST_WORKERS": value})


def test_redirects_among_workers_of_one_address_are_refused() -> None:
    settings = Settings(workers="2", redirect="always")
    with pytest.raises(ConfigError, match="setting 'redirect' = 'always'"):
        check_settings(settings, 2)
    check_settings(replace(settings, cluster="redis://10.0.0.5:6379/0"), 2)  # other nodes
