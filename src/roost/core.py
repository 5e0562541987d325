"""The broker's shared state, free of I/O: sessions by client id, who is connected, the
router, and the timers swept by one periodic tick.

The asyncio shell (``broker.py``) owns the listener and the clock; every connection's
protocol object (``protocol.py``) calls in here to open and end sessions and to publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import astuple, replace
from typing import TYPE_CHECKING

from roost.codec import Will
from roost.config import Settings
from roost.errors import ReasonCode
from roost.message import Message
from roost.router import Router
from roost.session import NEVER_EXPIRES, Delivery, Session
from roost.store.base import Store
from roost.timers import Deadlines, TimingWheel
from roost.topics import TopicNameCheck
from roost.transactions import (
    DECISION_TOPICS,
    OUTCOMES,
    FinalAction,
    HalfMessage,
    Settled,
    TransactionPolicy,
    TransactionRefused,
    Transactions,
)

if TYPE_CHECKING:
    from roost.protocol import ClientProtocol

log = logging.getLogger("roost.core")

WILL_DUE = "will"
SESSION_EXPIRES = "expiry"
REPORT_INTERVAL = 60.0  # seconds between housekeeping rounds: counters logged, expired
# retained messages removed (from memory and store)


class BrokerCore:
    """Sessions, connections and routing of one node."""

    def __init__(self, settings: Settings, clock: Callable[[], float], store: Store) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self.router = Router()
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, ClientProtocol] = {}  # client id -> its live connection
        self.open_connections: set[ClientProtocol] = set()  # every socket, CONNECTed or not
        self.keepalive: TimingWheel[ClientProtocol] = TimingWheel(clock())
        self.deadlines: Deadlines[tuple[str, str]] = Deadlines()
        self.dropped_messages = 0
        self._next_report = clock() + REPORT_INTERVAL
        self._last_report: tuple[int, ...] = ()
        self.valid_topics = TopicNameCheck(settings.max_topic_length, settings.max_topic_levels)
        self.transactions = Transactions(
            TransactionPolicy(
                settings.transaction_timeout,
                settings.transaction_check_interval,
                settings.transaction_check_max,
                FinalAction(settings.transaction_final_action),
                settings.max_pending_transactions,
                settings.max_pending_transactions_per_group,
            )
        )

    def load(self) -> None:
        """Take over the state saved in the store (at start-up)."""
        now = self.clock()
        state = self.store.load(now)
        interrupted: list[Session] = []  # connected when the broker stopped
        for session in state.sessions:
            client_id = session.client_id
            self.sessions[client_id] = session
            for topic_filter, options in session.subscriptions.items():
                self.router.subscribe(client_id, topic_filter, options)
            if session.expires_at is None and (
                session.expiry_interval != NEVER_EXPIRES
                or (session.will is not None and session.will_due is None)
            ):
                interrupted.append(session)
                continue
            if session.expires_at is not None:
                self.deadlines.schedule((SESSION_EXPIRES, client_id), session.expires_at)
            if session.will_due is not None:
                self.deadlines.schedule((WILL_DUE, client_id), session.will_due)
        for message in state.retained:
            self.router.retained[message.topic] = message
        for session in interrupted:
            # Its connection ended with the broker, without DISCONNECT: an abnormal end.
            will, session.will = session.will, None
            self._session_left(session, will, now)
        for half in state.transactions:
            self.transactions.restore(half)
        for transaction_id, outcome in state.settled:
            self.transactions.restore_settled(transaction_id, outcome)
        log.info(
            "loaded %d sessions, %d retained messages, %d pending transactions",
            len(state.sessions),
            len(state.retained),
            len(state.transactions),
        )

    # -- connections and sessions -------------------------------------------------------

    def is_online(self, client_id: str) -> bool:
        return client_id in self.connections

    def open_session(
        self,
        connection: ClientProtocol,
        client_id: str,
        clean_start: bool,
        expiry: int,
        will: Will | None,
    ) -> tuple[Session, bool]:
        """Attach ``connection`` to the session of ``client_id``; returns (session, present).

        An existing connection with that client id is taken over [MQTT-3.1.4-3]; with clean
        start the old session ends [MQTT-3.1.2-4], otherwise it resumes [MQTT-3.1.2-5]. The
        connection's will is kept with the session (and stored), so that a broker crash
        does not lose it.
        """
        previous = self.connections.get(client_id)
        if previous is not None:
            previous.take_over()
        session = self.sessions.get(client_id)
        if session is not None and clean_start:
            self.end_session(client_id)
            session = None
        present = session is not None
        if session is None:
            session = self.sessions[client_id] = Session(client_id, expiry)
            session.will = will
            session.attach_store(self.store)
        else:
            # Reconnected in time: a delayed will is not sent [MQTT-3.1.3-9].
            session.will = will
            session.will_due = None
            session.expires_at = None
            session.set_expiry_interval(expiry, self.store)
        self.connections[client_id] = connection
        return session, present

    def connection_closed(self, connection: ClientProtocol, will: Will | None) -> None:
        """The connection holding a session ended; ``will`` is its will if it must be sent."""
        session = connection.session
        if session is None or self.connections.get(session.client_id) is not connection:
            return
        client_id = session.client_id
        del self.connections[client_id]
        session.will = None  # the connection's will: sent below if it must be
        if session.expiry_interval == 0:
            if will is not None:
                self.publish_will(client_id, will)
            self.end_session(client_id)
            return
        self._session_left(session, will, self.clock())

    def _session_left(self, session: Session, will: Will | None, now: float) -> None:
        """A persistent session lost its connection at ``now``: start its expiry, and send
        ``will`` at the earlier of its delay and the end of the session."""
        client_id = session.client_id
        expiry = session.expiry_interval
        if expiry != NEVER_EXPIRES:
            session.expires_at = now + expiry
            self.deadlines.schedule((SESSION_EXPIRES, client_id), session.expires_at)
        delay = 0 if will is None else will.properties.will_delay_interval or 0
        if will is not None and delay == 0:
            self.publish_will(client_id, will)
        elif will is not None:
            due = now + delay
            if session.expires_at is not None:
                due = min(due, session.expires_at)
            session.will = will
            session.will_due = due
            self.deadlines.schedule((WILL_DUE, client_id), due)
        session.save()

    def end_session(self, client_id: str) -> None:
        """Remove a session and its subscriptions; a will still waiting is sent now."""
        session = self.sessions.pop(client_id, None)
        if session is None:
            return
        session.forget()
        if session.will is not None:
            self.publish_will(client_id, session.will)
            session.will = None
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(client_id, topic_filter)

    def publish_will(self, client_id: str, will: Will) -> None:
        properties = will.properties
        if properties.will_delay_interval is not None:
            properties = replace(properties, will_delay_interval=None)
        message = Message(
            will.topic, will.payload, will.qos, will.retain, properties, client_id, self.clock()
        )
        log.debug("publishing the will of %s on %r", client_id, will.topic)
        self.publish(message)

    def watch_keepalive(self, connection: ClientProtocol, deadline: float) -> None:
        """Check ``connection`` at ``deadline``; it keeps one live entry in the wheel."""
        connection.keepalive_due = deadline
        self.keepalive.schedule(connection, deadline)

    # -- routing --------------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Retain and route one message; returns how many sessions it was given to."""
        if message.retain:
            self.router.retain(message)
            if message.payload:
                self.store.save_retained(message)
            else:
                self.store.delete_retained(message.topic)
        targets = self.router.route(message, self.is_online)
        sessions = self.sessions
        connections = self.connections
        limit = self.settings.max_queued_messages
        message_time = self.clock()
        for client_id, target in targets:
            qos = message.qos if message.qos < target.qos else target.qos
            retain = message.retain and target.retain_as_published
            delivery = Delivery(message, qos, retain, target.subscription_ids)
            connection = connections.get(client_id)
            if connection is not None:
                connection.deliver(delivery)
            # Offline sessions keep QoS 1/2 messages; QoS 0 is not queued for them.
            elif qos and not sessions[client_id].enqueue(delivery, limit, message_time):
                self.dropped_messages += 1
        return len(targets)

    # -- transactions -----------------------------------------------------------------------

    def prepare_transaction(
        self, transaction_id: str, group: str, check_delay: int | None, message: Message
    ) -> None:
        """Keep a half message, undelivered (raises TransactionRefused)."""
        half = self.transactions.prepare(transaction_id, group, message, check_delay, self.clock())
        if half is not None:
            self.store.save_transaction(half)
            log.debug("transaction %s of group %s prepared", transaction_id, group)

    def decide_transaction(self, topic: str, payload: bytes) -> None:
        """Apply a decision published on a ``$tx/...`` topic (raises TransactionRefused)."""
        decision = DECISION_TOPICS.get(topic)
        if decision is None:
            raise TransactionRefused(
                f"{topic!r} is reserved for transactions", ReasonCode.NOT_AUTHORIZED
            )
        transaction_id = payload.decode("utf-8", "replace")
        half = self.transactions.decide(transaction_id, decision)
        if half is not None:
            self._settle(half, OUTCOMES[decision])

    def _settle(self, half: HalfMessage, outcome: Settled) -> None:
        if outcome is Settled.COMMITTED:
            # A fresh message: its expiry counts from the commit, not from the prepare.
            stored = half.message
            self.publish(
                Message(
                    stored.topic,
                    stored.payload,
                    stored.qos,
                    stored.retain,
                    stored.properties,
                    stored.origin,
                    self.clock(),
                )
            )
        self.transactions.settle(half, outcome)
        self.store.settle_transaction(half.transaction_id, outcome)
        log.debug("transaction %s %s", half.transaction_id, outcome.value)

    def _check_transactions(self, now: float) -> None:
        transactions = self.transactions
        for half in transactions.due(now):
            action = transactions.next_step(half, now)
            if action is None:
                self._send_check(half)
                self.store.save_transaction(half)
                continue
            log.warning(
                "transaction %s of group %s: no decision after %d checks; final action: %s",
                half.transaction_id,
                half.group,
                half.checks,
                action.value,
            )
            if action is FinalAction.KEEP:
                self.store.save_transaction(half)
            else:
                self._settle(half, OUTCOMES[action])

    def _report_transactions(self) -> None:
        counters = self.transactions.counters
        figures = (len(self.transactions.pending), *astuple(counters))
        if figures != self._last_report:
            self._last_report = figures
            log.info(
                "transactions: pending=%d commits=%d rollbacks=%d checks=%d checks_sent=%d"
                " checks_exhausted=%d",
                *figures,
            )

    def _send_check(self, half: HalfMessage) -> None:
        """Ask one live member of the producer group for the transaction's state."""
        request = half.check_request()
        member = self.router.pick_subscriber(request.topic, self.is_online)
        if member is None:
            log.info(
                "transaction %s: no member of group %s is connected for check %d",
                half.transaction_id,
                half.group,
                half.checks,
            )
            return
        client_id, options = member
        self.transactions.counters.checks_sent += 1
        ids = () if options.identifier is None else (options.identifier,)
        self.connections[client_id].deliver(Delivery(request, min(1, options.qos), False, ids))

    # -- timers ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Run everything that is due: keep-alive checks, delayed wills, session expiry."""
        now = self.clock()
        for connection in self.keepalive.due(now):
            if now < connection.keepalive_due:
                continue  # an older entry: the connection has a later one
            deadline = connection.keepalive_deadline()
            if deadline is None:
                continue
            if now >= deadline:
                try:
                    connection.keepalive_expired()
                except Exception:  # one failure must not lose the rest of this sweep
                    log.exception("error closing a connection whose keep alive expired")
            else:
                self.watch_keepalive(connection, deadline)
        for kind, client_id in self.deadlines.due(now):
            session = self.sessions.get(client_id)
            if session is None or client_id in self.connections:
                continue
            will = session.will
            if kind == WILL_DUE:
                if will is not None and session.will_due is not None and session.will_due <= now:
                    session.will = session.will_due = None
                    session.save()
                    self.publish_will(client_id, will)
            elif session.expires_at is not None and session.expires_at <= now:
                log.debug("session %s expired", client_id)
                self.end_session(client_id)
        self._check_transactions(now)
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            self._report_transactions()
            for topic in self.router.drop_expired_retained(now):
                self.store.delete_retained(topic)

    def shutdown(self) -> None:
        """Close every connection: the server is shutting down."""
        for connection in list(self.open_connections):
            connection.server_shutdown()
