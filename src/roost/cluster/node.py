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
from collections.abc import Callable, Collection, Container, Sequence
from functools import partial
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from roost import __version__
from roost.attach import ClaimRefused
from roost.cluster import keys, scripts
from roost.cluster.adoption import Adoption
from roost.cluster.clients import READ_BLOCK_MS
from roost.cluster.flow import InboxGate, InboxPacing, measure_inbox
from roost.cluster.membership import NodeInfo, Peers
from roost.cluster.routes import ClusterRoutes
from roost.cluster.routesync import RouteSync
from roost.cluster.sender import Sender, eval_script, resolve
from roost.cluster.tasks import cancel_until_done
from roost.cluster.txrelay import TransactionRelay
from roost.cluster.wire import (
    GROUPS,
    Check,
    Decide,
    ForGroups,
    Kick,
    Prepared,
    Record,
    Relayed,
    Released,
    TransactionSettled,
    decode_entry,
    encode_kick,
    encode_publish,
    encode_released,
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
    """A store that loads one session on demand and fences the writes of each client id
    with the claim under which this node owns it (the Redis store)."""

    async def fetch_session(self, client_id: str, now: float) -> Session | None: ...

    def fence_writes(self, node_id: str, on_fenced: Callable[[list[str]], None]) -> None: ...

    def fence(self, client_id: str, epoch: int | None) -> None: ...

    def release_owner(self, client_id: str) -> None: ...

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
        sessions: SessionSource,
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
        self.http_address = ""  # HOST:PORT of the node's HTTP listener, once it serves
        self.sessions = sessions
        self._on_fatal = on_fatal
        self.timeout = settings.node_timeout_ms / 1000
        self.interval = self.timeout / 4
        self.clock = core.clock
        self.peers = Peers(node_id, self.timeout)
        self.routes = ClusterRoutes(node_id)
        self.cut_off = False
        self._resync = False  # a beat failed: announcements may have been missed
        # No adoption before then: after Redis was out of reach, every node's record has
        # expired; the others get a node timeout to come back before they are adopted.
        self._adopt_from = 0.0
        self.started = time.time()
        self._token = secrets.token_hex(8)
        self._beat_count = 0
        self.announced = (0.0, 0)  # (wall-clock time, connections) of the last heartbeat
        self.sender = Sender(self.redis, self._sending_failed)
        self.pacing = InboxPacing(core, settings.inbox_hold_ms / 1000)
        self.gate = InboxGate(
            settings.inbox_max_entries, self._measure_inbox, self._is_alive, self.clock
        )
        self.sender.before_round = self.gate.sending
        self._destinations: Collection[str] = ()  # of the message forwarded last
        self.route_sync = RouteSync(
            self.redis, node_id, self.routes, self.sender, self.interval, self._is_alive
        )
        self.transactions = TransactionRelay(
            self.redis,
            node_id,
            core,
            self.sender,
            self.routes,
            self.peers.alive.keys,
            sessions.fetch_transaction,
        )
        self._epochs: dict[str, int] = {}  # client id -> epoch of this node's claim
        self._releases: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self._transfers: dict[str, asyncio.Task[None]] = {}  # sessions on their way here
        # inboxes of previous owners that died before handing a session over, read again
        self._late_drains: set[asyncio.Task[None]] = set()
        # Client ids of a dead node being adopted, and take-overs of them that wait
        # until they are (None while no adoption is taking clients).
        self._adopting: set[str] | None = None
        self._deferred_kicks: list[Kick] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._adoptions: dict[str, asyncio.Task[None]] = {}  # dead node -> its adoption
        self._leaving = False  # stop() has begun
        self.forwarded_messages = 0  # records sent to other nodes
        sessions.fence_writes(node_id, self._fenced)

    # -- joining and leaving ----------------------------------------------------------------

    async def start(self) -> None:
        """Claim the node id, load the route table, announce this node's routes and start
        the heartbeat, the inbox reader and the route listener."""
        try:
            holder, _ = await self._send_beat()
        except (RedisError, OSError) as exc:
            raise ClusterError(f"cannot reach the cluster's Redis: {exc}") from exc
        if holder:
            raise ClusterError(f"node id {self.node_id!r} is already in use by a live node")
        await self._adopt_former_run()
        await self.transactions.sort_pending()
        await self.redis.sadd(keys.NODES, self.node_id)
        await self._read_peers(await self._other_nodes())
        self.core.join(self)
        self.core.node_name = self.node_id
        self.route_sync.announce_all(self.core.router.filters())
        await self.sender.sent()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat()),
            loop.create_task(self._read_inbox()),
            loop.create_task(self.route_sync.listen()),
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
        await self._adopt_clients(adoption, drain=False)
        await self.redis.delete(keys.adopter(me))

    async def stop(self) -> None:
        """Leave the cluster: forward what is pending and stop beating. The heartbeat
        record goes at once, so that another node adopts the sessions kept here (and
        what is on its way to them) without waiting for the timeout."""
        # A task awaiting redis-py may go on after one cancel (see roost.cluster.tasks).
        # The node's loops are cancelled until they end; a loop that goes on starts no
        # adoption once _leaving is set. An adoption is cancelled once, as a second
        # cancellation could cut short its unlock: it looks at _leaving between its steps.
        self._leaving = True
        await self._finish_transfers()
        with contextlib.suppress(RedisError, OSError):
            await self.sender.sent()
        await cancel_until_done([*self._tasks, *self._late_drains])
        adoptions = list(self._adoptions.values())
        for task in adoptions:
            task.cancel()
        for task in [*self._tasks, *adoptions]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(keys.node(self.node_id))
        await self.route_sync.close()
        await self.sender.aclose()
        log.info("node %s left the cluster", self.node_id)

    async def _finish_transfers(self) -> None:
        """Let the sessions on their way here from other nodes arrive, for up to a node
        timeout, then cancel the transfers still running.

        Finished rather than cancelled at once: the client id is claimed by this node
        either way (the node that adopts this one takes it over once it has left), but a
        transfer cut short leaves the session held here with what was routed to it since
        the take-over began, and that is kept nowhere else (the previous owner let the
        session go, the routes point here): the store would never hold it. Cut short before
        the hand-over ended, the adopter could also load the session before the previous
        owner has written all of it. So this waits while the loops still run: the previous
        owner's answer comes through the inbox reader, and the heartbeat tells whether that
        node still lives.

        Bounded: a previous owner that does not answer (frozen, or its inbox held back)
        would hold this node for ever. What is cut short then is lost as above. (The
        second read of a dead previous owner's inbox, after two node timeouts, is not a
        transfer: stop cancels it with the loops, and its late messages are lost.) A
        transfer's clean-up awaits nothing, so it is cancelled until it ends (see
        roost.cluster.tasks)."""
        transfers = list(self._transfers.values())
        if not transfers:
            return
        log.info("node %s waits for %d session transfers", self.node_id, len(transfers))
        _, unfinished = await asyncio.wait(transfers, timeout=self.timeout)
        if unfinished:
            log.warning(
                "node %s leaves with %d session transfers unfinished: what was queued"
                " for those sessions here is lost",
                self.node_id,
                len(unfinished),
            )
            await cancel_until_done(unfinished)

    # -- the bus of the core ------------------------------------------------------------------

    def forward(self, message: Message) -> tuple[int, Container[str]]:
        remote, own_shared = self.routes.destinations(message.topic)
        if message.retain:  # every node keeps every retained message
            for node in self.peers.alive:
                remote.setdefault(node, ())
        if not remote:
            self._destinations = ()
            return 0, own_shared
        full = self.gate.full
        if full and not message.qos and not message.retain:
            self._drop_for_full_inboxes(remote)
        self._destinations = remote.keys()
        now = self.clock()
        plain = b""
        sender = self.sender
        outgoing = sender.outgoing
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
        sender.schedule()
        return len(remote), own_shared

    def _drop_for_full_inboxes(self, remote: dict[str, Sequence[str]]) -> None:
        """A QoS 0 message is not sent to an inbox that is over its limit."""
        for node in self.gate.full.intersection(remote):
            del remote[node]
            self.gate.dropped_qos0 += 1

    def after_forwarded(self, callback: Callable[[], None]) -> None:
        destinations, self._destinations = self._destinations, ()
        gate = self.gate
        if gate.full or gate.holding:
            self.sender.after_sent(partial(gate.after_sent, destinations, callback))
        else:
            self.sender.after_sent(callback)

    def _measure_inbox(self, node: str, on_length: Callable[[Any], None]) -> None:
        self.sender.command(partial(measure_inbox, node), on_length)

    def route_added(self, topic_filter: str) -> None:
        self.route_sync.added(topic_filter)

    def route_removed(self, topic_filter: str) -> None:
        self.route_sync.removed(topic_filter)

    def session_ended(self, client_id: str) -> None:
        if self._epochs.pop(client_id, None) is not None:
            self.sessions.release_owner(client_id)  # after the session's last writes
            self.sender.command(partial(_srem, keys.clients(self.node_id), client_id))

    def transaction_prepared(self, transaction_id: str) -> None:
        self.transactions.prepared(transaction_id)

    def transaction_settled(self, transaction_id: str, outcome: Settled) -> None:
        self.transactions.settled(transaction_id, outcome)

    def forward_decision(self, transaction_id: str, decision: Decision) -> None:
        self.transactions.forward_decision(transaction_id, decision)

    def send_check(self, request: Message) -> bool:
        return self.transactions.send_check(request)

    def _is_alive(self, node: str) -> bool:
        return node in self.peers.alive

    def _sending_failed(self, error: Exception) -> None:
        """What was not written is never acknowledged; clients resend it after
        reconnecting."""
        self.gate.reset()
        self._become_cut_off()

    # -- receiving ----------------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        """Read this node's inbox in order and hand each record to the core, paced by the
        room in the sessions' queues (see :class:`~roost.cluster.flow.InboxPacing`)."""
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
            if not response:
                self.pacing.read(caught_up=True)
            for _stream, entries in response:
                self.pacing.read(caught_up=len(entries) < READ_BATCH)
                for entry_id, fields in entries:
                    await self._handle_entry(fields)
                    last = entry_id.decode()
                self.core.store.after_commit(partial(self._trim_inbox, last))

    def _trim_inbox(self, last: str) -> None:
        """Everything up to ``last`` is durable here: drop it from the inbox."""
        milliseconds, sequence = last.split("-")
        self.sender.command(
            partial(
                _xtrim_command,
                keys.inbox(self.node_id),
                f"{milliseconds}-{int(sequence) + 1}",
            )
        )

    async def _handle_entry(self, fields: dict[bytes, bytes]) -> None:
        try:
            records = list(decode_entry(fields, self.clock(), time.time()))
        except ProtocolError as exc:
            log.error("dropping a malformed batch from the inbox: %s", exc)
            return
        core = self.core
        pacing = self.pacing
        shared: Collection[str]
        for record in records:
            if pacing.turn():
                await asyncio.sleep(0)
            try:
                if isinstance(record, Message):  # for the plain subscribers here
                    message, shared = record, ()
                elif isinstance(record, Relayed):
                    message, shared = record
                else:
                    self._on_record(record)
                    continue
                if not pacing.has_room(message):
                    await pacing.room(message)
                core.publish_relayed(message, shared)
            except Exception:
                log.exception("error handling a record from another node")

    def _on_record(self, record: Record) -> None:
        """A record other than a message to relay."""
        if isinstance(record, Kick):
            self._on_kick(record)
        elif isinstance(record, Released):
            self._on_released(record)
        elif isinstance(record, Prepared):
            self.transactions.on_prepared(record)
        elif isinstance(record, TransactionSettled):
            self.transactions.on_settled(record)
        elif isinstance(record, Decide):
            self.core.apply_decision(record.transaction_id, record.decision)
        elif isinstance(record, ForGroups):
            self.core.deliver_to_groups(record.message, record.groups)
        elif isinstance(record, Check):
            self.core.deliver_check(record.request)

    def _on_kick(self, kick: Kick) -> None:
        """Another node took a client over: close it here and let the session go; answer
        once the session is durable, so the new owner loads all of it. A client being
        adopted from a dead node right now is let go once the adoption has it."""
        if self._adopting is not None and kick.client_id in self._adopting:
            self._deferred_kicks.append(kick)
            return
        mine = self._epochs.get(kick.client_id)
        if mine is not None and mine > kick.epoch:
            return  # this node claimed it again since
        self._epochs.pop(kick.client_id, None)
        self.sender.command(partial(_srem, keys.clients(self.node_id), kick.client_id))
        session = self.core.sessions.get(kick.client_id)
        if session is not None:  # the new owner subscribed already; it may not be heard yet
            for topic_filter in session.subscriptions:
                self.routes.add(kick.reply_to, topic_filter)
        self.core.kick(kick.client_id)  # its last writes are recorded under the claim
        self.sessions.fence(kick.client_id, None)
        released = encode_released(Released(kick.client_id, kick.epoch))
        self.core.store.after_commit(partial(self.sender.record, kick.reply_to, released))

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
        the client (0x8E), lets the session go and answers once it is durable; the session
        is loaded then. If the answer takes longer than ``node_timeout`` the client is
        refused for now (it retries) while this node goes on waiting for the answer: a
        session loaded before the old node let go would miss what it wrote since. From a
        node that died: refused for now, the cluster is adopting what it held. The will of
        a session that is not stored is kept with the claim, for the node that would adopt
        this one's clients.
        """
        if self.cut_off:
            raise ClaimRefused("this node is cut off from its cluster")
        client_id = terms.client_id
        previous, epoch = await self._claim_owner(client_id, terms)
        self._epochs[client_id] = epoch
        sessions = self.sessions
        sessions.fence(client_id, epoch)
        if previous and previous != self.node_id and client_id not in self._transfers:
            self.core.hold_session(client_id, await sessions.fetch_subscriptions(client_id))
            await self.sender.sent()  # the routes are out before the old node lets go
            self._transfers[client_id] = asyncio.get_running_loop().create_task(
                self._transfer(previous, client_id, epoch)
            )
        transfer = self._transfers.get(client_id)
        if transfer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(transfer), self.timeout)
            except TimeoutError:
                raise ClaimRefused(
                    f"node {previous} has not handed the session over yet; try again"
                ) from None
        elif client_id not in self.core.sessions:
            session = await sessions.fetch_session(client_id, self.clock())
            if session is not None:
                self.core.adopt_sessions([session], self.clock())

    async def _transfer(self, previous: str, client_id: str, epoch: int) -> None:
        """Tell ``previous`` to let the session go, wait for its answer, then load the
        session in place of the one held for it.

        If ``previous`` dies first, the node adopting it finds the client id owned here
        and leaves it: so this node delivers to the session what waited for it in the
        dead node's inbox, now and once more after the adopter's grace period (senders
        that had not heard of the death yet).
        """
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releases[client_id] = (epoch, answered)
        self.sender.record(previous, encode_kick(Kick(client_id, epoch, self.node_id)))
        try:
            while not answered.done() and previous in self.peers.alive:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(answered), self.timeout)
            await self.redis.eval(  # the previous owner may write the session no more
                scripts.END_HANDOVER, 1, keys.owner(client_id), self.node_id, epoch
            )
            session = await self.sessions.fetch_session(client_id, self.clock())
            self.core.take_held_session(client_id, session)
        finally:
            self._releases.pop(client_id, None)
            self._transfers.pop(client_id, None)
        if not answered.done():
            log.warning("node %s died before handing over client %s", previous, client_id)
            drain = asyncio.get_running_loop().create_task(self._drain_late(previous, client_id))
            self._late_drains.add(drain)  # until it ends, or stop cancels it
            drain.add_done_callback(self._late_drains.discard)

    async def _drain_late(self, previous: str, client_id: str) -> None:
        """Deliver what waited for ``client_id`` in the inbox of ``previous``, which died
        before handing the session over: now, and once more after the adopter's grace
        period (senders that had not heard of the death yet). A node that leaves meanwhile
        cuts this short (see stop)."""
        adoption = self._adoption(previous, deal_to_groups=False)
        adoption.adopted.add(client_id)
        try:
            await adoption.drain_inbox()
            await asyncio.sleep(ADOPTION_GRACE_TIMEOUTS * self.timeout)
            await adoption.drain_inbox()
        except (RedisError, OSError) as exc:
            log.warning(
                "reading the inbox of dead node %s for client %s failed: %s",
                previous,
                client_id,
                exc,
            )

    async def _claim_owner(self, client_id: str, terms: ConnectTerms) -> tuple[str, int]:
        """Claim the client id (compare-and-set on its owner); returns the previous owner
        ('' if none) and the claim's epoch.

        The first attempt expects no owner, right for a client id no node holds (one round
        trip); a claim that finds an owner is answered with it, and the next attempt
        expects that one if it is alive."""
        will = b"" if terms.will is None or terms.session_expiry else encode_will(terms.will)
        key = keys.owner(client_id)
        previous = ""
        for _ in range(CLAIM_ATTEMPTS + 1):  # the first expectation is a guess
            if previous and previous != self.node_id and previous not in self.peers.alive:
                if client_id not in self._epochs:  # the guess added it to this node's set
                    await self.redis.srem(keys.clients(self.node_id), client_id)
                raise ClaimRefused(
                    f"the session is being recovered from node {previous}; try again shortly"
                )
            pipe = self.redis.pipeline(transaction=False)
            eval_script(scripts.CLAIM_CLIENT, [key], [self.node_id, previous, will], client=pipe)
            pipe.sadd(keys.clients(self.node_id), client_id)
            (epoch, found), _ = await pipe.execute()
            if epoch:
                return previous, int(epoch)
            previous = found.decode()
        raise ClaimRefused("the session is being claimed by several nodes at once")

    # -- membership ---------------------------------------------------------------------------

    async def _send_beat(self) -> tuple[str | None, list[str]]:
        """Write the heartbeat record, and read the ids of the cluster's nodes in the same
        round trip. Returns the token of another holder of this node's id ('' if the
        record had expired, or never was; None if it was renewed) and the other nodes."""
        self._beat_count += 1
        connections = len(self.core.connections)
        at = time.time()
        pipe = self.redis.pipeline(transaction=False)
        eval_script(
            scripts.BEAT,
            [keys.node(self.node_id)],
            [
                self._token,
                int(self.timeout * 1000),
                self.address,
                connections,
                __version__,
                self.started,
                self._beat_count,
                self.route_sync.version,
                self.core.settings.redirect,
                at,
                self.http_address,
            ],
            client=pipe,
        )
        pipe.smembers(keys.NODES)
        holder, members = await pipe.execute()
        self.announced = (at, connections)
        return (None if holder is None else bytes(holder).decode()), self._others(members)

    async def _other_nodes(self) -> list[str]:
        """The ids of the cluster's other nodes, read after this node added itself: of two
        nodes that add themselves at once, one sees the other at least."""
        return self._others(await self.redis.smembers(keys.NODES))

    def _others(self, members: Collection[bytes]) -> list[str]:
        return [node for node in map(bytes.decode, members) if node != self.node_id]

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        last_success = self.clock()
        due = loop.time() + self.interval
        while True:
            await asyncio.sleep(due - loop.time())
            # From the start of one beat to the start of the next: on a busy loop, where
            # every reply is read late, a slow cycle does not put the next renewal of the
            # record off by its own length.
            due = loop.time() + self.interval
            try:
                # In this task, not a task of wait_for's: on Python 3.11 wait_for can leave
                # that task running on its own (see roost.cluster.tasks), and its error
                # unread ("Task exception was never retrieved", seen in a connect storm).
                async with asyncio.timeout(self.interval * 2):
                    await self._beat_and_watch()
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
        holder, members = await self._send_beat()
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
            members = await self._other_nodes()
        await self._read_peers(members)

    async def _read_peers(self, members: list[str]) -> None:
        """Read the heartbeat record of every other node in ``members``; start following
        new nodes, forget dead ones, reload a route set whose announcements were missed."""
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
        adopting = self.clock() >= self._adopt_from and not self._leaving
        for member, record in zip(members, records, strict=True):
            if adopting and not record and member not in self._adoptions:  # not adopted yet
                task = asyncio.get_running_loop().create_task(self._adopt(member))
                self._adoptions[member] = task
        for info in joined:
            log.info("node %s joined at %s", info.node_id, info.address)
            await self.route_sync.follow(info.node_id)
        await self.route_sync.catch_up(list(self.peers.alive.values()))

    def _adoption(self, dead: str, deal_to_groups: bool = True) -> Adoption:
        """The adoption of ``dead``; without ``deal_to_groups``, for draining its inbox for
        a client taken over from it (its adopter deals the messages to shared groups)."""
        deal = self._deal_to_groups if deal_to_groups else None
        return Adoption(
            self.core,
            self.redis,
            self.node_id,
            dead,
            self.sessions.fetch_session,
            self._claimed,
            deal,
        )

    def _deal_to_groups(self, message: Message, groups: frozenset[str]) -> None:
        """Give a message that waited in a dead node's inbox to each of the shared groups
        it was sent there for, as a whole: to one live node with members of the group (this
        one or another), in turn, which gives it to one of its members."""
        now = self.clock()
        for topic_filter in groups:
            node = self.routes.node_for_group(topic_filter, self._serves)
            if node == self.node_id:
                self.core.deliver_to_groups(message, (topic_filter,))
            elif node is not None:
                record = encode_publish(message, (topic_filter,), now, GROUPS)
                self.sender.record(node, record)

    def _serves(self, node: str) -> bool:
        """Whether ``node`` is this one or a live one."""
        return node == self.node_id or node in self.peers.alive

    def _claimed(self, client_id: str, epoch: int) -> None:
        self._epochs[client_id] = epoch
        self.sessions.fence(client_id, epoch)
        if self._adopting is not None:
            self._adopting.add(client_id)

    async def _adopt_clients(self, adoption: Adoption, drain: bool) -> None:
        """Take the dead node's clients (and, with ``drain``, what waits in its inbox for
        them); take-overs of them that arrive meanwhile are handled once their sessions
        have all of it."""
        self._adopting = set()
        try:
            await adoption.adopt_clients()
            if drain:
                await adoption.drain_inbox()
        finally:
            self._adopting = None
            deferred, self._deferred_kicks = self._deferred_kicks, []
            for kick in deferred:
                self._on_kick(kick)

    async def _adopt(self, dead: str) -> None:
        """Take over what a dead node held, if no other node does (see adoption.py)."""
        adoption = self._adoption(dead)
        try:
            if not await adoption.lock(self.timeout):
                return
            self._unless_leaving()
            log.info("node %s adopts the clients of dead node %s", self.node_id, dead)
            await self.transactions.adopt(dead)
            self._unless_leaving()
            await self._adopt_clients(adoption, drain=True)
            await self.sender.sent()  # the adopted sessions' routes are announced
            await adoption.withdraw_routes()
            self._unless_leaving()
            await asyncio.sleep(ADOPTION_GRACE_TIMEOUTS * self.timeout)
            delivered = await adoption.drain_inbox()
            await self.sender.sent()  # what it dealt to shared groups on other nodes
            await self._stored()
            await adoption.forget_dead_node()
            log.info("node %s took over node %s (%d late messages)", self.node_id, dead, delivered)
        except (RedisError, OSError, RoostError) as exc:
            log.error("adopting node %s failed (another node will retry): %s", dead, exc)
            await self._abandon(adoption)
        except asyncio.CancelledError:  # this node is leaving: another one takes it up
            await self._abandon(adoption)
            raise
        finally:
            self._adoptions.pop(dead, None)

    def _unless_leaving(self) -> None:
        """Stop an adoption of a node that is leaving, whose cancellation was dropped
        (see stop): it takes nothing more over and lets go of its lock."""
        if self._leaving:
            raise asyncio.CancelledError

    async def _abandon(self, adoption: Adoption) -> None:
        with contextlib.suppress(RedisError, OSError):
            await adoption.unlock()

    async def _stored(self) -> None:
        """Wait until everything recorded in the store so far is durable."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.core.store.after_commit(partial(resolve, done))
        await done

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
        for client_id in self._epochs:
            self.sessions.fence(client_id, None)
        self._epochs.clear()

    def _fenced(self, client_ids: list[str]) -> None:
        """Redis refused writes to sessions this node took for its own: it lost them
        without knowing (it was frozen, or cut off, and the cluster adopted its clients).
        Its view is stale: it stops serving before acknowledging any of that batch."""
        log.error(
            "node %s no longer owns client %s (and %d more): its writes were refused",
            self.node_id,
            client_ids[0],
            len(client_ids) - 1,
        )
        self._become_cut_off()

    async def _rejoin(self) -> None:
        """After Redis was out of reach (or restarted, maybe without its data): announce
        this node and its routes again and read the others' routes again."""
        if self.cut_off:
            await self._adopt_former_run()
        await self.transactions.sort_pending()
        await self.redis.sadd(keys.NODES, self.node_id)
        self.route_sync.announce_all(self.core.router.filters())
        await self.sender.sent()
        for node in list(self.peers.alive):
            await self.route_sync.load(node)
        self.cut_off = self._resync = False
        self._adopt_from = self.clock() + self.timeout
        log.info("node %s reaches the cluster again and serves", self.node_id)


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
        text("http"),
    )


def _srem(key: str, member: str, client: Any) -> None:
    client.srem(key, member)


def _xtrim_command(key: str, minimum_id: str, client: Any) -> None:
    client.xtrim(key, minid=minimum_id)
