"""How a node's rounds of Redis commands reach Redis (see :mod:`roost.cluster.sender`).

A round is what one event-loop turn queued (inbox entries for other nodes, other commands),
packed into a redis-py pipeline object. Two ways to send rounds, in order:

- :class:`PipelinedLink`, to a single Redis server: each round is written on a connection
  of its own the moment it is made, without waiting for the replies to the rounds before
  (Redis answers the commands of one connection in the order they came, so one task reads
  the replies and matches them to the rounds in order). Waiting for a round's replies
  before sending the next one costs the node's event loop two or three turns (write, drain,
  read); on a loaded node a turn takes milliseconds, so the records for other nodes would
  leave late and in a few large entries, and the receiving node would sit idle meanwhile.
- :class:`RoundTripLink`, to a Redis Cluster (whose commands go to several servers): one
  pipeline at a time; what comes meanwhile waits and goes in the next one.

Either tells ``on_failure`` when Redis does not answer, refuses a command, or the
connection breaks: the rounds in flight are dropped then, and their callbacks never run.
Closing a link cancels its tasks until they have ended (:mod:`roost.cluster.tasks`): one
that went on would leave a connection open, or answer a round, after the node has left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from roost.cluster.tasks import cancel_until_done

OnResults = Callable[[list[Any]], None]  # a round's replies, one per command, in order

WRITE_BUFFER_LIMIT = 4 * 1024 * 1024  # bytes written but not yet taken by Redis: stop here


class PipelinedLink:
    """Rounds written on one connection as they come; replies read by one task."""

    def __init__(self, client: Any, on_failure: Callable[[Exception], None]) -> None:
        """``client``: a redis-py asyncio ``Redis``; the link's connection is made with
        its settings (address, credentials, database, timeouts: a reply that takes longer
        than the socket timeout is a failure)."""
        self._client = client
        self._on_failure = on_failure
        self._connection: Any = None
        self._rounds: deque[tuple[list[tuple[str, dict[str, Any]]], OnResults]] = deque()
        self._sent = asyncio.Event()  # set while rounds wait for replies
        self._reader: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[None] | None = None  # connecting, or waiting to drain
        self._waiting: list[Callable[[], None]] = []  # told once the link is ready

    @property
    def ready(self) -> bool:
        return self._connection is not None and self._opening is None

    def when_ready(self, callback: Callable[[], None]) -> None:
        self._waiting.append(callback)
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._get_ready(self._connect()))

    def send(self, pipe: Any, on_results: OnResults) -> None:
        connection = self._connection
        stack = pipe.command_stack
        # Written at once, not from a task (which would start a loop turn later): the
        # connection's stream writer is redis-py's own, the link's alone.
        writer = connection._writer
        writer.writelines(connection.pack_commands([args for args, _ in stack]))
        self._rounds.append(([(args[0], options) for args, options in stack], on_results))
        self._sent.set()
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self._opening = asyncio.get_running_loop().create_task(self._get_ready(writer.drain()))

    async def _get_ready(self, step: Coroutine[Any, Any, None]) -> None:
        """Run ``step`` (connecting, or waiting until Redis has taken what is written,
        while new rounds wait and grow), then tell who waits for the link."""
        try:
            await step
        except (RedisError, OSError) as exc:
            self._fail(exc)
            return
        finally:
            self._opening = None
        self._tell_ready()

    async def _connect(self) -> None:
        if self._connection is None:
            pool = self._client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            await connection.connect()
            self._connection = connection
            self._reader = asyncio.get_running_loop().create_task(self._read(connection))

    def _tell_ready(self) -> None:
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()

    async def _read(self, connection: Any) -> None:
        parse = self._client.parse_response
        rounds = self._rounds
        try:
            while True:
                if not rounds:
                    self._sent.clear()
                    await self._sent.wait()
                commands, on_results = rounds[0]
                results = [await parse(connection, name, **options) for name, options in commands]
                rounds.popleft()
                on_results(results)
        except (RedisError, OSError) as exc:
            if self._connection is connection:
                self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """Drop the connection and the rounds in flight; the next round connects again."""
        connection, self._connection = self._connection, None
        reader, self._reader = self._reader, None
        self._rounds.clear()
        self._waiting = []
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if connection is not None:
            asyncio.get_running_loop().create_task(_disconnect(connection))
        self._on_failure(exc)

    async def aclose(self) -> None:
        # A connect that went on after its cancellation has started a reader: that goes too.
        while tasks := [task for task in (self._opening, self._reader) if task and not task.done()]:
            await cancel_until_done(tasks)
        connection, self._connection = self._connection, None
        if connection is not None:
            await _disconnect(connection)


async def _disconnect(connection: Any) -> None:
    with contextlib.suppress(RedisError, OSError):
        await connection.disconnect()


class RoundTripLink:
    """One pipeline at a time (a Redis Cluster pipeline spans several servers)."""

    def __init__(self, client: Any, on_failure: Callable[[Exception], None]) -> None:
        self._client = client
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        self._waiting: list[Callable[[], None]] = []

    @property
    def ready(self) -> bool:
        return self._task is None

    def when_ready(self, callback: Callable[[], None]) -> None:
        if self._task is None:
            callback()
        else:
            self._waiting.append(callback)

    def send(self, pipe: Any, on_results: OnResults) -> None:
        self._task = asyncio.get_running_loop().create_task(self._execute(pipe, on_results))

    async def _execute(self, pipe: Any, on_results: OnResults) -> None:
        try:
            results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._task = None
            self._waiting = []
            self._on_failure(exc)
            return
        self._task = None
        on_results(results)
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_until_done([self._task])
