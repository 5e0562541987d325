"""Helpers for the Redis store tests: a real RedisStore on the test's own Valkey server,
driven by a real event loop, as a cluster node would open it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from redis.asyncio import Redis

from roost.cluster.localserver import LocalServer
from roost.errors import StoreError
from roost.session import Session
from roost.store.base import LoadedState
from roost.store.redis import RedisStore
from store_helpers import TIMEOUT, unexpected_failure


def start_store(
    server: LocalServer,
    loop: asyncio.AbstractEventLoop,
    now: float = 0.0,
    prefix: str = "roost",
    max_pending_writes: int = 100_000,
    on_failure: Callable[[StoreError], None] = unexpected_failure,
) -> tuple[RedisStore, LoadedState]:
    """A RedisStore on ``server``, opened and loaded at broker time ``now``, and what it
    loaded."""
    store = RedisStore(
        Redis.from_url(server.url),
        loop,
        prefix=prefix,
        max_pending_writes=max_pending_writes,
        on_failure=on_failure,
    )
    loop.run_until_complete(asyncio.wait_for(store.open(), TIMEOUT))
    return store, store.load(now)


def open_store(server: LocalServer, loop: asyncio.AbstractEventLoop, **options: Any) -> RedisStore:
    """The store of :func:`start_store` (same options), when what it loaded is no matter."""
    return start_store(server, loop, **options)[0]


def fetch(
    store: RedisStore, loop: asyncio.AbstractEventLoop, client_id: str, now: float = 0.0
) -> Session | None:
    return loop.run_until_complete(asyncio.wait_for(store.fetch_session(client_id, now), TIMEOUT))


@contextlib.contextmanager
def stopped(server: LocalServer) -> Iterator[None]:
    """Freeze the server process (SIGSTOP): it keeps its connections and answers nothing
    until the block ends (SIGCONT)."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def turn(loop: asyncio.AbstractEventLoop, seconds: float = 0.2) -> None:
    """Let the loop run for ``seconds``: time enough to send a pipeline and, were Redis
    answering, to hear back."""
    loop.run_until_complete(asyncio.sleep(seconds))


def close(store: RedisStore, loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.wait_for(store.aclose(), TIMEOUT))
