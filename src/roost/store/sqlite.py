"""The embedded default store: SQLite in WAL mode, written by one background thread.

Changes are queued as SQL statements on the event loop and written in batches: one
transaction (and one fsync) covers everything recorded since the previous batch, so many
messages share one disk flush (group commit). With ``durability = "full"`` the broker's
acknowledgements wait for the batch that holds what they confirm; ``"batch"`` commits every
``commit_interval_ms`` and acknowledges at once (that window may be lost in a crash);
``"none"`` does not fsync at all.

What waits to be written is bounded by ``max_pending_writes`` statements (``backlogged``,
``when_drained``), so a broker that acknowledges at once cannot outrun the disk without
limit. A batch that fails to commit stops the store: its acknowledgements are never sent,
later work is dropped and the broker is told through ``on_failure``.

Times are saved as wall-clock seconds and turned back into the broker's monotonic clock on
load, so expiry keeps counting while the broker is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

from roost.codec import NO_PROPERTIES, PacketType, Will
from roost.codec.primitives import WILL_PROPERTIES
from roost.errors import StoreError
from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from roost.store.base import LoadedState
from roost.store.batching import BatchingStore, Op
from roost.store.deferred import Deferred, DeferredDeliveries, decode_recipients
from roost.store.records import (
    EMPTY_PROPERTY_SECTION,
    WallClock,
    owner_text,
    properties_blob,
    properties_from,
    restore_delivery,
    restore_owner,
    stored_message,
)
from roost.store.sqlite_batch import BatchPlan, Kind, values
from roost.transactions import SETTLED_MEMORY, HalfMessage, Settled

DATABASE_NAME = "roost.db"
VACUUM_EVERY = 60.0  # seconds between incremental vacuums
DEFER_SECONDS = 0.5  # a QoS 1 delivery unfinished this long gets a row (store.deferred)

# Each entry migrates the schema from version N to N + 1 (index N).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY,
        expiry_interval INTEGER NOT NULL,
        expires_at REAL,
        will_topic TEXT,
        will_payload BLOB,
        will_qos INTEGER,
        will_retain INTEGER,
        will_properties BLOB,
        will_due REAL
    );
    CREATE TABLE subscriptions (
        client_id TEXT NOT NULL,
        topic_filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL,
        identifier INTEGER,
        PRIMARY KEY (client_id, topic_filter)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB NOT NULL,
        origin TEXT NOT NULL,
        expires_at REAL
    );
    CREATE TABLE deliveries (
        client_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        subscription_ids TEXT NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        packet_id INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (client_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_by_message ON deliveries (message_id);
    CREATE TABLE inbound_qos2 (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
    ) WITHOUT ROWID;
    CREATE TABLE retained (
        topic TEXT PRIMARY KEY,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        properties BLOB NOT NULL,
        origin TEXT NOT NULL,
        expires_at REAL
    );
    """,
    """
    CREATE TABLE transactions (
        transaction_id TEXT PRIMARY KEY,
        producer_group TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB NOT NULL,
        origin TEXT NOT NULL,
        expires_at REAL,
        checks INTEGER NOT NULL,
        next_check REAL
    );
    CREATE TABLE transaction_ops (
        transaction_id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        settled_at REAL NOT NULL
    );
    """,
    # Who owns each session (records.owner_text), for authorization; NULL: unknown.
    "ALTER TABLE sessions ADD COLUMN owner TEXT",
    # QoS 1 deliveries of the message without a row of their own (store.deferred).
    "ALTER TABLE messages ADD COLUMN recipients TEXT",
)
SCHEMA_VERSION = len(MIGRATIONS)

_SYNCHRONOUS = {"full": "FULL", "batch": "NORMAL", "none": "OFF"}

_SAVE_SESSION = (
    "INSERT OR REPLACE INTO sessions (client_id, expiry_interval, expires_at, will_topic,"
    " will_payload, will_qos, will_retain, will_properties, will_due, owner)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MESSAGE_INSERT = (
    "INSERT INTO messages (id, topic, payload, qos, retain, properties, origin,"
    " expires_at, recipients) VALUES"
)
# A message saved again while its row is still there (a retained one) keeps the row; its
# list is rewritten (store.deferred).
_MESSAGE_CONFLICT = " ON CONFLICT (id) DO UPDATE SET recipients = excluded.recipients"
_message_rows = values(_MESSAGE_INSERT, 9, _MESSAGE_CONFLICT)
_SAVE_MESSAGE = _message_rows(1)
# The usual message, without properties or expiry, with those columns as SQL literals: the
# sqlite3 module binds None and bytes through its adapter registry, which costs the writer
# more than the rest of the row (payloads are bound as bytearray, which it binds directly).
_plain_message_rows = values(
    "INSERT INTO messages (id, topic, payload, qos, retain, origin, recipients, properties,"
    " expires_at) VALUES",
    7,
    _MESSAGE_CONFLICT,
    (f"X'{EMPTY_PROPERTY_SECTION.hex()}'", "NULL"),
)
_SAVE_PLAIN_MESSAGE = _plain_message_rows(1)
_SAVE_RECIPIENTS = "UPDATE messages SET recipients = ? WHERE id = ?"
_DELIVERY_INSERT = (
    "INSERT OR REPLACE INTO deliveries (client_id, seq, message_id, qos, retain,"
    " subscription_ids, state, packet_id) VALUES"
)
_SAVE_DELIVERY = _DELIVERY_INSERT + " (?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE_DELIVERY = "UPDATE deliveries SET state = ?, packet_id = ? WHERE client_id = ? AND seq = ?"
_DELETE_DELIVERIES = "DELETE FROM deliveries WHERE {}"
_DELETE_DELIVERY = _DELETE_DELIVERIES.format("client_id = ? AND seq = ?")
# Guarded by the database itself: sessions read separately (load_session) hold separate
# Message objects, whose reference counts each see only their own session's deliveries.
_DELETE_MESSAGES = (
    "DELETE FROM messages WHERE id IN ({}) AND NOT EXISTS"
    " (SELECT 1 FROM deliveries WHERE message_id = messages.id)"
)
_DELETE_MESSAGE = _DELETE_MESSAGES.format("?")
# Messages no delivery row ever referred to (store.deferred), by runs of ids: no guard.
_DELETE_MESSAGE_RUN = "DELETE FROM messages WHERE id BETWEEN ? AND ?"
_PLAN = BatchPlan(
    (
        Kind(_SAVE_MESSAGE, 0, _message_rows),
        Kind(_SAVE_PLAIN_MESSAGE, 0, _plain_message_rows),
        Kind(_SAVE_DELIVERY, 1, values(_DELIVERY_INSERT, 8)),
        Kind(_UPDATE_DELIVERY, 2, None),
        Kind(  # an OR of primary-key lookups: SQLite would scan for a row-value IN
            _DELETE_DELIVERY,
            3,
            lambda n: _DELETE_DELIVERIES.format(" OR ".join(["(client_id = ? AND seq = ?)"] * n)),
        ),
        Kind(_SAVE_RECIPIENTS, 4, None),
        Kind(_DELETE_MESSAGE, 5, lambda n: _DELETE_MESSAGES.format(", ".join("?" * n))),
        Kind(_DELETE_MESSAGE_RUN, 5, None),
    )
)
_DELETE_SESSION = (
    "DELETE FROM sessions WHERE client_id = ?",
    "DELETE FROM subscriptions WHERE client_id = ?",
    "DELETE FROM deliveries WHERE client_id = ?",
    "DELETE FROM inbound_qos2 WHERE client_id = ?",
)


class SqliteStore(BatchingStore):
    """A :class:`roost.store.base.Store` on one SQLite file in ``data_dir``."""

    def __init__(
        self,
        data_dir: str,
        durability: str,
        commit_interval_ms: int,
        loop: asyncio.AbstractEventLoop,
        *,
        max_pending_writes: int,
        on_failure: Callable[[StoreError], None],
        defer_seconds: float = DEFER_SECONDS,
    ) -> None:
        """``on_failure`` is called on the loop, once, if a write fails: the store then
        accepts no more work and acknowledgements waiting for a commit are dropped.
        ``defer_seconds``: how long a QoS 1 delivery may live in its message's row only."""
        super().__init__(loop, max_pending_writes=max_pending_writes, on_failure=on_failure)
        self.path = Path(data_dir) / DATABASE_NAME
        self._durability = durability
        self._acknowledge_at_once = durability != "full"
        self._interval = commit_interval_ms / 1000
        self._db = self._open()
        self._clock = WallClock()  # fixed at load
        self._next_message_id = 1
        # Message inserts recorded since the last hand-over to the writer (the delivery
        # inserts are in _unwritten): a message whose deliveries all completed before it
        # reached the disk never needs to.
        self._unwritten_messages: dict[int, Op] = {}  # message id -> its insert
        # Messages given their id since the last hand-over: their insert creates the row,
        # so it may list their QoS 1 deliveries.
        self._new_messages: set[int] = set()
        # Messages whose stored deliveries have all been listed, never given rows; those
        # of them that went since the last hand-over, and the operation that deletes them.
        self._listed_only: set[int] = set()
        self._gone: set[int] = set()
        self._gone_op: Op | None = None
        self._deferred = DeferredDeliveries()
        self._list_updates: dict[int, Op] = {}  # message id -> update of its list
        self._defer = defer_seconds
        self._promotion: asyncio.TimerHandle | None = None
        self._last_vacuum = time.monotonic()
        # (operations, acknowledgements, whether to vacuum after the commit)
        self._batches: queue.SimpleQueue[tuple[list[Op], list[Callable[[], None]], bool] | None]
        self._batches = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_batches, name="roost-store", daemon=True)
        self._writer_started = False

    # -- opening ----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this Roost supports"
                    f" ({SCHEMA_VERSION}); upgrade Roost or use another --data-dir"
                )
            if version == 0:
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA wal_autocheckpoint = 10000")
            db.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self._durability]}")
            for index in range(version, SCHEMA_VERSION):
                db.executescript(
                    f"BEGIN; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
                )
            db.execute("SELECT count(*) FROM sessions").fetchone()
            _write_listed_deliveries(db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path}: cannot use the database ({exc}). Roost will not start over"
                " existing data it cannot read: restore the file from a backup, or move it"
                " (with its -wal and -shm files) away to start with an empty store."
            ) from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the data directory ({exc})") from exc
        return db

    # -- loading ----------------------------------------------------------------------------

    def load(self, now: float) -> LoadedState:
        """Read sessions, subscriptions, deliveries and retained messages; drop expired."""
        self._clock.fix(now)
        db = self._db
        state = LoadedState(sessions=self._read_sessions(None))
        for topic, payload, qos, properties, origin, expires_at in db.execute(
            "SELECT * FROM retained"
        ):
            message = stored_message(
                self._clock, topic, payload, qos, True, properties, origin, expires_at
            )
            if not message.expired(now):
                state.retained.append(message)
        self._load_transactions(state)
        self._next_message_id = (db.execute("SELECT max(id) FROM messages").fetchone()[0] or 0) + 1
        return state

    def load_session(self, client_id: str) -> Session | None:
        """The stored session of ``client_id``, built as :meth:`load` builds it (times
        rebased on the clock ``load`` fixed), or None."""
        sessions = self._read_sessions(client_id)
        return sessions[0] if sessions else None

    def _read_sessions(self, client_id: str | None) -> list[Session]:
        """Sessions with their subscriptions, deliveries and inbound QoS 2 identifiers,
        ready to be attached: every stored one, or only that of ``client_id``."""
        where, args = ("", ()) if client_id is None else (" WHERE client_id = ?", (client_id,))
        db = self._db
        sessions: dict[str, Session] = {}
        for row in db.execute("SELECT * FROM sessions" + where, args):
            loaded = self._session_from(row)
            sessions[loaded.client_id] = loaded
        for owner, topic_filter, qos, no_local, rap, handling, identifier in db.execute(
            "SELECT * FROM subscriptions" + where, args
        ):
            session = sessions.get(owner)
            if session is not None:
                session.subscribe(  # not recorded: its store is set below
                    topic_filter,
                    SubscriptionOptions(qos, bool(no_local), bool(rap), handling, identifier),
                )
        self._read_deliveries(sessions, where, args)
        for owner, packet_id in db.execute("SELECT * FROM inbound_qos2" + where, args):
            if owner in sessions:
                sessions[owner].receive_qos2(packet_id)
        for session in sessions.values():
            session.store = self  # record changes from now on, not what was just read
        return list(sessions.values())

    def _load_transactions(self, state: LoadedState) -> None:
        db = self._db
        for row in db.execute("SELECT * FROM transactions"):
            transaction_id, group = row[0], row[1]
            message = stored_message(self._clock, *row[2:9])
            half = HalfMessage(transaction_id, group, message, self._clock.to_clock(row[10]))
            half.checks = row[9]
            state.transactions.append(half)
        db.execute(
            "DELETE FROM transaction_ops WHERE transaction_id NOT IN (SELECT transaction_id"
            " FROM transaction_ops ORDER BY settled_at DESC LIMIT ?)",
            (SETTLED_MEMORY,),
        )
        for transaction_id, outcome in db.execute(
            "SELECT transaction_id, outcome FROM transaction_ops ORDER BY settled_at"
        ):
            state.settled.append((transaction_id, Settled(outcome)))

    def _session_from(self, row: tuple[Any, ...]) -> Session:
        client_id, interval, expires_at, topic, payload, qos, retain, props, will_due, owner = row
        session = Session(client_id, interval)
        session.expires_at = self._clock.to_clock(expires_at)
        restore_owner(session, owner)
        if topic is not None:
            properties = properties_from(props, WILL_PROPERTIES)
            session.will = Will(topic, payload, qos, bool(retain), properties)
            session.will_due = self._clock.to_clock(will_due)
        return session

    def _read_deliveries(
        self, sessions: dict[str, Session], where: str, args: tuple[str, ...]
    ) -> None:
        messages: dict[int, Message] = {}
        rows = self._db.execute(
            "SELECT d.client_id, d.seq, d.qos, d.retain, d.subscription_ids, d.state,"
            " d.packet_id, m.id, m.topic, m.payload, m.qos, m.retain, m.properties, m.origin,"
            f" m.expires_at FROM deliveries d JOIN messages m ON m.id = d.message_id{where}"
            " ORDER BY d.client_id, d.seq",
            args,
        )
        for row in rows:
            client_id, seq, qos, retain, sub_ids, state, packet_id, message_id = row[:8]
            session = sessions.get(client_id)
            if session is None:
                continue
            message = messages.get(message_id)
            if message is None:
                message = messages[message_id] = stored_message(self._clock, *row[8:])
                message.store_id = message_id
            ids = tuple(int(i) for i in sub_ids.split(",")) if sub_ids else ()
            delivery = Delivery(message, qos, bool(retain), ids)
            delivery.seq = seq
            message.stored_deliveries += 1
            restore_delivery(session, delivery, OutboundState(state), packet_id)

    # -- recording --------------------------------------------------------------------------

    def _sql(self, sql: str, params: tuple[Any, ...]) -> Op:
        return self._record([sql, params])

    def _schedule_flush(self) -> None:
        """Every ``commit_interval_ms`` with ``durability = "batch"``, else next turn."""
        if self._durability == "batch":
            self._loop.call_later(self._interval, self._flush)
        else:
            self._loop.call_soon(self._flush)

    def save_session(self, session: Session) -> None:
        will = session.will
        will_fields: tuple[Any, ...] = (None, None, None, None, None, None)
        if will is not None:
            will_fields = (
                will.topic,
                will.payload,
                will.qos,
                int(will.retain),
                properties_blob(will.properties, WILL_PROPERTIES),
                self._clock.to_wall(session.will_due),
            )
        self._sql(
            _SAVE_SESSION,
            (
                session.client_id,
                session.expiry_interval,
                self._clock.to_wall(session.expires_at),
                *will_fields,
                owner_text(session),
            ),
        )

    def delete_session(self, session: Session) -> None:
        """Forget a session: its rows by client id, and the message rows that only its
        deliveries held, found from its inflight and queue (never a sweep of the table)."""
        client_id = session.client_id
        for sql in _DELETE_SESSION:
            self._sql(sql, (client_id,))
        sent = (inflight.delivery for inflight in session.inflight.values())
        for delivery in chain(sent, session.queue):
            if delivery.seq:  # stored (queued QoS 0 never is)
                self._cancel_insert(client_id, delivery)
                listed = self._deferred.finish(delivery)
                self._release(delivery.message, listed is not None)

    def save_subscription(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        self._sql(
            "INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                client_id,
                topic_filter,
                options.qos,
                int(options.no_local),
                int(options.retain_as_published),
                options.retain_handling,
                options.identifier,
            ),
        )

    def delete_subscription(self, client_id: str, topic_filter: str) -> None:
        self._sql(
            "DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?",
            (client_id, topic_filter),
        )

    def save_delivery(self, client_id: str, delivery: Delivery) -> None:
        """A QoS 1 delivery of a message whose row is still to be inserted is listed in
        that row (store.deferred); any other gets a row of its own."""
        message = delivery.message
        store_id = message.store_id
        message.stored_deliveries += 1
        if not store_id:  # its first: the insert creates the row, which may list it
            store_id = message.store_id = self._next_message_id
            self._next_message_id += 1
            self._new_messages.add(store_id)
            insert = self._unwritten_messages[store_id] = self._record(
                self._message_insert(message)
            )
            if delivery.qos == 1:
                self._listed_only.add(store_id)
                self._list(client_id, delivery, insert)
                return
        elif store_id not in self._unwritten_messages:
            # Always: the row goes when its last delivery does, and a message kept in
            # memory (a retained one) may be delivered again later. The row may hold an
            # older list, and stays.
            self._unwritten_messages[store_id] = self._record(self._message_insert(message))
            self._deferred.touch(message)
            self._gone.discard(store_id)
        elif delivery.qos == 1 and store_id in self._new_messages:
            self._list(client_id, delivery, self._unwritten_messages[store_id])
            return
        self._write_listed(self._deferred.write_all_of(client_id))  # (see write_all_of)
        self._insert_delivery(client_id, delivery, OutboundState.QUEUED, 0)

    def _list(self, client_id: str, delivery: Delivery, insert: Op) -> None:
        """List a QoS 1 delivery in the ``insert`` of its message's row."""
        text = self._deferred.add(client_id, delivery, self._loop.time() + self._defer)
        if text is not None:
            insert[1][-1] = text
        if self._promotion is None:
            self._promotion = self._loop.call_later(self._defer, self._write_due)

    def _insert_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None:
        self._listed_only.discard(delivery.message.store_id)
        ids = ",".join(map(str, delivery.subscription_ids))
        row = (
            client_id,
            delivery.seq,
            delivery.message.store_id,
            delivery.qos,
            int(delivery.retain),
            ids,
            int(state),
            packet_id,
        )
        self._unwritten[client_id, delivery.seq] = self._record([_SAVE_DELIVERY, row])

    def _write_due(self) -> None:
        """Give the listed deliveries unfinished after ``defer_seconds`` their rows."""
        self._promotion = None
        self._write_listed(self._deferred.fall_due(self._loop.time()))
        due = self._deferred.next_due()
        if due is not None:
            delay = max(due - self._loop.time(), 0.0)
            self._promotion = self._loop.call_later(delay, self._write_due)

    def _write_listed(self, entries: Iterable[Deferred]) -> None:
        for entry in entries:
            self._insert_delivery(entry.client_id, entry.delivery, entry.state, entry.packet_id)

    def _message_insert(self, message: Message) -> Op:
        """The insert of ``message``'s row; its last parameter, the list of deliveries, is
        set as its first delivery is listed, and again at the hand-over if it changed."""
        if message.properties is NO_PROPERTIES and message.expires_at is None:
            row = [
                message.store_id,
                message.topic,
                bytearray(message.payload),
                message.qos,
                int(message.retain),
                message.origin,
                None,
            ]
            return [_SAVE_PLAIN_MESSAGE, row]
        row = self._message_row(message, message.store_id)
        row.append(None)
        return [_SAVE_MESSAGE, row]

    def _message_row(self, message: Message, key: int | str) -> list[Any]:
        properties = properties_blob(message.properties, PacketType.PUBLISH)
        expires_at = message.expires_at
        return [
            key,
            message.topic,
            message.payload,
            message.qos,
            int(message.retain),
            properties,
            message.origin,
            None if expires_at is None else self._clock.to_wall(expires_at),
        ]

    def update_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None:
        listed = self._deferred.unwritten(delivery)
        if listed is not None:  # its row, if it gets one, says so
            listed.state = state
            listed.packet_id = packet_id
            return
        insert = self._unwritten.get((client_id, delivery.seq))
        if insert is None:
            self._sql(_UPDATE_DELIVERY, (int(state), packet_id, client_id, delivery.seq))
        else:  # still to be inserted: insert it in its new state
            insert[1] = (*insert[1][:6], int(state), packet_id)

    def delete_delivery(self, client_id: str, delivery: Delivery) -> None:
        listed = self._deferred.finish(delivery)
        has_row = listed is None or listed.written
        if has_row and not self._cancel_insert(client_id, delivery):
            self._sql(_DELETE_DELIVERY, (client_id, delivery.seq))
        self._release(delivery.message, listed is not None)

    def _list_changed(self, message: Message) -> None:
        """A delivery left the list of ``message``, whose row stays. Unless the row is
        still to be inserted (it gets the list then), record an update of the list,
        filled in when the batch is handed over (one per message and batch)."""
        store_id = message.store_id
        if store_id not in self._unwritten_messages and store_id not in self._list_updates:
            self._list_updates[store_id] = self._record([_SAVE_RECIPIENTS, [None, store_id]])

    def _release(self, message: Message, unlisted: bool) -> None:
        """One stored delivery fewer holds ``message``: its row goes with the last one.
        While it stays, the delivery that went is off its list if ``unlisted``."""
        message.stored_deliveries -= 1
        if message.stored_deliveries > 0:
            if unlisted:
                self._list_changed(message)
            return
        store_id = message.store_id
        insert = self._unwritten_messages.pop(store_id, None)
        if insert is not None:
            insert.clear()
        listed_only = store_id in self._listed_only
        if listed_only:
            self._listed_only.remove(store_id)
        if store_id in self._new_messages:  # its row was never written
            self._new_messages.discard(store_id)
        elif listed_only:
            self._gone.add(store_id)
            if self._gone_op is None:  # filled in at the hand-over
                self._gone_op = self._record([_DELETE_MESSAGE_RUN, ()])
        else:
            self._record([_DELETE_MESSAGE, (store_id,)])

    def save_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        self._sql("INSERT OR REPLACE INTO inbound_qos2 VALUES (?, ?)", (client_id, packet_id))

    def delete_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        self._sql(
            "DELETE FROM inbound_qos2 WHERE client_id = ? AND packet_id = ?",
            (client_id, packet_id),
        )

    def save_retained(self, message: Message) -> None:
        row = self._message_row(message, message.topic)
        self._sql(
            "INSERT OR REPLACE INTO retained VALUES (?, ?, ?, ?, ?, ?)",
            (row[0], row[2], row[3], row[5], row[6], row[7]),
        )

    def delete_retained(self, topic: str) -> None:
        self._sql("DELETE FROM retained WHERE topic = ?", (topic,))

    def save_transaction(self, half: HalfMessage) -> None:
        row = self._message_row(half.message, half.transaction_id)
        self._sql(
            "INSERT OR REPLACE INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row[0], half.group, *row[1:], half.checks, self._clock.to_wall(half.next_check)),
        )

    def settle_transaction(self, transaction_id: str, outcome: Settled) -> None:
        self._sql("DELETE FROM transactions WHERE transaction_id = ?", (transaction_id,))
        self._sql(
            "INSERT OR REPLACE INTO transaction_ops VALUES (?, ?, ?)",
            (transaction_id, outcome.value, time.time()),
        )

    # -- committing ---------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._busy:
            self._save_recipients()
            self._delete_gone()
        super()._flush()

    def _delete_gone(self) -> None:
        """Turn the messages gone since the last hand-over into deletions of id runs."""
        op, self._gone_op = self._gone_op, None
        if op is None:
            return
        ids = sorted(self._gone)
        self._gone.clear()
        if not ids:  # all saved again
            op.clear()
            return
        first = last = ids[0]
        for store_id in ids[1:]:
            if store_id != last + 1:
                self._record([_DELETE_MESSAGE_RUN, (first, last)])
                first = store_id
            last = store_id
        op[1] = (first, last)

    def _save_recipients(self) -> None:
        """Put the lists of messages whose listed deliveries changed into the insert of
        the message's row and into its update (see :meth:`_list_changed`): a message saved
        again after its list was to be updated has both in one batch, and the writer may
        run them in either order (store.sqlite_batch)."""
        unwritten = self._unwritten_messages
        updates = self._list_updates
        for store_id, text in self._deferred.take_changed():
            if op := unwritten.get(store_id):  # (cleared: the row is never written)
                op[1][-1] = text
            if op := updates.get(store_id):  # (none once a write failed)
                op[1][0] = text

    def _forget_unwritten(self) -> None:
        super()._forget_unwritten()
        self._unwritten_messages.clear()
        self._new_messages.clear()
        self._list_updates.clear()

    def _write_batch(self, ops: list[Op], callbacks: list[Callable[[], None]]) -> None:
        """Hand a batch to the writer thread (with an incremental vacuum now and then)."""
        vacuum = time.monotonic() - self._last_vacuum > VACUUM_EVERY
        if vacuum:
            self._last_vacuum = time.monotonic()
        if not self._writer_started:
            self._writer_started = True
            self._writer.start()
        self._batches.put((ops, callbacks, vacuum))

    def _write_batches(self) -> None:
        """The writer thread: one transaction per batch. A batch that fails to commit
        ends the thread, and its acknowledgements are never sent."""
        while (batch := self._batches.get()) is not None:
            ops, callbacks, vacuum = batch
            try:
                self._write(ops, vacuum)
            except Exception as exc:  # whatever it is, memory and disk now disagree
                self._failure = self._write_error(exc)
                self._call_on_loop(self._failed)
                return
            self._call_on_loop(partial(self._batch_done, callbacks))

    def _call_on_loop(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the broker is stopping
            self._loop.call_soon_threadsafe(callback)

    def _write(self, ops: list[Op], vacuum: bool = False) -> None:
        db = self._db
        with _transaction(db):
            _PLAN.run(db, ops)
        if vacuum:
            db.execute("PRAGMA incremental_vacuum(256)")

    def _write_error(self, exc: Exception) -> StoreError:
        error = StoreError(f"{self.path}: writing failed: {exc!r}")
        error.__cause__ = exc
        return error

    def close(self) -> None:
        """Write everything still pending, stop the writer and close the database; raise
        StoreError if that, or an earlier write, failed."""
        if self._writer_started:
            self._batches.put(None)
            self._writer.join()
        if self._promotion is not None:
            self._promotion.cancel()
        self._flush_scheduled = True  # no more turns of the loop: what is left is written here
        # Rows for every listed delivery, so that a resumed session finds each one in its
        # state and under its packet identifier.
        self._write_listed(self._deferred.fall_due(float("inf")))
        self._save_recipients()
        self._delete_gone()
        ops = [op for op in self._ops if op]
        self._ops = []
        try:
            if ops and self._failure is None:
                self._write(ops)
        except Exception as exc:
            self._failure = self._write_error(exc)
        finally:
            self._db.close()
        if self._failure is not None:
            raise self._failure


def _write_listed_deliveries(db: sqlite3.Connection) -> None:
    """At start-up, give every delivery listed in a message's row (store.deferred) a row
    of its own, queued (one that has a row already keeps it), and empty the lists: from
    then on, the deliveries table holds every stored delivery."""
    listed = db.execute(
        "SELECT id, recipients FROM messages WHERE recipients IS NOT NULL"
    ).fetchall()
    if not listed:
        return
    rows = [
        (client_id, seq, message_id, int(retain), ids, client_id)
        for message_id, text in listed
        for client_id, seq, retain, ids in decode_recipients(text)
    ]
    with _transaction(db):
        db.executemany(
            "INSERT OR IGNORE INTO deliveries (client_id, seq, message_id, qos, retain,"
            " subscription_ids) SELECT ?, ?, ?, 1, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM sessions WHERE client_id = ?)",
            rows,
        )
        db.execute("UPDATE messages SET recipients = NULL WHERE recipients IS NOT NULL")
        db.executemany(_DELETE_MESSAGE, [(message_id,) for message_id, _ in listed])


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction on a connection in autocommit mode: committed if the block ends,
    rolled back if it raises."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
