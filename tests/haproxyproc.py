"""HAProxy for tests, run from the shipped ``examples/haproxy/haproxy.cfg`` with the
balancer's and the nodes' addresses in its environment variables. A missing HAProxy is
installed with apt-get (Debian package ``haproxy``); if that fails, the test fails."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from pathlib import Path

from debian import ensure_binary
from paho_helpers import wait_until

CONFIG = Path(__file__).parent.parent / "examples" / "haproxy" / "haproxy.cfg"


def haproxy_binary() -> str:
    """The path of ``haproxy``, installed first if missing."""
    return ensure_binary("haproxy")


def free_port() -> int:
    """A port nothing listens on now (HAProxy cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


class HAProxy:
    """``haproxy -db`` in front of ``nodes`` (HOST:PORT each, three as the config has)."""

    def __init__(self, nodes: list[str]) -> None:
        self.port = free_port()
        self.log: list[str] = []
        env = dict(os.environ, ROOST_LB_BIND=f"127.0.0.1:{self.port}")
        env.update((f"ROOST_NODE{index}", node) for index, node in enumerate(nodes))
        self.process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(CONFIG)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        wait_until(lambda: accepts(self.port) or self.process.poll() is not None, what="haproxy")
        assert self.process.poll() is None, "haproxy did not start:\n" + "".join(self.log)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
