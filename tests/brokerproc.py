"""A real ``roost serve`` process for tests that kill or signal the broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from paho_helpers import wait_until

LISTENING = re.compile(r"roost listening on [\d.]+:(\d+)")


class BrokerProcess:
    """``roost serve`` as a child process on an ephemeral port, with a data directory."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[str] = []

    def start(self) -> BrokerProcess:
        command = [sys.executable, "-m", "roost", "serve", "--port", "0"]
        command += ["--data-dir", str(self.data_dir), "--log-level", "info", *self.extra]
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        found = threading.Event()

        def read_log() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line)
                match = LISTENING.search(line)
                if match:
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not found.wait(20):
            self.kill()
            raise AssertionError("broker did not start:\n" + "".join(self.log))
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM (graceful shutdown); returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def reload(self, expected_log: str) -> None:
        """SIGHUP (the node reads its password and ACL files again); returns once a new
        log line holds ``expected_log``."""
        assert self.process is not None
        seen = len(self.log)
        self.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any(expected_log in line for line in self.log[seen:]),
            what=f"log line {expected_log!r} after SIGHUP",
        )

    def restart(self) -> BrokerProcess:
        self.kill()
        return self.start()
