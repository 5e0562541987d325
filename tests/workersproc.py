"""``roost serve --workers N`` as a real process tree for tests: the parent, its worker
processes and (without ``--cluster``) its embedded Valkey, all found through the parent's
log (worker output comes relayed, each line prefixed ``[w<i>] ``)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

from brokerproc import BrokerProcess
from paho_helpers import TIMEOUT, Clients, Conn, wait_until

NODE_TIMEOUT_MS = 2000  # short, so that a killed worker is counted dead (and restarted) soon
STARTED = re.compile(r"worker w(\d+) started \(pid (\d+)\)")
VALKEY = re.compile(r"valkey at (\S+) \(pid (\d+)\)")


class WorkersProcess(BrokerProcess):
    """The parent on an ephemeral port; started once it says that every worker listens."""

    def __init__(self, data_dir: Path, workers: int, *extra: str) -> None:
        flags = ("--workers", str(workers), "--node-timeout-ms", str(NODE_TIMEOUT_MS))
        super().__init__(data_dir, *flags, *extra)
        self.workers = workers

    def start(self) -> WorkersProcess:
        super().start()  # returns at the first worker's "roost listening on"
        self.wait_for(f"({self.workers} workers)")
        return self

    def text(self) -> str:
        return "".join(self.log)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.text(), timeout, f"{text!r} in the log")

    def worker_pids(self) -> dict[int, int]:
        """The latest pid of each worker (a restarted worker has a new one)."""
        return {int(index): int(pid) for index, pid in STARTED.findall(self.text())}

    def all_worker_pids(self) -> list[int]:
        return [int(pid) for _, pid in STARTED.findall(self.text())]

    def valkey_pid(self) -> int | None:
        found = VALKEY.search(self.text())
        return int(found[2]) if found else None

    def valkey_url(self) -> str:
        found = VALKEY.search(self.text())
        assert found, "no embedded Valkey"
        return found[1]

    def node_id(self, index: int) -> str:
        return f"{self.host}:{self.port}/w{index}"

    def worker_of(self, client_id: str) -> int:
        """The worker whose log says that ``client_id`` connected (the latest such line)."""
        pattern = re.compile(rf"^\[w(\d+)\] .* client {re.escape(client_id)} connected from", re.M)
        wait_until(lambda: bool(pattern.search(self.text())), TIMEOUT, f"{client_id} connected")
        return int(pattern.findall(self.text())[-1])

    def kill_worker(self, index: int) -> int:
        """SIGKILL one worker; returns its pid."""
        pid = self.worker_pids()[index]
        os.kill(pid, signal.SIGKILL)
        return pid


def connect_on(
    workers: WorkersProcess, clients: Clients, worker: int, name: str, **options: Any
) -> tuple[str, Conn]:
    """A paho client served by ``worker`` and its id: connect clients ``<name>-<n>``
    until the kernel hands one to that worker (the others are disconnected)."""
    for attempt in range(64):
        client_id = f"{name}-{attempt}"
        conn = clients.connect(workers, client_id, **options)
        if workers.worker_of(client_id) == worker:
            return client_id, conn
        conn.stop()
    raise AssertionError(f"64 connections and none on worker w{worker}")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
