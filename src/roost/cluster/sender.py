"""What a node writes to Redis, gathered over each event-loop turn and sent as one round:
the records for each other node's inbox (one stream entry per destination node per turn,
however many messages it carries) and other commands, in order. Rounds go out through a
:mod:`~roost.cluster.redislinks` link: to a single Redis server each at the end of the
turn that made it, without waiting for the replies to the ones before.

Callbacks wait for "everything queued so far is in Redis": PUBACK / PUBREC of a forwarded
message use that (:meth:`Sender.after_sent`).

Once closed (the node has left its cluster), a sender sends nothing more: what is queued
afterwards (the XTRIM of an inbox when the store's last commit completes, a RELEASED
answer) is dropped, as a failed round's is, and logged at debug. A round would connect
again after the node has left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any, Protocol

from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from roost.cluster import keys
from roost.cluster.redislinks import OnResults, PipelinedLink, RoundTripLink
from roost.cluster.wire import inbox_entry

log = logging.getLogger("roost.cluster")

Command = Callable[..., object]  # called with client=pipeline: adds ONE command to it
ResultHandler = Callable[[Any], None]


class Link(Protocol):
    """A way to Redis for rounds (:mod:`roost.cluster.redislinks`)."""

    @property
    def ready(self) -> bool:
        """Whether a round may be sent now."""

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once a round may be sent (connecting first if need be)."""

    def send(self, pipe: Any, on_results: OnResults) -> None:
        """Send the commands of the pipeline object ``pipe``; ``on_results`` gets their
        replies once they have all come."""

    async def aclose(self) -> None: ...


class SenderClosed(RedisConnectionError):
    """The sender is closed: what waits for it is never sent. A redis-py ConnectionError,
    so that a caller that handles an unreachable Redis handles this as well."""


class Sender:
    def __init__(self, redis: Any, on_failure: Callable[[Exception], None]) -> None:
        """``on_failure`` is told when a round fails: what it carried, what was queued and
        the callbacks waiting for them are dropped (never acknowledged)."""
        self.redis = redis
        self.outgoing: dict[str, list[bytes]] = {}  # node -> records for its inbox
        self._commands: list[tuple[Command, ResultHandler | None]] = []
        self._waiting: list[Callable[[], None]] = []  # for the next round
        self._last_waiting: list[Callable[[], None]] = []  # for the last round in flight
        self._in_flight = 0  # rounds sent whose replies have not all come
        self._sent_futures: set[asyncio.Future[None]] = set()
        self._due: asyncio.Handle | None = None  # the end-of-turn round, once scheduled
        self._on_failure = on_failure
        self._closed = False
        link = RoundTripLink if isinstance(redis, RedisCluster) else PipelinedLink
        self._link: Link = link(redis, self._failed)
        self.entries = 0  # stream entries sent to other nodes
        # Told of the destinations of each round before it is made (it may add commands)
        self.before_round: Callable[[Collection[str]], None] | None = None

    def record(self, node: str, record: bytes) -> None:
        """Add a record to ``node``'s next inbox entry."""
        self.outgoing.setdefault(node, []).append(record)
        self.schedule()

    def broadcast(self, record: bytes, nodes: Iterable[str]) -> None:
        for node in nodes:
            self.record(node, record)

    def command(self, command: Command, on_result: ResultHandler | None = None) -> None:
        """Add a command to the next round; ``on_result`` gets its reply."""
        self._commands.append((command, on_result))
        self.schedule()

    def after_sent(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every record queued so far is in Redis (never, once the
        sender is closed)."""
        if self._closed:
            log.debug("a callback waiting for the cluster's Redis after it closed is dropped")
        elif self.outgoing or self._commands or self._waiting:
            self._waiting.append(callback)
            self.schedule()
        elif self._in_flight:
            self._last_waiting.append(callback)
        else:
            callback()

    async def sent(self) -> None:
        """Wait until everything queued so far is in Redis; raises what made it fail
        (:class:`SenderClosed` once the sender is closed)."""
        if self._closed:
            raise SenderClosed("the node's link to the cluster's Redis is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent_futures.add(done)
        done.add_done_callback(self._sent_futures.discard)
        self.after_sent(partial(resolve, done))
        await done

    def schedule(self) -> None:
        """Send what is queued at the end of this loop turn (drop it if closed)."""
        if self._closed:
            self._drop_late()
        elif self._due is None:
            self._due = asyncio.get_running_loop().call_soon(self._send_round)

    def _send_round(self) -> None:
        self._due = None
        if not (self.outgoing or self._commands or self._waiting):
            return
        link = self._link
        if not link.ready:  # connecting, or Redis is behind: what comes joins this round
            link.when_ready(self.schedule)
            return
        if self.before_round is not None and self.outgoing:
            self.before_round(self.outgoing.keys())
        outgoing, self.outgoing = self.outgoing, {}
        commands, self._commands = self._commands, []
        waiting, self._waiting = self._waiting, []
        if not outgoing and not commands:  # callbacks only: they wait for the last round
            if self._in_flight:
                self._last_waiting.extend(waiting)
            else:
                for callback in waiting:
                    callback()
            return
        pipe = self.redis.pipeline(transaction=False)
        sent_at = time.time()
        for node, records in outgoing.items():
            pipe.xadd(keys.inbox(node), inbox_entry(b"".join(records), sent_at))
        self.entries += len(outgoing)
        for command, _ in commands:
            command(client=pipe)
        self._in_flight += 1
        self._last_waiting = waiting
        handlers = [on_result for _, on_result in commands]
        link.send(pipe, partial(self._round_done, len(outgoing), handlers, waiting))

    def _round_done(
        self,
        entries: int,
        handlers: list[ResultHandler | None],
        waiting: list[Callable[[], None]],
        results: list[Any],
    ) -> None:
        self._in_flight -= 1
        for on_result, result in zip(handlers, results[entries:], strict=True):
            if on_result is not None:
                on_result(result)
        for callback in waiting:
            callback()

    def _failed(self, exc: Exception) -> None:
        log.error("writing to the cluster's Redis failed: %s", exc)
        self._drop_all(exc)
        self._on_failure(exc)

    def _drop_all(self, exc: Exception) -> None:
        """Drop what is queued and in flight; who waits for it in :meth:`sent` gets ``exc``,
        callbacks never run (nothing is acknowledged)."""
        self.outgoing = {}
        self._commands = []
        self._waiting = []
        self._last_waiting = []
        self._in_flight = 0
        for future in list(self._sent_futures):
            if not future.done():
                future.set_exception(exc)

    def _drop_late(self) -> None:
        """Drop what was queued after the sender closed."""
        log.debug(
            "dropping %d inbox records and %d commands queued after the link to the"
            " cluster's Redis closed",
            sum(len(records) for records in self.outgoing.values()),
            len(self._commands),
        )
        self._drop_all(SenderClosed("queued after the link to the cluster's Redis closed"))

    async def aclose(self) -> None:
        """Close the link; what is queued or in flight, and whatever comes later, is dropped."""
        self._closed = True
        if self._due is not None:
            self._due.cancel()
            self._due = None
        await self._link.aclose()
        self._drop_all(SenderClosed("the link to the cluster's Redis closed"))


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def eval_script(script: str, script_keys: list[str], args: list[object], client: Any) -> None:
    """Add a Lua script to a pipeline, sent whole: short, and it survives a Redis restart
    (which forgets loaded scripts)."""
    client.eval(script, len(script_keys), *script_keys, *args)
