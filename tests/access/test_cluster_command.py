"""``roost cluster up`` and ``roost cluster status`` as a user runs them: real processes,
stopped with SIGINT as Ctrl-C would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from paho_helpers import wait_until

NODES = 3


def free_port_range(count: int) -> int:
    """A port P with P .. P+count-1 free now (picked by the OS, then checked)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cluster_up_status_and_ctrl_c(tmp_path: Path) -> None:
    base = free_port_range(NODES)
    command = [
        sys.executable, "-m", "roost", "cluster", "up",
        "--nodes", str(NODES),
        "--base-port", str(base),
        "--http-base-port", "-1",
        "--redis-port", "0",
        "--data-dir", str(tmp_path),
        "--", "--store", "memory",
    ]  # fmt: skip
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []

    def read() -> None:
        assert up.stdout is not None
        output.extend(up.stdout)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(lambda: any("cluster up:" in line for line in output), 30, "cluster up")
        text = "".join(output)
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", text)]
        assert len(pids) == NODES + 1  # the nodes and the Valkey/Redis server
        assert all(f"[node{index}]" in text for index in range(NODES))
        redis_url = re.search(r"redis at (\S+)", text)
        assert redis_url

        status = subprocess.run(
            [sys.executable, "-m", "roost", "cluster", "status", "--redis", redis_url[1]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert f"{NODES} nodes alive" in status.stdout
        for index in range(NODES):
            assert re.search(rf"node{index}\s+127\.0\.0\.1:{base + index}\s+0\s", status.stdout)

        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, "every process to end")
        assert "cluster stopped" in "".join(output)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
