"""``roost serve`` child processes started, watched and stopped together: the nodes of
``roost cluster up`` and the worker processes of ``roost serve --workers N``.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order (SIGTERM: each leaves the cluster
cleanly) and reaps them. Their output is relayed line by line, prefixed with the child's
name (or as it is, for JSON log lines that a log shipper parses).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

STOP_TIMEOUT = 15.0  # seconds a node has to shut down after SIGTERM before SIGKILL
READY_LINE = "roost listening on"


class NodeProcess:
    """One ``roost serve`` child; ``ready`` is set once it listens, ``exited`` when its
    output ends (it stopped, or is stopping)."""

    def __init__(
        self,
        name: str,
        arguments: list[str],
        output: TextIO,
        lock: threading.Lock,
        env: Mapping[str, str] | None = None,
        prefix: bool = True,
    ):
        """``env``: the child's environment (default: this process's); ``prefix``: put
        ``[name] `` before each relayed line."""
        self.name = name
        self.arguments = arguments
        self.ready = threading.Event()
        self.exited = threading.Event()
        self._output = output
        self._lock = lock  # one line at a time on the shared output
        self._env = env
        self._prefix = f"[{name}] " if prefix else ""
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, on_exit: threading.Event) -> NodeProcess:
        """Start the node; ``on_exit`` is set too when its output ends."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "roost", "serve", *self.arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=None if self._env is None else dict(self._env),
            start_new_session=True,
        )
        threading.Thread(target=self._relay, args=(on_exit,), daemon=True).start()
        return self

    def _relay(self, on_exit: threading.Event) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if READY_LINE in line:
                self.ready.set()
            with self._lock:
                self._output.write(self._prefix + line)
                self._output.flush()
        self.exited.set()
        on_exit.set()

    def send_signal(self, signum: int) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Reap the node: after STOP_TIMEOUT, SIGKILL; returns its exit status."""
        assert self._process is not None
        try:
            return self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()


def wait_ready(nodes: Sequence[NodeProcess], stop: threading.Event, timeout: float) -> bool:
    """Wait until every node listens; False as soon as ``stop`` is set (a signal, or a
    node whose output ended) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not all(node.ready.is_set() for node in nodes):
        if stop.wait(0.1) or time.monotonic() > deadline:
            return False
    return True


def stop_nodes(nodes: Sequence[NodeProcess]) -> None:
    """SIGTERM to every node at once, then reap each (SIGKILL after STOP_TIMEOUT)."""
    for node in nodes:
        node.terminate()
    for node in nodes:
        node.wait()


def install_stop_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (the supervisor then stops its children)."""

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)


def environment_without(prefix: str) -> dict[str, str]:
    """This process's environment less the variables starting with ``prefix``."""
    return {name: value for name, value in os.environ.items() if not name.startswith(prefix)}


def node_arguments(
    redis_url: str, index: int, base_port: int, http_base_port: int, data_dir: Path
) -> list[str]:
    """The ``roost serve`` flags of node ``index``: id ``node<index>``, MQTT on
    ``base_port + index``, HTTP on ``http_base_port + index`` (none if that is -1)."""
    arguments = [
        "--cluster", redis_url,
        "--node-id", f"node{index}",
        "--port", str(base_port + index),
        "--data-dir", str(data_dir / f"node{index}"),
    ]  # fmt: skip
    if http_base_port >= 0:
        arguments += ["--http-port", str(http_base_port + index)]
    return arguments
