"""The cluster's store: one Redis (or Valkey) shared by every node.

Persistent sessions live in Redis so that a session whose node died can be resumed on
another node. Changes are recorded as SQLite records them (see :mod:`roost.store.batching`):
queued as commands on the event loop and sent once per loop turn as one pipeline, one
pipeline in flight at a time; acknowledgements wait for the pipeline that holds what they
confirm, and a pipeline that fails stops the store. Pipelines are not MULTI transactions,
since their keys span hash slots: a batch is applied in order but not atomically, so a
Redis crash in the middle of one can keep part of it. Every command is idempotent, so a
pipeline the client retries after a lost connection leaves the same state.

Keys, under a configurable prefix ``<p>`` (``roost``), named by :mod:`roost.cluster.keys`
with the cluster's own::

    <p>:{c:<client id>}:owner    hash: node, epoch, will, handover (the cluster's claim)
    <p>:{c:<client id>}:session  hash: expiry, expires_at, will, will_due, owner
    <p>:{c:<client id>}:subs     hash: topic filter -> subscription options
    <p>:{c:<client id>}:out      hash: seq -> delivery (message, state, packet id)
    <p>:{c:<client id>}:qos2     set: inbound QoS 2 packet ids awaiting PUBREL
    <p>:{retained}               hash: topic -> retained message
    <p>:{tx}:half                hash: transaction id -> pending half message
    <p>:{tx}:settled             sorted set: outcome code + transaction id, by time

All keys of a client share its hash tag (with its owner record), so a session lives in one
Redis Cluster slot and is read in one script. Values
are the binary records of :mod:`roost.store.records`, times on the wall clock. A message
is kept inline in each delivery (not once, shared by its deliveries, as SQLite keeps it):
deliveries of different sessions live in different slots, where no command could release
a shared copy with its last reference.

Fencing: in a cluster, the writes to a client id's keys carry the claim under which the
node owns it (:meth:`RedisStore.fence`), and Redis applies them, in a script per client
id and batch, only while that claim holds (``FENCED_WRITE`` in :mod:`roost.cluster.scripts`).
A node that lost a client id without knowing it (it was frozen, or cut off, and the
cluster adopted its clients) cannot overwrite what the new owner has; it is told, and
stops serving before acknowledging anything of that batch.

A node reads no sessions at start-up: it attaches one when its client connects, with
:meth:`RedisStore.fetch_session`. The cluster layer makes the client (with
``decode_responses=False``: values are bytes) and decides on reconnection; the store
closes it in :meth:`RedisStore.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from roost.cluster import keys, scripts
from roost.errors import StoreError
from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from roost.store.base import LoadedState
from roost.store.batching import BatchingStore, Op
from roost.store.records import (
    WallClock,
    decode_delivery,
    decode_half,
    decode_message,
    decode_options,
    decode_will,
    encode_delivery,
    encode_half,
    encode_message,
    encode_options,
    encode_will,
    owner_text,
    restore_delivery,
    restore_owner,
)
from roost.transactions import SETTLED_MEMORY, HalfMessage, Settled

_SESSION_PARTS = ("session", "subs", "out", "qos2")
Fence = tuple[str, str, str]  # client id, node id, epoch: whose writes Redis checks
_OUTCOME_CODES = {Settled.COMMITTED: b"c", Settled.ROLLED_BACK: b"r"}
_OUTCOMES = {code: outcome for outcome, code in _OUTCOME_CODES.items()}


class RedisStore(BatchingStore):
    """A :class:`roost.store.base.Store` in Redis, for the nodes of a cluster.

    Await :meth:`open` before :meth:`load`, read sessions with :meth:`fetch_session` (the
    protocol's :meth:`load_session` finds none) and finish with :meth:`aclose`.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        loop: asyncio.AbstractEventLoop,
        *,
        prefix: str = "roost",
        max_pending_writes: int = 100_000,
        on_failure: Callable[[StoreError], None],
    ) -> None:
        """``on_failure`` is called on the loop, once, if a pipeline fails: the store then
        accepts no more work and acknowledgements waiting for Redis are dropped."""
        super().__init__(loop, max_pending_writes=max_pending_writes, on_failure=on_failure)
        self._client = client
        self._prefix = prefix
        self._retained_key = keys.retained(prefix)
        self._half_key = keys.transactions("half", prefix)
        self._settled_key = keys.transactions("settled", prefix)
        self.address = _address(client)
        self._clock = WallClock()
        self._prefetched: tuple[dict[bytes, bytes], dict[bytes, bytes], list[bytes]] | None
        self._prefetched = None  # what open() read for load()
        # The task sending the pipeline in flight, held here as the loop keeps only a weak
        # reference to a task.
        self._sender: asyncio.Task[None] | None = None
        self._waiting: set[asyncio.Future[None]] = set()  # woken by a failure too
        # Fencing (see "Fencing" above): the node writing, what it is told when writes
        # were refused, and the fence of each client id it owns.
        self._writer = ""
        self._on_fenced: Callable[[list[str]], None] | None = None
        self._fences: dict[str, Fence] = {}

    def _key(self, client_id: str, part: str) -> str:
        return keys.client(client_id, part, self._prefix)

    def _session_keys(self, client_id: str) -> list[str]:
        """The keys of a client's stored session, in the order of ``_SESSION_PARTS``."""
        return [self._key(client_id, part) for part in _SESSION_PARTS]

    # -- fencing ------------------------------------------------------------------------------

    def fence_writes(self, node_id: str, on_fenced: Callable[[list[str]], None]) -> None:
        """Write as cluster node ``node_id``: the keys of a client id fenced with
        :meth:`fence` are written only while the node owns it; ``on_fenced`` is told, on
        the loop, of the client ids whose writes Redis refused (before the acknowledgements
        of their batch run)."""
        self._writer = node_id
        self._on_fenced = on_fenced

    def fence(self, client_id: str, epoch: int | None) -> None:
        """Write the keys of ``client_id`` from now on only while this node owns it under
        the claim of ``epoch`` (or a later one); None: write them without a check."""
        if epoch is None:
            self._fences.pop(client_id, None)
        else:
            self._fences[client_id] = (client_id, self._writer, str(epoch))

    def release_owner(self, client_id: str) -> None:
        """After what was recorded for ``client_id`` so far, forget its owner record if the
        claim of its fence still holds; the client id is no longer fenced."""
        if client_id in self._fences:
            self._record_client(client_id, ["RELEASE"])
            del self._fences[client_id]

    # -- reading ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Check that Redis answers and read what :meth:`load` gives back (retained
        messages, pending transactions, settled decisions); StoreError if it cannot."""
        with self._reading("the store"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(self._retained_key)
            pipe.hgetall(self._half_key)
            pipe.zrange(self._settled_key, 0, -1)
            retained, halves, settled = await pipe.execute()
        self._prefetched = (retained, halves, settled)

    def load(self, now: float) -> LoadedState:
        """Retained messages (the expired ones dropped), pending transactions and settled
        decisions as :meth:`open` read them, and no sessions: a node attaches sessions on
        demand (:meth:`fetch_session`). Fixes the clock offset at ``now``."""
        if self._prefetched is None:
            raise RuntimeError("RedisStore.load() before open()")
        retained, halves, settled = self._prefetched
        self._prefetched = None
        self._clock.fix(now)
        state = LoadedState()
        with self._reading("the store"):
            for value in retained.values():
                message = decode_message(value, 0, self._clock)
                if not message.expired(now):
                    state.retained.append(message)
            for transaction_id, value in halves.items():
                state.transactions.append(decode_half(transaction_id.decode(), value, self._clock))
            for member in settled:
                state.settled.append((member[1:].decode(), _OUTCOMES[member[:1]]))
        return state

    def load_session(self, client_id: str) -> Session | None:
        """None: Redis cannot be read synchronously; :meth:`fetch_session` reads sessions."""
        return None

    async def fetch_session(self, client_id: str, now: float) -> Session | None:
        """The stored session of ``client_id``, built as SqliteStore.load_session builds it
        (times rebased at ``now``, ``store`` set), or None.

        Everything this store recorded before the call is written first, so a session this
        node let go of comes back with all its changes. The session's keys (one slot) are
        read in one script: no other command lands between those reads.
        StoreError if Redis cannot be read or the store has failed.
        """
        await self._written()
        with self._reading(f"the session of {client_id!r}"):
            replies = await self._client.eval(
                scripts.READ_TOGETHER,
                len(_SESSION_PARTS),
                *self._session_keys(client_id),
                "HGETALL",
                "HGETALL",
                "HGETALL",
                "SMEMBERS",
            )
            record, subscriptions, deliveries = map(_pairs, replies[:3])
            inbound = replies[3]
            if not record:
                return None
            self._clock.fix(now)
            session = self._session_from(client_id, record)
            for topic_filter, options in subscriptions.items():
                session.subscribe(topic_filter.decode(), decode_options(options))
            for seq, value in sorted((int(seq), value) for seq, value in deliveries.items()):
                delivery, state, packet_id = decode_delivery(value, seq, self._clock)
                restore_delivery(session, delivery, state, packet_id)
            for packet_id in sorted(map(int, inbound)):
                session.receive_qos2(packet_id)
        session.store = self  # record changes from now on, not what was just read
        return session

    async def fetch_subscriptions(self, client_id: str) -> dict[str, SubscriptionOptions]:
        """The stored subscriptions of ``client_id`` (none if it has no stored session):
        what a node taking the session over announces before the session arrives."""
        with self._reading(f"the subscriptions of {client_id!r}"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(self._key(client_id, "subs"))
            (stored,) = await pipe.execute()
        return {key.decode(): decode_options(value) for key, value in stored.items()}

    async def fetch_transaction(self, transaction_id: str, now: float) -> HalfMessage | None:
        """One pending half message (times rebased at ``now``), or None if it is settled:
        for a node taking over the transactions of a node that died."""
        await self._written()
        with self._reading(f"transaction {transaction_id!r}"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hget(self._half_key, transaction_id)
            (data,) = await pipe.execute()
            if data is None:
                return None
            self._clock.fix(now)
            return decode_half(transaction_id, data, self._clock)

    def _session_from(self, client_id: str, record: dict[bytes, bytes]) -> Session:
        session = Session(client_id, int(record[b"expiry"]))
        session.expires_at = self._clock.to_clock(_time_from(record[b"expires_at"]))
        owner = record.get(b"owner")  # missing or empty: unknown
        restore_owner(session, owner.decode() if owner else None)
        if record[b"will"]:
            session.will = decode_will(record[b"will"])
            session.will_due = self._clock.to_clock(_time_from(record[b"will_due"]))
        return session

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Turn whatever goes wrong reading ``what`` (Redis unreachable, a record it
        cannot decode) into a StoreError that says where."""
        try:
            yield
        except Exception as exc:
            raise self._error(f"reading {what} failed", exc) from exc

    def _error(self, what: str, exc: Exception) -> StoreError:
        # Not repr(exc): redis-py's says only which kind of error it is.
        error = StoreError(f"{self.address}: {what}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    # -- recording ----------------------------------------------------------------------------

    def save_session(self, session: Session) -> None:
        will = session.will
        self._record_client(
            session.client_id,
            [
                "HSET",
                self._key(session.client_id, "session"),
                "expiry",
                session.expiry_interval,
                "expires_at",
                _time(self._clock.to_wall(session.expires_at)),
                "will",
                b"" if will is None else encode_will(will),
                "will_due",
                _time(self._clock.to_wall(session.will_due) if will is not None else None),
                "owner",
                owner_text(session) or "",
            ],
        )

    def delete_session(self, session: Session) -> None:
        """Forget a session: all its keys, in one command (they share a slot)."""
        client_id = session.client_id
        sent = (inflight.delivery for inflight in session.inflight.values())
        for delivery in chain(sent, session.queue):
            if delivery.seq:  # stored (queued QoS 0 never is)
                self._cancel_insert(client_id, delivery)
        self._record_client(client_id, ["UNLINK", *self._session_keys(client_id)])

    def save_subscription(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        self._record_client(
            client_id, ["HSET", self._key(client_id, "subs"), topic_filter, encode_options(options)]
        )

    def delete_subscription(self, client_id: str, topic_filter: str) -> None:
        self._record_client(client_id, ["HDEL", self._key(client_id, "subs"), topic_filter])

    def save_delivery(self, client_id: str, delivery: Delivery) -> None:
        value = encode_delivery(delivery, OutboundState.QUEUED, 0, self._clock)
        insert = self._record_client(
            client_id, ["HSET", self._key(client_id, "out"), delivery.seq, value]
        )
        self._unwritten[client_id, delivery.seq] = insert

    def update_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None:
        """Rewrite the delivery's record in its new state (a hash value cannot be changed
        in part), or amend its insert if that is still pending."""
        value = encode_delivery(delivery, state, packet_id, self._clock)
        insert = self._unwritten.get((client_id, delivery.seq))
        if insert is None:
            self._record_client(
                client_id, ["HSET", self._key(client_id, "out"), delivery.seq, value]
            )
        else:
            insert[4] = value  # [fence, HSET, key, seq, value]

    def delete_delivery(self, client_id: str, delivery: Delivery) -> None:
        if not self._cancel_insert(client_id, delivery):
            self._record_client(client_id, ["HDEL", self._key(client_id, "out"), delivery.seq])

    def save_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        self._record_client(client_id, ["SADD", self._key(client_id, "qos2"), packet_id])

    def delete_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        self._record_client(client_id, ["SREM", self._key(client_id, "qos2"), packet_id])

    def save_retained(self, message: Message) -> None:
        value = encode_message(message, self._clock)
        self._record_shared(["HSET", self._retained_key, message.topic, value])

    def delete_retained(self, topic: str) -> None:
        self._record_shared(["HDEL", self._retained_key, topic])

    def save_transaction(self, half: HalfMessage) -> None:
        value = encode_half(half, self._clock)
        self._record_shared(["HSET", self._half_key, half.transaction_id, value])

    def settle_transaction(self, transaction_id: str, outcome: Settled) -> None:
        """Drop the half message and remember the decision; only the newest
        ``SETTLED_MEMORY`` decisions are kept."""
        member = _OUTCOME_CODES[outcome] + transaction_id.encode()
        self._record_shared(["HDEL", self._half_key, transaction_id])
        self._record_shared(["ZADD", self._settled_key, time.time(), member])
        self._record_shared(["ZREMRANGEBYRANK", self._settled_key, 0, -SETTLED_MEMORY - 1])

    # -- writing ------------------------------------------------------------------------------

    def _record_client(self, client_id: str, op: Op) -> Op:
        """Queue a write of ``client_id``'s keys, under its fence if it has one."""
        return self._record([self._fences.get(client_id), *op])

    def _record_shared(self, op: Op) -> Op:
        """Queue a write of keys no client id owns (retained messages, transactions)."""
        return self._record([None, *op])

    def _write_batch(self, ops: list[Op], callbacks: list[Callable[[], None]]) -> None:
        """One pipeline: unfenced writes as they are, in order, and the writes under each
        fence as one FENCED_WRITE script, where that fence first comes (a client's writes
        keep their order; different clients' keys are independent)."""
        commands: list[list[Any]] = []
        fenced: dict[Fence, tuple[int, list[Any]]] = {}  # -> its script, and where it runs
        for op in ops:
            fence = op[0]
            if fence is None:
                commands.append(op[1:])
                continue
            found = fenced.get(fence)
            if found is None:
                client_id, node_id, epoch = fence
                script = [
                    "EVAL",
                    scripts.FENCED_WRITE,
                    1 + len(_SESSION_PARTS),
                    self._key(client_id, "owner"),
                    *self._session_keys(client_id),
                    node_id,
                    epoch,
                ]
                found = fenced[fence] = (len(commands), script)
                commands.append(script)
            found[1].append(len(op) - 1)
            found[1].extend(op[1:])
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        scripts_at = [(fence[0], at) for fence, (at, _) in fenced.items()]
        self._sender = self._loop.create_task(self._send(pipe, callbacks, scripts_at))

    async def _send(
        self,
        pipe: Pipeline | ClusterPipeline,
        callbacks: list[Callable[[], None]],
        scripts_at: list[tuple[str, int]],
    ) -> None:
        """Send a pipeline and wait for Redis to answer: every command done, or the store
        fails. ``scripts_at`` holds each fenced client id and where its script is in the
        pipeline; the client ids whose writes were refused go to ``on_fenced`` first."""
        try:
            results = await pipe.execute()
        except Exception as exc:  # whatever it is, memory and Redis may now disagree
            self._failure = self._error("writing failed", exc)
            self._failed()
            return
        if scripts_at:
            refused = [client_id for client_id, at in scripts_at if not results[at]]
            if refused and self._on_fenced is not None:
                self._on_fenced(refused)
        self._batch_done(callbacks)

    def _failed(self) -> None:
        super()._failed()
        for waiting in self._waiting:
            _wake(waiting)

    async def _written(self) -> None:
        """Wait until every change recorded so far is acknowledged by Redis; raise the
        store's failure if there is one (then, or later while waiting)."""
        if self._failure is None:
            done = self._loop.create_future()
            self._waiting.add(done)
            self.after_commit(partial(_wake, done))
            try:
                await done
            finally:
                self._waiting.discard(done)
        if self._failure is not None:
            raise self._failure

    async def aclose(self) -> None:
        """Send what is pending, wait until Redis has acknowledged it and close the
        client's connections; StoreError if that, or an earlier write, failed."""
        try:
            await self._written()
        finally:
            await self._client.aclose()

    def close(self) -> None:
        """Best effort, for a caller that cannot await: hand what is pending to Redis
        without waiting for it (it is sent while the loop keeps running; the connections
        stay open). :meth:`aclose` is the way to finish. StoreError if a write failed."""
        if self._failure is not None:
            raise self._failure
        self._flush()


def _address(client: Redis | RedisCluster) -> str:
    """Where the store's Redis is, for messages."""
    if isinstance(client, RedisCluster):
        return "redis cluster of " + ", ".join(client.nodes_manager.startup_nodes)
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    return f"redis {where} db {kwargs.get('db', 0)}"


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash as a script returns it (field, value, field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _wake(waiting: asyncio.Future[None]) -> None:
    if not waiting.done():
        waiting.set_result(None)


def _time(wall: float | None) -> float | str:
    """A stored time: its wall-clock seconds, or "" for none."""
    return "" if wall is None else wall


def _time_from(value: bytes) -> float | None:
    return float(value) if value else None
