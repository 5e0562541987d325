"""A real Roost broker in a background thread of the test process, on an ephemeral port, and
a clock the tests move on by hand when time is what they test (tests/conftest.py has the
fixtures: ``make_broker``, ``broker``, ``clock``)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from paho_helpers import wait_until
from roost.attach import Authenticator
from roost.broker import Broker
from roost.config import Settings
from roost.store.sqlite import DATABASE_NAME

T = TypeVar("T")

MOMENT = 1 / 64  # a short step of broker time; a power of two keeps the clock's sums exact


class ManualClock:
    """Broker time that stands still until the test moves it on (``RunningBroker.advance``):
    a timing test checks what happens just before and at a deadline without waiting for it,
    so neither a slow nor a fast machine changes the outcome.

    The SQLite store saves times as wall-clock time: across a restart, the real time that
    passed counts as well (expiry keeps running while a broker is down).
    """

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class RunningBroker:
    """A broker serving on 127.0.0.1:<ephemeral port> in its own event-loop thread."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.clock = clock
        self.stopped = False
        self.loop = asyncio.new_event_loop()
        self.broker = Broker(settings, authenticator, clock)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.broker.start())
        self.host = "127.0.0.1"
        self.port: int = self.broker.port

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the broker's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, function: Callable[[], T]) -> T:
        """Call ``function`` on the broker's loop, where the broker's state is read and
        changed, and return its result."""

        async def run() -> T:
            return function()

        result: T = self.call(run())
        return result

    def advance(self, seconds: float) -> None:
        """Move the broker's clock on by ``seconds``, then run the sweep (keep alive, will
        delay, session expiry, transaction checks) at once; returns once it has run, so
        what it sent is already on its way to the clients."""
        clock = self.clock
        assert clock is not None, "advance() needs a broker made with clock=ManualClock()"

        async def advance_and_sweep() -> None:
            clock.now += seconds
            self.broker.sweep()

        self.call(advance_and_sweep())

    def wait_offline(self, client_id: str) -> None:
        """Wait until the broker has seen the connection of ``client_id`` end (a client's
        close reaches the broker asynchronously; broker time is read when it does)."""
        core = self.broker.core
        assert core is not None
        wait_until(lambda: not core.is_online(client_id), what=f"{client_id} offline")

    def disk_image(self, target: Path) -> str:
        """Copy what the store has committed to disk into a new data directory ``target``:
        the state a crash (SIGKILL, power loss) would leave behind right now."""
        target.mkdir(parents=True)
        source = sqlite3.connect(Path(self.settings.data_dir) / DATABASE_NAME)
        copy = sqlite3.connect(target / DATABASE_NAME)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        return str(target)

    def stop(self) -> None:
        """Stop the broker; it must leave no task running on its loop (one would be
        destroyed with the loop, cut short wherever it was)."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.call(self.broker.stop())
            left = self.call(_other_tasks())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
        assert not left, f"tasks left running by the stopped broker: {left}"


async def _other_tasks() -> list[str]:
    """The tasks of the running loop but the caller's."""
    return [repr(task) for task in asyncio.all_tasks() if task is not asyncio.current_task()]


class BrokerFactory:
    """``make_broker(max_packet_size=..., authenticator=..., clock=ManualClock())`` starts a
    broker with those settings (by default the SQLite store in a fresh temporary data
    directory), optionally an authenticator and a manual clock; every broker is stopped at
    teardown."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.started: list[RunningBroker] = []

    def __call__(
        self,
        authenticator: Authenticator | None = None,
        clock: ManualClock | None = None,
        **overrides: Any,
    ) -> RunningBroker:
        defaults = {"host": "127.0.0.1", "port": 0, "data_dir": str(self.data_dir)}
        return self._start(Settings(**{**defaults, **overrides}), authenticator, clock)

    def restart(self, running: RunningBroker, **overrides: Any) -> RunningBroker:
        """Stop ``running`` gracefully and start a broker with the same settings (data
        directory included), authenticator and clock, on a new port."""
        running.stop()
        settings = dataclasses.replace(running.settings, port=0, **overrides)
        return self._start(settings, running.authenticator, running.clock)

    def _start(
        self, settings: Settings, authenticator: Authenticator | None, clock: ManualClock | None
    ) -> RunningBroker:
        running = RunningBroker(settings, authenticator, clock)
        self.started.append(running)
        return running

    def stop_all(self) -> None:
        for running in self.started:
            running.stop()
