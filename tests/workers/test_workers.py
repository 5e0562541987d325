"""``roost serve --workers N``: several broker processes on one port that clients take
for one broker. Real processes (the parent, its workers, its embedded Valkey), real paho
and raw MQTT clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis

from paho_helpers import TIMEOUT, Clients, Conn, wait_until
from rawmqtt import RawFactory
from roost.cluster import keys
from roost.cluster.localserver import LocalServer
from workersproc import WorkersProcess, alive, connect_on

Start = Callable[..., WorkersProcess]


def route(publisher: Conn, subscriber: Conn, topic: str) -> None:
    """Publish probes until ``subscriber`` gets one: its subscription is then known on
    the publisher's worker (routes reach the other workers asynchronously)."""

    def probed() -> bool:
        payload = f"probe-{uuid.uuid4().hex}".encode()
        publisher.pub(topic, payload, qos=1)
        try:
            subscriber.wait_for_payload(payload, timeout=0.2)
        except AssertionError:
            return False
        return True

    wait_until(probed, what=f"{topic} routed to the subscriber")


def test_clients_on_one_port_are_spread_over_both_workers(
    start_workers: Start, clients: Clients
) -> None:
    workers = start_workers(2)
    ids = [f"spread-{n}" for n in range(24)]
    for client_id in ids:
        clients.connect(workers, client_id)
    served_by = {workers.worker_of(client_id) for client_id in ids}
    assert served_by == {0, 1}  # each of 24 connections lands on either: 2**-23 to miss


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_publish_on_one_worker_reaches_a_subscriber_on_the_other_in_order(
    start_workers: Start, clients: Clients, qos: int
) -> None:
    workers = start_workers(2)
    _, subscriber = connect_on(workers, clients, 0, "sub")
    _, publisher = connect_on(workers, clients, 1, "pub")
    assert subscriber.sub("cross/#", qos) == [qos]
    route(publisher, subscriber, "cross/probe")
    sent = [f"m{n}".encode() for n in range(200)]
    for payload in sent:
        publisher.client.publish("cross/data", payload, qos)
    wait_until(lambda: sent[-1] in subscriber.payloads(), what="the last message")
    received = [m.payload for m in subscriber.messages if m.topic == "cross/data"]
    assert received == sent
    assert {m.qos for m in subscriber.messages if m.topic == "cross/data"} == {qos}


def test_sigterm_stops_every_worker_then_the_valkey(
    start_workers: Start, clients: Clients, raw: RawFactory
) -> None:
    workers = start_workers(2)
    told = []
    served_by: set[int] = set()
    while len(told) < 8 or served_by != {0, 1}:  # clients on both workers, whatever the kernel
        assert len(told) < 64, f"64 connections and all on worker(s) {served_by}"
        client_id = f"told-{len(told)}"
        told.append(raw.connected(workers, client_id, 5)[0])
        served_by.add(workers.worker_of(client_id))
    pids = [*workers.all_worker_pids(), workers.valkey_pid()]
    assert len(pids) == 3 and all(pid is not None and alive(pid) for pid in pids)

    assert workers.terminate(60) == 0

    for client in told:
        assert [(p.name, p.reason_code) for p in client.wait_closed()] == [("DISCONNECT", 0x8B)]
    assert not [pid for pid in pids if pid is not None and alive(pid)]
    text = workers.text()
    assert text.count("roost stopped") == 2
    assert text.index("roost stopped") < text.index("valkey stopped")


def test_workers_stop_when_their_parent_is_killed(start_workers: Start) -> None:
    workers = start_workers(2)
    pids = workers.all_worker_pids()
    valkey = workers.valkey_pid()
    assert valkey is not None
    try:
        workers.kill()  # SIGKILL: the parent stops nothing itself
        wait_until(lambda: not any(alive(pid) for pid in pids), 30, "the workers to stop")
        assert alive(valkey)  # left behind: see docs/cluster.md
    finally:
        os.kill(valkey, signal.SIGKILL)


def test_a_killed_worker_is_restarted_and_its_persistent_session_kept(
    start_workers: Start, clients: Clients
) -> None:
    workers = start_workers(2)
    keeper_id, keeper = connect_on(workers, clients, 1, "keeper", clean=False, session_expiry=600)
    assert keeper.sub("kept/#", 1) == [1]
    _, other = connect_on(workers, clients, 0, "other")
    route(other, keeper, "kept/probe")
    stored = Redis.from_url(workers.valkey_url())  # the session is written asynchronously
    subscriptions = f"roost:{{c:{keeper_id}}}:subs"
    wait_until(lambda: stored.hexists(subscriptions, "kept/#"), what="the session stored")
    stored.close()
    old_pid = workers.kill_worker(1)

    wait_until(keeper.disconnected.is_set, what="the keeper to lose its worker")
    keeper.client.loop_stop()
    # published meanwhile: the killed worker's session is adopted by the survivor
    publisher = clients.connect(workers, "publisher-after-kill")
    sent = [f"kept-{n}".encode() for n in range(20)]
    for payload in sent:
        publisher.pub("kept/data", payload, qos=1)
    workers.wait_for("worker w1 started", timeout=30)
    wait_until(lambda: workers.worker_pids()[1] != old_pid, what="a new w1")
    workers.wait_for(f"node {workers.node_id(1)} joined the cluster", timeout=30)
    assert alive(workers.worker_pids()[0])

    back = reconnect(workers, clients, keeper_id)
    wait_until(lambda: sent[-1] in back.payloads(), what="the messages kept for it")
    assert [p for p in back.payloads() if p.startswith(b"kept-")] == sent
    assert back.session_present == [True]


def reconnect(workers: WorkersProcess, clients: Clients, client_id: str) -> Conn:
    """Connect ``client_id`` to its persistent session again, as often as it is refused
    while the cluster adopts what the killed worker held."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        conn = clients.connect(
            workers, client_id, clean=False, session_expiry=600, expect_success=False
        )
        if conn.connack_rc == 0:
            return conn
        conn.stop()
        assert time.monotonic() < deadline, f"{client_id} refused: {conn.connack_rc:#x}"


def test_a_node_started_again_keeps_its_persistent_sessions(
    start_workers: Start, clients: Clients
) -> None:
    """Stopped and started again on its port and data_dir: the workers come back under
    their ids (w0 takes back its former run and adopts the others', each other worker
    starts once that is done) and every session is there, with what was published."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    first = start_workers(2, "--port", port)
    ids = [f"keep-{n}" for n in range(8)]
    for client_id in ids:
        assert clients.connect(first, client_id, clean=False, session_expiry=600).sub("k/#", 1)
    stored = Redis.from_url(first.valkey_url())
    for client_id in ids:
        key = f"roost:{{c:{client_id}}}:subs"
        wait_until(lambda key=key: stored.hexists(key, "k/#"), what=f"{key} stored")
    stored.close()
    clients.close_all()
    assert first.terminate(60) == 0

    second = WorkersProcess(first.data_dir, 2, "--port", port).start()
    try:
        clients.connect(second, "publisher").pub("k/x", b"while they were away", qos=1)
        for client_id in ids:
            back = reconnect(second, clients, client_id)
            assert back.session_present == [True]
            back.wait_for_payload(b"while they were away")
        clients.close_all()
    finally:
        second.terminate(60)


def test_one_worker_is_one_process_without_valkey(tmp_path: Path) -> None:
    broker = WorkersProcess(tmp_path / "data", 1)
    try:
        super(WorkersProcess, broker).start()  # one process: no "(1 workers)" line
        assert broker.process is not None
        children = Path(f"/proc/{broker.process.pid}/task/{broker.process.pid}/children")
        assert children.read_text().split() == []
        assert "roost.workers" not in broker.text()  # the parent of workers logs as that
        assert not (tmp_path / "data" / "valkey").exists()
    finally:
        broker.kill()


def test_every_listener_of_port_0_is_shared_by_the_workers(start_workers: Start) -> None:
    workers = start_workers(2, "--ws-port", "0")
    lines = re.findall(r"^\[w(\d)\] .*roost listening on (.*)$", workers.text(), re.M)
    assert sorted(index for index, _ in lines) == ["0", "1"]
    assert lines[0][1] == lines[1][1]  # the same TCP and WebSocket ports on both
    assert re.fullmatch(r"127\.0\.0\.1:\d+ \(tcp\), 127\.0\.0\.1:\d+ \(ws /mqtt\)", lines[0][1])


def run_serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roost", "serve", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("value", ["0", "many", "-2", "1025"])
def test_a_bad_workers_setting_stops_start_up_naming_it(tmp_path: Path, value: str) -> None:
    done = run_serve(f"--workers={value}", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "setting 'workers'" in done.stderr and repr(value) in done.stderr


def test_a_config_error_starts_nothing(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.txt")
    done = run_serve("--workers", "2", "--password-file", missing, "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert missing in done.stderr
    assert "roost.workers" not in done.stderr  # no worker and no Valkey started


def test_a_worker_that_cannot_start_stops_the_others_without_restarts(
    redis_server: LocalServer,
) -> None:
    """Worker w1's node id is held by a live node of the cluster it is to join: w1
    refuses to start, and the parent stops w0 and exits 1 instead of restarting w1."""
    redis = Redis(host=redis_server.host, port=redis_server.port)
    redis.hset(keys.node("edge/w1"), "token", "another-node")
    redis.pexpire(keys.node("edge/w1"), 120_000)
    redis.close()
    cluster = ("--cluster", redis_server.url, "--node-id", "edge", "--node-timeout-ms", "1000")
    done = run_serve("--workers", "2", *cluster, "--data-dir", str(redis_server.directory))
    assert done.returncode == 1, done.stderr
    assert "node id 'edge/w1' is already in use by a live node" in done.stderr
    assert re.search(r"worker (w0, )?w1 could not start", done.stderr)
    assert done.stderr.count("worker w1 started") == 1  # not restarted
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", done.stderr)]
    assert len(pids) == 2 and not [pid for pid in pids if alive(pid)]
    assert "valkey" not in done.stderr  # it joined the cluster it was given


def test_the_valkey_keeps_its_data_under_a_relative_data_dir(tmp_path: Path) -> None:
    """The default ``data_dir`` is ./data: the Valkey (which runs in its own directory)
    gets the absolute path, and writes its append-only file there."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in paths if p))
    command = [sys.executable, "-m", "roost", "serve", "--port", "0", "--workers", "2"]
    parent = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert parent.stderr is not None
        for line in parent.stderr:  # ends if the parent exits
            if "(2 workers)" in line:
                break
        assert any((tmp_path / "data" / "valkey").rglob("*.aof")), "no append-only file"
    finally:
        parent.terminate()
        assert parent.wait(60) == 0
