"""Keeps the in-memory cluster route table (:class:`~roost.cluster.routes.ClusterRoutes`)
in step with Redis: this node's filters announced, the other nodes' followed.

Each node keeps its set of filters in Redis and announces every change on its own sharded
channel with a version number; the changes of one loop turn go in one announcement. A
follower applies announcements in version order; a gap (a missed announcement: pub/sub
is at most once) or a heartbeat carrying a newer version makes it read the whole set
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import RedisError

from roost.cluster import keys, scripts
from roost.cluster.membership import NodeInfo
from roost.cluster.routes import ClusterRoutes
from roost.cluster.sender import Sender, eval_script

log = logging.getLogger("roost.cluster")


class RouteSync:
    def __init__(
        self,
        redis: Any,
        node_id: str,
        table: ClusterRoutes,
        sender: Sender,
        interval: float,
        alive: Callable[[str], bool],
    ) -> None:
        """``interval``: how long a listener waits between tries; ``alive`` tells a live
        node from a dead one (whose routes stay until its adopter withdraws them)."""
        self.redis = redis
        self.node_id = node_id
        self.table = table
        self.sender = sender
        self.interval = interval
        self.alive = alive
        self.version = 0  # of this node's own set, as last written
        self._known: dict[str, int] = {}  # other node -> version applied
        self._ops: list[str] = []  # "+filter", "-filter", "=" (empty the set)
        self._queued = False
        self._pubsub: Any = redis.pubsub()
        self._following = asyncio.Event()  # set once a node is followed: listen then

    # -- this node's routes -------------------------------------------------------------------

    def added(self, topic_filter: str) -> None:
        self.table.add(self.node_id, topic_filter)
        self._change("+" + topic_filter)

    def removed(self, topic_filter: str) -> None:
        self.table.remove(self.node_id, topic_filter)
        self._change("-" + topic_filter)

    def announce_all(self, filters: Iterable[str]) -> None:
        """Replace this node's set in Redis by ``filters``."""
        wanted = list(filters)
        self.table.replace(self.node_id, wanted)
        self._ops = ["="]
        self._change(*("+" + topic_filter for topic_filter in wanted))

    def _change(self, *ops: str) -> None:
        self._ops.extend(ops)
        if not self._queued:
            self._queued = True
            self.sender.command(self._write, self._written)

    def _write(self, client: Any) -> None:
        """Add the changes gathered so far, as one script, to the pipeline."""
        ops, self._ops = self._ops, []
        self._queued = False
        node = self.node_id
        eval_script(
            scripts.CHANGE_ROUTES,
            [keys.routes(node), keys.routes_version(node)],
            [keys.routes_channel(node), *ops],
            client=client,
        )

    def _written(self, version: Any) -> None:
        self.version = int(version)

    # -- the other nodes' routes --------------------------------------------------------------

    async def follow(self, node: str) -> None:
        """Start following a node that joined: its announcements, then its whole set."""
        await self._pubsub.ssubscribe(keys.routes_channel(node))
        self._following.set()
        await self.load(node)

    async def load(self, node: str) -> None:
        """Read a node's whole set (and its version) again."""
        version, filters = await self.redis.eval(
            scripts.READ_TOGETHER,
            2,
            keys.routes_version(node),
            keys.routes(node),
            "GET",
            "SMEMBERS",
        )
        self.table.replace(node, (topic_filter.decode() for topic_filter in filters))
        self._known[node] = int(version or 0)

    async def catch_up(self, infos: Iterable[NodeInfo]) -> None:
        """Read again the set of every node whose heartbeat shows a newer version than
        what was applied here."""
        for info in infos:
            if info.routes > self._known.get(info.node_id, 0):
                await self.load(info.node_id)

    async def listen(self) -> None:
        """Apply the announcements of the nodes followed (a task, until cancelled).

        A Redis failure while applying an announcement (reading a node's whole set,
        leaving a dead node's channel) is met as one while waiting for it: logged, waited
        out, and the listener goes on; a listener that ended would leave the route table
        behind for good (and its error would come out of the node's stop). What it could
        not apply is read again: a set that could not be read keeps its old version here,
        so the next announcement shows a gap, and the heartbeat's catch_up reads it again
        as soon as the node's heartbeat shows a newer version. redis-py subscribes again
        to every channel when it reconnects. A malformed announcement is logged and
        skipped."""
        while True:
            if not self._pubsub.subscribed:
                # Following no node (yet): wait for the first one, not for a fixed time,
                # so that its first announcement is read at once.
                self._following.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._following.wait(), self.interval)
                continue
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.interval
                )
                if message is not None and message["type"] == "smessage":
                    node = keys.node_of_routes_channel(message["channel"].decode())
                    await self._apply(node, message["data"])
            except (RedisError, OSError) as exc:
                log.debug("route announcements interrupted: %s", exc)
                await asyncio.sleep(self.interval)
            except ValueError as exc:  # not a version, not UTF-8: from no Roost node
                log.warning("a malformed route announcement was ignored: %s", exc)

    async def _apply(self, node: str, data: bytes) -> None:
        version_raw, *ops = data.decode().split("\0")
        version = int(version_raw)
        known = self._known.get(node, 0)
        if version <= known:
            return
        if version > known + 1:
            await self.load(node)
            return
        self._known[node] = version
        table = self.table
        for op in ops:
            if op.startswith("+"):
                table.add(node, op[1:])
            elif op.startswith("-"):
                table.remove(node, op[1:])
            else:
                table.drop_node(node)
        if not self.alive(node) and not table.filters_of(node):
            # A dead node's routes are withdrawn (by its adopter): stop following it.
            self._known.pop(node, None)
            await self._pubsub.sunsubscribe(keys.routes_channel(node))

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
