"""What a node writes to Redis, gathered over each event-loop turn and sent as one
pipeline: the records for each other node's inbox (one stream entry per destination node
per turn, however many messages it carries) and other commands, in order. One pipeline is
in flight at a time; what comes meanwhile goes in the next one.

Callbacks wait for "everything queued so far is in Redis": PUBACK / PUBREC of a forwarded
message use that (:meth:`Sender.after_sent`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from roost.cluster import keys
from roost.cluster.wire import inbox_entry

log = logging.getLogger("roost.cluster")

Command = Callable[..., object]  # called with client=pipeline: adds ONE command to it
ResultHandler = Callable[[Any], None]


class Sender:
    def __init__(self, redis: Any, on_failure: Callable[[Exception], None]) -> None:
        """``on_failure`` is told when a pipeline fails: what it carried and the callbacks
        waiting for it are dropped (never acknowledged)."""
        self.redis = redis
        self.outgoing: dict[str, list[bytes]] = {}  # node -> records for its inbox
        self._commands: list[tuple[Command, ResultHandler | None]] = []
        self._waiting: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._on_failure = on_failure
        self.entries = 0  # stream entries sent to other nodes
        # Told of the destinations of each pipeline before it is made (it may add commands)
        self.before_round: Callable[[Collection[str]], None] | None = None

    def record(self, node: str, record: bytes) -> None:
        """Add a record to ``node``'s next inbox entry."""
        self.outgoing.setdefault(node, []).append(record)
        self.schedule()

    def broadcast(self, record: bytes, nodes: Iterable[str]) -> None:
        for node in nodes:
            self.record(node, record)

    def command(self, command: Command, on_result: ResultHandler | None = None) -> None:
        """Add a command to the next pipeline; ``on_result`` gets its reply."""
        self._commands.append((command, on_result))
        self.schedule()

    def after_sent(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every record queued so far is in Redis."""
        if not self.outgoing and self._task is None:
            callback()
        else:
            self._waiting.append(callback)
            self.schedule()

    async def sent(self) -> None:
        """Wait until everything queued so far is in Redis."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(partial(resolve, done))
        self.schedule()
        await done

    def schedule(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.flush()
        except (RedisError, OSError) as exc:
            log.error("writing to the cluster's Redis failed: %s", exc)
            self.outgoing = {}
            self._commands = []
            self._waiting = []
            self._on_failure(exc)
        finally:
            self._task = None

    async def flush(self) -> None:
        """Send everything queued, one pipeline per round, until nothing is left."""
        while self.outgoing or self._commands or self._waiting:
            if self.before_round is not None and self.outgoing:
                self.before_round(self.outgoing.keys())
            outgoing, self.outgoing = self.outgoing, {}
            commands, self._commands = self._commands, []
            waiting, self._waiting = self._waiting, []
            pipe = self.redis.pipeline(transaction=False)
            sent_at = time.time()
            for node, records in outgoing.items():
                pipe.xadd(keys.inbox(node), inbox_entry(b"".join(records), sent_at))
            self.entries += len(outgoing)
            for command, _ in commands:
                command(client=pipe)
            results = await pipe.execute()
            for (_, on_result), result in zip(commands, results[len(outgoing) :], strict=True):
                if on_result is not None:
                    on_result(result)
            for callback in waiting:
                callback()


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def eval_script(script: str, script_keys: list[str], args: list[object], client: Any) -> None:
    """Add a Lua script to a pipeline, sent whole: short, and it survives a Redis restart
    (which forgets loaded scripts)."""
    client.eval(script, len(script_keys), *script_keys, *args)
