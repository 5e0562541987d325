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
from roost.cluster import keys, scripts
from roost.cluster.adoption import Adoption
from roost.cluster.clients import READ_BLOCK_MS
from roost.cluster.membership import NodeInfo, Peers
from roost.cluster.routes import ClusterRoutes
from roost.cluster.wire import (
    CHECK,
    Decide,
    Kick,
    Prepared,
    Relayed,
    Released,
    TransactionSettled,
    decode_batch,
    encode_decide,
    encode_kick,
    encode_prepared,
    encode_publish,
    encode_released,
    encode_settled,
)
from roost.core import BrokerCore
from roost.errors import ProtocolError, RoostError
from roost.message import Message
from roost.negotiation import ConnectTerms
from roost.session import Session, SubscriptionOptions
from roost.store.records import encode_will
from roost.transactions import Decision, HalfMessage, Settled

log = logging.getLogger("roost.cluster")

READ_BATCH = 64  # inbox entries read per call
CLAIM_ATTEMPTS = 3  # compare-and-set rounds before a contended claim is refused
ADOPTION_GRACE_TIMEOUTS = 2  # node timeouts an adopter keeps reading a dead node's inbox


class ClusterError(RoostError):
    """The node cannot join its cluster (its id is taken, Redis is unreachable)."""


class AdoptionInProgress(ClusterError):
    """Another node is taking over what this node id held: join once it is done."""


class SessionSource(Protocol):
    """A store that loads one session on demand (the Redis store)."""

    async def fetch_session(self, client_id: str, now: float) -> Session | None: ...

    async def fetch_subscriptions(self, client_id: str) -> dict[str, SubscriptionOptions]: ...

    async def fetch_transaction(self, transaction_id: str, now: float) -> HalfMessage | None: ...


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
        self._resync = False  # a beat failed: announcements may have been missed
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
        self.transaction_homes: dict[str, str] = {}  # pending elsewhere -> its node
        self._releases: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._adoptions: dict[str, asyncio.Task[None]] = {}  # dead node -> its adoption
        self._pubsub: Any = redis.pubsub()
        self._beat: Any = redis.register_script(scripts.BEAT)
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
        if holder:
            raise ClusterError(f"node id {self.node_id!r} is already in use by a live node")
        await self._adopt_former_run()
        await self._sort_transactions()
        await self.redis.sadd(keys.NODES, self.node_id)
        await self._read_peers()
        self.core.join(self)
        self.core.node_name = self.node_id
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

    async def _adopt_former_run(self) -> None:
        """Take back what a former run of this node id held, unless another node is
        taking it over (then refuse to start until it is done)."""
        me = self.node_id
        adopter = await self.redis.get(keys.adopter(me))
        if adopter is not None and adopter.decode() != me:
            raise AdoptionInProgress(
                f"node {adopter.decode()} is taking over what the former run of node {me!r}"
                " held; start again in a moment"
            )
        if not await self.redis.exists(keys.clients(me), keys.inbox(me)):
            return
        adoption = self._adoption(me)
        if adopter is None and not await adoption.lock(self.timeout):
            raise AdoptionInProgress(f"another node is taking over what node {me!r} held")
        # Its inbox is read as this run's own, once its sessions are here again.
        await adoption.adopt_clients()
        await self.redis.delete(keys.adopter(me))

    async def stop(self) -> None:
        """Leave the cluster: forward what is pending and stop beating. The heartbeat
        record goes at once, so that another node adopts the sessions kept here (and
        what is on its way to them) without waiting for the timeout."""
        with contextlib.suppress(RedisError, OSError):
            await self._flush_now()
        for task in [*self._tasks, *self._adoptions.values()]:
            task.cancel()
        for task in [*self._tasks, *self._adoptions.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(keys.node(self.node_id))
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
                partial(
                    _eval, scripts.RELEASE_CLIENT, [keys.owner(client_id)], [self.node_id, epoch]
                )
            )
            self._command(partial(_srem, keys.clients(self.node_id), client_id))

    # -- transactions ---------------------------------------------------------------------

    def transaction_prepared(self, transaction_id: str) -> None:
        self._command(partial(_hset, keys.TRANSACTION_HOMES, transaction_id, self.node_id))
        self._broadcast(encode_prepared(Prepared(transaction_id, self.node_id)))

    def transaction_settled(self, transaction_id: str, outcome: Settled) -> None:
        self._command(partial(_hdel, keys.TRANSACTION_HOMES, transaction_id))
        self._broadcast(encode_settled(TransactionSettled(transaction_id, outcome)))

    def forward_decision(self, transaction_id: str, decision: Decision) -> None:
        """To the node holding the transaction; to every node if it is not known here
        (yet: its PREPARED announcement may still be on its way)."""
        record = encode_decide(Decide(transaction_id, decision))
        home = self.transaction_homes.get(transaction_id)
        if home is not None and home in self.peers.alive:
            self._send_record(home, record)
        else:
            self._broadcast(record)

    def send_check(self, request: Message) -> bool:
        nodes = self.routes.nodes_with(request.topic)
        nodes.discard(self.node_id)
        if not nodes:
            return False
        chosen = self.routes.take_turn(request.topic, nodes)
        self._send_record(chosen, encode_publish(request, (), self.clock(), CHECK))
        return True

    def _broadcast(self, record: bytes) -> None:
        for node in self.peers.alive:
            self._send_record(node, record)

    async def _sort_transactions(self) -> None:
        """Keep the pending transactions this node holds (or that nobody holds), let go
        of the others' and learn where they are."""
        homes = {
            key.decode(): value.decode()
            for key, value in (await self.redis.hgetall(keys.TRANSACTION_HOMES)).items()
        }
        transactions = self.core.transactions
        for transaction_id in list(transactions.pending):
            home = homes.get(transaction_id)
            if home is None:
                await self.redis.hsetnx(keys.TRANSACTION_HOMES, transaction_id, self.node_id)
                home = (await self.redis.hget(keys.TRANSACTION_HOMES, transaction_id)).decode()
            if home != self.node_id:
                transactions.hand_over(transaction_id)
        self.transaction_homes = {
            transaction_id: home for transaction_id, home in homes.items() if home != self.node_id
        }

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
                    scripts.CHANGE_ROUTES,
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
        core = self.core
        for record in records:
            try:
                if isinstance(record, Relayed):
                    core.publish_relayed(record.message, record.shared)
                elif isinstance(record, Kick):
                    self._on_kick(record)
                elif isinstance(record, Released):
                    self._on_released(record)
                elif isinstance(record, Prepared):
                    self.transaction_homes[record.transaction_id] = record.node
                elif isinstance(record, TransactionSettled):
                    self.transaction_homes.pop(record.transaction_id, None)
                    core.settled_elsewhere(record.transaction_id, record.outcome)
                elif isinstance(record, Decide):
                    core.apply_decision(record.transaction_id, record.decision)
                else:
                    core.deliver_check(record.request)
            except Exception:
                log.exception("error handling a record from another node")

    def _on_kick(self, kick: Kick) -> None:
        """Another node took a client over: close it here and let the session go; answer
        once the session is durable, so the new owner loads all of it."""
        mine = self._epochs.get(kick.client_id)
        if mine is not None and mine > kick.epoch:
            return  # this node claimed it again since
        self._epochs.pop(kick.client_id, None)
        self._command(partial(_srem, keys.clients(self.node_id), kick.client_id))
        session = self.core.sessions.get(kick.client_id)
        if session is not None:  # the new owner subscribed already; it may not be heard yet
            for topic_filter in session.subscriptions:
                self.routes.add(kick.reply_to, topic_filter)
        self.core.kick(kick.client_id)
        released = encode_released(Released(kick.client_id, kick.epoch))
        self.core.store.after_commit(partial(self._send_record, kick.reply_to, released))

    def _on_released(self, released: Released) -> None:
        waiting = self._releases.get(released.client_id)
        if waiting is not None and waiting[0] == released.epoch and not waiting[1].done():
            waiting[1].set_result(None)

    # -- ownership (the claimer of the attach step) ---------------------------------------

    async def claim(self, terms: ConnectTerms) -> None:
        """Make this node the one owner of the client id, taking its session over from the
        node that has it.

        From a live node: subscribe for the session here first (its stored subscriptions),
        so that nothing published meanwhile misses it, then tell that node, which closes
        the client (0x8E), lets the session go and answers once it is durable (waited for
        at most ``node_timeout``); then load it. From a node that died: refuse for now,
        the cluster is adopting what it held (the client retries). The will of a session
        that is not stored is kept with the claim, for the node that would adopt this
        one's clients.
        """
        if self.cut_off:
            raise ClaimRefused("this node is cut off from its cluster")
        client_id = terms.client_id
        previous, epoch = await self._claim_owner(client_id, terms)
        self._epochs[client_id] = epoch
        moving = bool(previous) and previous != self.node_id and self.sessions is not None
        if moving and self.sessions is not None:
            held = await self.sessions.fetch_subscriptions(client_id)
            self.core.hold_session(client_id, held)
            try:
                await self._flushed()  # the routes are out before the old node lets go
                await self._take_from(previous, client_id, epoch)
            finally:
                session = await self.sessions.fetch_session(client_id, self.clock())
                self.core.take_held_session(client_id, session)
        elif self.sessions is not None and client_id not in self.core.sessions:
            session = await self.sessions.fetch_session(client_id, self.clock())
            if session is not None:
                self.core.adopt_sessions([session], self.clock())

    async def _claim_owner(self, client_id: str, terms: ConnectTerms) -> tuple[str, int]:
        """Claim the client id (compare-and-set on its owner); returns the previous owner
        ('' if none) and the claim's epoch."""
        will = b"" if terms.will is None or terms.session_expiry else encode_will(terms.will)
        key = keys.owner(client_id)
        for _ in range(CLAIM_ATTEMPTS):
            raw = await self.redis.hget(key, "node")
            previous = "" if raw is None else raw.decode()
            if previous and previous != self.node_id and previous not in self.peers.alive:
                raise ClaimRefused(
                    f"the session is being recovered from node {previous}; try again shortly"
                )
            pipe = self.redis.pipeline(transaction=False)
            _eval(scripts.CLAIM_CLIENT, [key], [self.node_id, previous, will], client=pipe)
            pipe.sadd(keys.clients(self.node_id), client_id)
            epoch, _ = await pipe.execute()
            if epoch:
                return previous, int(epoch)
        raise ClaimRefused("the session is being claimed by several nodes at once")

    async def _take_from(self, previous: str, client_id: str, epoch: int) -> None:
        """Tell ``previous`` to let the session go; wait for its answer."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releases[client_id] = (epoch, future)
        self._send_record(previous, encode_kick(Kick(client_id, epoch, self.node_id)))
        try:
            await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            log.warning(
                "node %s did not release client %s in time; taking it over", previous, client_id
            )
        finally:
            if self._releases.get(client_id, (0, None))[1] is future:
                del self._releases[client_id]

    # -- membership ---------------------------------------------------------------------------

    async def _send_beat(self) -> str | None:
        """Write the heartbeat record; returns the token of another holder of the id, ''
        if the record had expired (or never was), None if it was renewed."""
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
        return None if holder is None else bytes(holder).decode()

    async def _heartbeat(self) -> None:
        last_success = self.clock()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.wait_for(self._beat_and_watch(), self.interval * 2)
            except (RedisError, OSError, TimeoutError) as exc:
                self._resync = True
                silent = self.clock() - last_success
                log.debug("heartbeat failed after %.1f s: %r", silent, exc)
                if not self.cut_off and silent >= self.timeout:
                    self._become_cut_off()
                continue
            except AdoptionInProgress as exc:
                log.info("%s", exc)  # stays cut off; tries again at the next beat
                continue
            except ClusterError as exc:
                log.error("%s", exc)
                if self._on_fatal is not None:
                    self._on_fatal(exc)
                return
            except Exception:
                log.exception("error in the cluster heartbeat")
                continue
            last_success = self.clock()

    async def _beat_and_watch(self) -> None:
        holder = await self._send_beat()
        if holder:
            raise ClusterError(
                f"node id {self.node_id!r} was taken by another node while this one was"
                " cut off from the cluster"
            )
        if holder == "" and not self.cut_off:
            # The record expired: the others count this node as dead and may be adopting
            # its clients; serving on would split the cluster's view.
            log.error("node %s missed its heartbeats for too long", self.node_id)
            self._become_cut_off()
        if self.cut_off or self._resync:
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
            log.warning("node %s is dead (no heartbeat for %.1f s)", node, self.timeout)
        for member, record in zip(members, records, strict=True):
            if not record and member not in self._adoptions:  # dead, and not adopted yet
                task = asyncio.get_running_loop().create_task(self._adopt(member))
                self._adoptions[member] = task
        for info in joined:
            log.info("node %s joined at %s", info.node_id, info.address)
            await self._pubsub.ssubscribe(keys.routes_channel(info.node_id))
            await self._load_routes(info.node_id)
        for info in self.peers.alive.values():
            if info.routes > self._peer_route_versions.get(info.node_id, 0):
                await self._load_routes(info.node_id)

    def _adoption(self, dead: str) -> Adoption:
        fetch = None if self.sessions is None else self.sessions.fetch_session
        return Adoption(self.core, self.redis, self.node_id, dead, fetch, self._claimed)

    def _claimed(self, client_id: str, epoch: int) -> None:
        self._epochs[client_id] = epoch

    async def _adopt(self, dead: str) -> None:
        """Take over what a dead node held, if no other node does (see adoption.py)."""
        adoption = self._adoption(dead)
        try:
            if not await adoption.lock(self.timeout):
                return
            log.info("node %s adopts the clients of dead node %s", self.node_id, dead)
            await adoption.adopt_clients()
            await self._adopt_transactions(dead)
            await adoption.drain_inbox()
            await self._flushed()  # the adopted sessions' routes are announced
            await adoption.withdraw_routes()
            await asyncio.sleep(ADOPTION_GRACE_TIMEOUTS * self.timeout)
            delivered = await adoption.drain_inbox()
            await self._stored()
            await adoption.forget_dead_node()
            log.info("node %s took over node %s (%d late messages)", self.node_id, dead, delivered)
        except (RedisError, OSError, RoostError) as exc:
            log.error("adopting node %s failed (another node will retry): %s", dead, exc)
        finally:
            self._adoptions.pop(dead, None)

    async def _adopt_transactions(self, dead: str) -> None:
        """Hold (and check back) the pending transactions a dead node held."""
        homes = await self.redis.hgetall(keys.TRANSACTION_HOMES)
        held = [key.decode() for key, value in homes.items() if value.decode() == dead]
        for transaction_id in held:
            moved = await self.redis.eval(
                scripts.MOVE_FIELD, 1, keys.TRANSACTION_HOMES, transaction_id, dead, self.node_id
            )
            if not moved or self.sessions is None:
                continue
            half = await self.sessions.fetch_transaction(transaction_id, self.clock())
            if half is not None:
                self.core.adopt_transaction(half)
                self._broadcast(encode_prepared(Prepared(transaction_id, self.node_id)))
        if held:
            log.info("took over %d pending transactions of node %s", len(held), dead)

    async def _flushed(self) -> None:
        """Wait until everything queued for Redis so far is sent."""
        done = asyncio.get_running_loop().create_future()
        self.after_forwarded(partial(_resolve, done))
        if self._flushing is None:
            self._schedule_flush()
        await done

    async def _stored(self) -> None:
        """Wait until everything recorded in the store so far is durable."""
        done = asyncio.get_running_loop().create_future()
        self.core.store.after_commit(partial(_resolve, done))
        await done

    async def _load_routes(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=True)  # both keys share the node's slot
        pipe.get(keys.routes_version(node))
        pipe.smembers(keys.routes(node))
        version, filters = await pipe.execute()
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
        """Also for a dead node, until its adopter withdraws its routes."""
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
        if node not in self.peers.alive and not self.routes.filters_of(node):
            self._peer_route_versions.pop(node, None)
            await self._pubsub.sunsubscribe(keys.routes_channel(node))

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
        # The cluster adopts what this node held once its heartbeat record expires;
        # on rejoining, it takes back what is still its own.
        self.core.let_go_of_sessions()
        self._epochs.clear()

    async def _rejoin(self) -> None:
        """After Redis was out of reach (or restarted, maybe without its data): announce
        this node and its routes again and read the others' routes again."""
        log.info("node %s reaches the cluster again; joining", self.node_id)
        if self.cut_off:
            await self._adopt_former_run()
        await self._sort_transactions()
        await self.redis.sadd(keys.NODES, self.node_id)
        self._announce_all_routes()
        await self._flush_now()
        for node in list(self.peers.alive):
            await self._load_routes(node)
        self.cut_off = self._resync = False


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
    """Add a Lua script to a pipeline, sent whole: short, and it survives a Redis restart
    (which forgets loaded scripts)."""
    client.eval(script, len(script_keys), *script_keys, *args)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _srem(key: str, member: str, client: Any) -> None:
    client.srem(key, member)


def _hset(key: str, field: str, value: str, client: Any) -> None:
    client.hset(key, field, value)


def _hdel(key: str, field: str, client: Any) -> None:
    client.hdel(key, field)


def _xtrim_command(key: str, minimum_id: str, client: Any) -> None:
    client.xtrim(key, minid=minimum_id)
