"""``roost serve`` node processes started and stopped together (``roost cluster up``).

Each node runs in its own session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the nodes in order (SIGTERM: each leaves the cluster cleanly)
and reaps them. Their output is printed line by line, prefixed with the node's name.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

STOP_TIMEOUT = 15.0  # seconds a node has to shut down after SIGTERM before SIGKILL
READY_LINE = "roost listening on"


class NodeProcess:
    """One ``roost serve`` child; ``ready`` is set once it listens, ``exited`` when its
    output ends (it stopped, or is stopping)."""

    def __init__(self, name: str, arguments: list[str], output: TextIO, lock: threading.Lock):
        self.name = name
        self.arguments = arguments
        self.ready = threading.Event()
        self.exited = threading.Event()
        self._output = output
        self._lock = lock  # one line at a time on the shared output
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
                self._output.write(f"[{self.name}] {line}")
                self._output.flush()
        self.exited.set()
        on_exit.set()

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def wait(self) -> int:
        """Reap the node: after STOP_TIMEOUT, SIGKILL; returns its exit status."""
        assert self._process is not None
        try:
            return self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()


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
