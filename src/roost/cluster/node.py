"""A broker node's membership of a cluster over Redis/Valkey: the I/O side of the cluster.

- **Membership.** The node claims its id (refused if a live node has it), then beats:
  every ``node_timeout / 4`` it rewrites its heartbeat record (which expires after
  ``node_timeout``) and reads the others' (see :mod:`roost.cluster.membership`). When no
  beat has succeeded for ``node_timeout``, the node is cut off: it closes its clients and
  refuses CONNECT until Redis answers again, then joins again.
- **Routes.** The node keeps its own set of topic filters in Redis and announces each
  change on a sharded channel; it holds every node's set in memory
  (:class:`~roost.cluster.routes.ClusterRoutes`), read in full when a node joins or a
  change was missed.
- **Relay.** A message goes to the inbox stream of each node with matching subscribers:
  the records for one node in one loop turn become one stream entry, all entries in one
  pipeline. Streams keep what they hold when a reader stalls or dies (pub/sub would drop
  it), so PUBACK / PUBREC wait for the pipeline (:meth:`after_forwarded`). The receiving
  node trims its inbox once what it read is durable on its side.
- **Ownership.** A client id has one owner cluster-wide, claimed atomically with an epoch;
  the previous owner, if another live node, is told to close the client's connection and
  let the session go (0x8E), and answers once the session is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Container
from functools import partial
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from roost import __version__
from roost.attach import ClaimRefused
from roost.cluster import keys
from roost.cluster.membership import NodeInfo, Peers
from roost.cluster.routes import ClusterRoutes
from roost.cluster.wire import (
    Kick,
    Relayed,
    Released,
    decode_batch,
    encode_kick,
    encode_publish,
    encode_released,
)
from roost.core import BrokerCore
from roost.errors import ProtocolError, RoostError
from roost.message import Message
from roost.session import Session

log = logging.getLogger("roost.cluster")

READ_BATCH = 64  # inbox entries read per call
READ_BLOCK_MS = 1000  # how long one read waits for entries

# Claims the node id, or renews the claim: the heartbeat record is written only while its
# token is ours. Returns nil, or the token of the live node that holds the id.
_BEAT = """
local current = redis.call('HGET', KEYS[1], 'token')
if current and current ~= ARGV[1] then return current end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'address', ARGV[3], 'connections', ARGV[4],
  'version', ARGV[5], 'started', ARGV[6], 'beat', ARGV[7], 'routes', ARGV[8],
  'redirect', ARGV[9], 'at', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return false
"""

# Applies changes to a node's route set ("+filter", "-filter", "=" to empty it), moves its
# version on and announces version and changes, NUL-separated (NUL is in no topic filter).
_CHANGE_ROUTES = """
for i = 2, #ARGV do
  local op = string.sub(ARGV[i], 1, 1)
  local topic_filter = string.sub(ARGV[i], 2)
  if op == '+' then redis.call('SADD', KEYS[1], topic_filter)
  elseif op == '-' then redis.call('SREM', KEYS[1], topic_filter)
  else redis.call('DEL', KEYS[1]) end
end
local version = redis.call('INCR', KEYS[2])
redis.call('SPUBLISH', ARGV[1], version .. '\\0' .. table.concat(ARGV, '\\0', 2))
return version
"""

# Makes a node the owner of a client id; returns the previous owner ('' if none) and the
# new epoch, which fences out what the previous owner still does.
_CLAIM_CLIENT = """
local previous = redis.call('HGET', KEYS[1], 'node')
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[1])
return {previous or '', epoch}
"""

# Forgets the owner of a client id if it is still this node under this epoch.
_RELEASE_CLIENT = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1]
  and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ClusterError(RoostError):
    """The node cannot join its cluster (its id is taken, Redis is unreachable)."""


class SessionSource(Protocol):
    """A store that loads one session on demand (the Redis store)."""

    async def fetch_session(self, client_id: str, now: float) -> Session | None: ...


Command = Callable[..., object]  # called with client=pipeline: adds its command to it


class ClusterNode:
    """This node's part in the cluster: the :class:`~roost.core.ClusterBus` of its core
    and the :class:`~roost.attach.SessionClaimer` of its attach step."""

    def __init__(
        self,
        core: BrokerCore,
        redis: Redis,
        reader: Redis,
        node_id: str,
        address: str,
        sessions: SessionSource | None = None,
        on_fatal: Callable[[RoostError], None] | None = None,
    ) -> None:
        """``redis`` runs commands (its socket timeout bounds a stalled Redis); ``reader``
        is for blocking inbox reads; ``sessions`` loads stored sessions on demand."""
        settings = core.settings
        self.core = core
        # redis-py's annotations do not tell the asyncio client's results from the sync
        # one's; these are used as what they are at run time.
        self.redis: Any = redis
        self.reader: Any = reader
        self.node_id = node_id
        self.address = address
        self.sessions = sessions
        self._on_fatal = on_fatal
        self.timeout = settings.node_timeout_ms / 1000
        self.interval = self.timeout / 4
        self.clock = core.clock
        self.peers = Peers(node_id, self.timeout)
        self.routes = ClusterRoutes(node_id)
        self.cut_off = False
        self.started = time.time()
        self._token = secrets.token_hex(8)
        self._beat_count = 0
        self.announced = (0.0, 0)  # (wall-clock time, connections) of the last heartbeat
        self._routes_version = 0  # of the own route set
        self._peer_route_versions: dict[str, int] = {}
        self._outgoing: dict[str, list[bytes]] = {}  # node -> records for its inbox
        self._commands: list[Command] = []
        self._waiting: list[Callable[[], None]] = []  # after_forwarded callbacks
        self._route_ops: list[str] = []
        self._flushing: asyncio.Task[None] | None = None
        self._epochs: dict[str, int] = {}  # client id -> epoch of this node's claim
        self._releases: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = redis.pubsub()
        self._beat: Any = redis.register_script(_BEAT)
        self._claim_client: Any = redis.register_script(_CLAIM_CLIENT)
        self.forwarded_messages = 0  # records sent to other nodes
        self.forward_entries = 0  # stream entries that carried them

    # -- joining and leaving ----------------------------------------------------------------

    async def start(self) -> None:
        """Claim the node id, load the route table, announce this node's routes and start
        the heartbeat, the inbox reader and the route listener."""
        try:
            holder = await self._send_beat()
        except (RedisError, OSError) as exc:
            raise ClusterError(f"cannot reach the cluster's Redis: {exc}") from exc
        if holder is not None:
            raise ClusterError(f"node id {self.node_id!r} is already in use by a live node")
        await self.redis.delete(keys.inbox(self.node_id))  # a former run's, adopted since
        await self.redis.sadd(keys.NODES, self.node_id)
        await self._read_peers()
        self.core.join(self)
        self._announce_all_routes()
        await self._flush_now()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat()),
            loop.create_task(self._read_inbox()),
            loop.create_task(self._listen_routes()),
        ]
        log.info(
            "node %s joined the cluster (%d other nodes) at %s",
            self.node_id,
            len(self.peers.alive),
            self.address,
        )

    async def stop(self) -> None:
        """Leave the cluster: forward what is pending, withdraw routes and heartbeat."""
        with contextlib.suppress(RedisError, OSError):
            await self._flush_now()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(keys.node(self.node_id), keys.routes(self.node_id))
            pipe.delete(keys.inbox(self.node_id), keys.routes_version(self.node_id))
            pipe.srem(keys.NODES, self.node_id)
            await pipe.execute()
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        log.info("node %s left the cluster", self.node_id)

    # -- the bus of the core ------------------------------------------------------------------

    def forward(self, message: Message) -> tuple[int, Container[str]]:
        remote, own_shared = self.routes.destinations(message.topic)
        if message.retain:  # every node keeps every retained message
            for node in self.peers.alive:
                remote.setdefault(node, [])
        if not remote:
            return 0, own_shared
        now = self.clock()
        plain = b""
        outgoing = self._outgoing
        for node, shared in remote.items():
            if shared:
                record = encode_publish(message, tuple(shared), now)
            else:
                plain = plain or encode_publish(message, (), now)
                record = plain
            records = outgoing.get(node)
            if records is None:
                outgoing[node] = [record]
            else:
                records.append(record)
        self.forwarded_messages += len(remote)
        self._schedule_flush()
        return len(remote), own_shared

    def after_forwarded(self, callback: Callable[[], None]) -> None:
        if not self._outgoing and self._flushing is None:
            callback()
        else:
            self._waiting.append(callback)
            self._schedule_flush()

    def route_added(self, topic_filter: str) -> None:
        self.routes.add(self.node_id, topic_filter)
        self._route_ops.append("+" + topic_filter)
        self._schedule_flush()

    def route_removed(self, topic_filter: str) -> None:
        self.routes.remove(self.node_id, topic_filter)
        self._route_ops.append("-" + topic_filter)
        self._schedule_flush()

    def session_ended(self, client_id: str) -> None:
        epoch = self._epochs.pop(client_id, None)
        if epoch is not None:
            self._command(
                partial(_eval, _RELEASE_CLIENT, [keys.owner(client_id)], [self.node_id, epoch])
            )

    def _announce_all_routes(self) -> None:
        """Replace this node's route set in Redis by what the router holds."""
        filters = list(self.core.router.filters())
        self.routes.replace(self.node_id, filters)
        self._route_ops = ["=", *("+" + topic_filter for topic_filter in filters)]
        self._schedule_flush()

    # -- sending ------------------------------------------------------------------------------

    def _command(self, command: Command) -> None:
        self._commands.append(command)
        self._schedule_flush()

    def _send_record(self, node: str, record: bytes) -> None:
        self._outgoing.setdefault(node, []).append(record)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Send what the loop turns gathered, one pipeline at a time, in order; then run
        the callbacks that waited for it. A failure cuts the node off: what was not sent
        is never acknowledged, and clients resend it after reconnecting."""
        try:
            await self._flush_now()
        except (RedisError, OSError) as exc:
            log.error("forwarding to the cluster failed: %s", exc)
            self._waiting = []
            self._outgoing = {}
            self._become_cut_off()
        finally:
            self._flushing = None

    async def _flush_now(self) -> None:
        while self._outgoing or self._commands or self._route_ops or self._waiting:
            outgoing, self._outgoing = self._outgoing, {}
            commands, self._commands = self._commands, []
            route_ops, self._route_ops = self._route_ops, []
            waiting, self._waiting = self._waiting, []
            pipe = self.redis.pipeline(transaction=False)
            for node, records in outgoing.items():
                pipe.xadd(keys.inbox(node), {"b": b"".join(records)})
            self.forward_entries += len(outgoing)
            if route_ops:
                _eval(
                    _CHANGE_ROUTES,
                    [keys.routes(self.node_id), keys.routes_version(self.node_id)],
                    [keys.routes_channel(self.node_id), *route_ops],
                    client=pipe,
                )
            for command in commands:
                command(client=pipe)
            results = await pipe.execute()
            if route_ops:
                self._routes_version = int(results[len(outgoing)])
            for callback in waiting:
                callback()

    # -- receiving ----------------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        """Read this node's inbox in order and hand each record to the core."""
        key = keys.inbox(self.node_id)
        last = "0-0"
        while True:
            try:
                response = await self.reader.xread(
                    {key: last}, count=READ_BATCH, block=READ_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                log.debug("reading the inbox failed: %s", exc)
                await asyncio.sleep(self.interval)
                continue
            for _stream, entries in response:
                for entry_id, fields in entries:
                    self._handle_batch(fields[b"b"])
                    last = entry_id.decode()
                self.core.store.after_commit(partial(self._trim_inbox, last))

    def _trim_inbox(self, last: str) -> None:
        """Everything up to ``last`` is durable here: drop it from the inbox."""
        milliseconds, sequence = last.split("-")
        self._command(
            partial(
                _xtrim_command,
                keys.inbox(self.node_id),
                f"{milliseconds}-{int(sequence) + 1}",
            )
        )

    def _handle_batch(self, data: bytes) -> None:
        try:
            records = list(decode_batch(data, self.clock()))
        except ProtocolError as exc:
            log.error("dropping a malformed batch from the inbox: %s", exc)
            return
        for record in records:
            try:
                if isinstance(record, Relayed):
                    self.core.publish_relayed(record.message, record.shared)
                elif isinstance(record, Kick):
                    self._on_kick(record)
                else:
                    self._on_released(record)
            except Exception:
                log.exception("error handling a record from another node")

    def _on_kick(self, kick: Kick) -> None:
        """Another node took a client over: close it here and let the session go; answer
        once the session is durable, so the new owner loads all of it."""
        mine = self._epochs.get(kick.client_id)
        if mine is not None and mine > kick.epoch:
            return  # this node claimed it again since
        self._epochs.pop(kick.client_id, None)
        self.core.kick(kick.client_id)
        released = encode_released(Released(kick.client_id, kick.epoch))
        self.core.store.after_commit(partial(self._send_record, kick.reply_to, released))

    def _on_released(self, released: Released) -> None:
        waiting = self._releases.get(released.client_id)
        if waiting is not None and waiting[0] == released.epoch and not waiting[1].done():
            waiting[1].set_result(None)

    # -- ownership (the claimer of the attach step) ---------------------------------------

    async def claim(self, client_id: str) -> None:
        """Make this node the owner of ``client_id``; if another live node owned it, wait
        (at most ``node_timeout``) for it to let the session go, then load the session."""
        if self.cut_off:
            raise ClaimRefused("this node is cut off from its cluster")
        previous_raw, epoch = await self._claim_client(
            keys=[keys.owner(client_id)], args=[self.node_id]
        )
        previous = previous_raw.decode() if isinstance(previous_raw, bytes) else previous_raw
        self._epochs[client_id] = int(epoch)
        if previous and previous != self.node_id and previous in self.peers.alive:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._releases[client_id] = (int(epoch), future)
            self._send_record(previous, encode_kick(Kick(client_id, int(epoch), self.node_id)))
            try:
                await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                log.warning(
                    "node %s did not release client %s in time; taking it over", previous, client_id
                )
            finally:
                if self._releases.get(client_id, (0, None))[1] is future:
                    del self._releases[client_id]
        if self.sessions is not None and client_id not in self.core.sessions:
            session = await self.sessions.fetch_session(client_id, self.clock())
            if session is not None:
                self.core.install_session(session)

    # -- membership ---------------------------------------------------------------------------

    async def _send_beat(self) -> str | None:
        """Write the heartbeat record; the token of another holder of the id, or None."""
        self._beat_count += 1
        connections = len(self.core.connections)
        at = time.time()
        holder = await self._beat(
            keys=[keys.node(self.node_id)],
            args=[
                self._token,
                int(self.timeout * 1000),
                self.address,
                connections,
                __version__,
                self.started,
                self._beat_count,
                self._routes_version,
                self.core.settings.redirect,
                at,
            ],
        )
        self.announced = (at, connections)
        return None if holder is None else str(holder)

    async def _heartbeat(self) -> None:
        last_success = self.clock()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.wait_for(self._beat_and_watch(), self.interval * 2)
            except (RedisError, OSError, TimeoutError) as exc:
                silent = self.clock() - last_success
                log.debug("heartbeat failed after %.1f s: %r", silent, exc)
                if not self.cut_off and silent >= self.timeout:
                    self._become_cut_off()
                continue
            except ClusterError as exc:
                log.error("%s", exc)
                if self._on_fatal is not None:
                    self._on_fatal(exc)
                return
            last_success = self.clock()

    async def _beat_and_watch(self) -> None:
        holder = await self._send_beat()
        if holder is not None:
            raise ClusterError(
                f"node id {self.node_id!r} was taken by another node while this one was"
                " cut off from the cluster"
            )
        if self.cut_off:
            await self._rejoin()
        await self._read_peers()

    async def _read_peers(self) -> None:
        """Read every node's heartbeat record; start following new nodes, forget dead ones,
        reload a route set whose announcements were missed."""
        members = [
            member.decode()
            for member in await self.redis.smembers(keys.NODES)
            if member.decode() != self.node_id
        ]
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(keys.node(member))
        records = await pipe.execute()
        infos = [
            _node_info(member, record)
            for member, record in zip(members, records, strict=True)
            if record
        ]
        joined, dead = self.peers.update(infos, self.clock())
        for node in dead:
            self._peer_died(node)
        for info in joined:
            log.info("node %s joined at %s", info.node_id, info.address)
            await self._pubsub.ssubscribe(keys.routes_channel(info.node_id))
            await self._load_routes(info.node_id)
        for info in self.peers.alive.values():
            if info.routes > self._peer_route_versions.get(info.node_id, 0):
                await self._load_routes(info.node_id)

    def _peer_died(self, node: str) -> None:
        log.warning("node %s is dead (no heartbeat for %.1f s)", node, self.timeout)
        self.routes.drop_node(node)
        self._peer_route_versions.pop(node, None)
        self._command(lambda client: client.srem(keys.NODES, node))
        asyncio.get_running_loop().create_task(self._pubsub.sunsubscribe(keys.routes_channel(node)))

    async def _load_routes(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=True)  # both keys share the node's slot
        pipe.get(keys.routes_version(node))
        pipe.smembers(keys.routes(node))
        version, filters = await pipe.execute()
        if node not in self.peers.alive:
            return
        self.routes.replace(node, (topic_filter.decode() for topic_filter in filters))
        self._peer_route_versions[node] = int(version or 0)

    async def _listen_routes(self) -> None:
        """Apply the route changes other nodes announce, in their order; a gap in a
        node's versions means a missed announcement: its whole set is read again."""
        while True:
            if not self._pubsub.subscribed:
                await asyncio.sleep(self.interval)
                continue
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.interval
                )
            except (RedisError, OSError) as exc:
                log.debug("route announcements interrupted: %s", exc)
                await asyncio.sleep(self.interval)
                continue
            if message is None or message["type"] != "smessage":
                continue
            node = message["channel"].decode().removeprefix(keys.PREFIX + ":{node:")
            node = node.removesuffix("}:routes-changed")
            await self._apply_routes(node, message["data"])

    async def _apply_routes(self, node: str, data: bytes) -> None:
        if node not in self.peers.alive:
            return
        version_raw, *ops = data.decode().split("\0")
        version = int(version_raw)
        known = self._peer_route_versions.get(node, 0)
        if version <= known:
            return
        if version > known + 1:
            await self._load_routes(node)
            return
        self._peer_route_versions[node] = version
        for op in ops:
            if op.startswith("+"):
                self.routes.add(node, op[1:])
            elif op.startswith("-"):
                self.routes.remove(node, op[1:])
            else:
                self.routes.drop_node(node)

    # -- cut off ----------------------------------------------------------------------------

    def _become_cut_off(self) -> None:
        """A node that cannot see the cluster must not serve a split view: close every
        client and refuse CONNECT until Redis answers again."""
        if self.cut_off:
            return
        self.cut_off = True
        log.error(
            "node %s is cut off from the cluster: closing its clients until Redis is back",
            self.node_id,
        )
        self.core.shutdown()

    async def _rejoin(self) -> None:
        log.info("node %s reaches the cluster again; joining", self.node_id)
        await self.redis.sadd(keys.NODES, self.node_id)
        self._announce_all_routes()
        await self._flush_now()
        for node in list(self.peers.alive):
            await self._load_routes(node)
        self.cut_off = False


def _node_info(node_id: str, record: dict[bytes, bytes]) -> NodeInfo:
    def text(name: str) -> str:
        return record.get(name.encode(), b"").decode()

    def number(name: str) -> float:
        try:
            return float(text(name) or 0)
        except ValueError:
            return 0.0

    return NodeInfo(
        node_id,
        text("address"),
        int(number("connections")),
        text("version"),
        number("started"),
        int(number("beat")),
        int(number("routes")),
        text("redirect") or "never",
        number("at"),
    )


def _eval(script: str, script_keys: list[str], args: list[object], client: Any) -> None:
    """Add a Lua script to a pipeline (sent whole: these scripts run rarely)."""
    client.eval(script, len(script_keys), *script_keys, *args)


def _xtrim_command(key: str, minimum_id: str, client: Any) -> None:
    client.xtrim(key, minid=minimum_id)
