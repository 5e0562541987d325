"""The broker's shared state and policy, free of I/O: sessions by client id, who is
connected, subscriptions and routing, transactions, and the timers swept by one periodic
tick.

The asyncio shell (``broker.py``) owns the listener and the clock; every connection
(``protocol.py``) calls in here to open and end sessions, to subscribe and to publish.
What the core needs of a connection is the :class:`Connection` protocol below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Container, Hashable
from dataclasses import astuple, replace
from functools import partial
from typing import Protocol

from roost.codec import SubAck, Subscribe, Subscription, UnsubAck, Unsubscribe, Will
from roost.config import Settings
from roost.errors import ProtocolError, ReasonCode, TransactionRefused
from roost.message import Message
from roost.presence import CONNECTED, DISCONNECTED, presence_event
from roost.router import Route, Router
from roost.security.limits import Limits
from roost.session import NEVER_EXPIRES, Delivery, Session, SubscriptionOptions
from roost.stats import TrafficCounters
from roost.store.base import Store
from roost.timers import Deadlines, Linked, TimingWheel
from roost.topics import TopicNameCheck, is_wildcard, parse_shared, validate_topic_filter
from roost.transactions import (
    DECISION_TOPICS,
    OUTCOMES,
    PREPARE,
    Decision,
    FinalAction,
    HalfMessage,
    Settled,
    TransactionPolicy,
    Transactions,
    rights_topic,
)

log = logging.getLogger("roost.core")

WILL_DUE = "will"
SESSION_EXPIRES = "expiry"
REPORT_INTERVAL = 60.0  # seconds between housekeeping rounds: counters logged, expired
# retained messages removed (from memory and store)
DROP_REPORT_INTERVAL = 10.0  # seconds between log lines about messages dropped per client
DROP_REPORT_CLIENTS = 20  # clients named per such log line; the rest are counted


class PlainSender(Protocol):
    """What the core needs of a connection's outbox: the fast way of ``deliver``."""

    def send_plain(self, message: Message, retain: bool) -> bool:
        """Send a QoS 0 delivery with no per-subscription details now, when nothing has
        to go before it; False, and nothing done, when it must take the way of
        ``deliver``."""
        ...


class Connection(Linked, Hashable, Protocol):
    """What the core needs of a client's connection (linked into the keep-alive wheel)."""

    def deliver(self, delivery: Delivery) -> None: ...

    @property
    def outbox(self) -> PlainSender | None:
        """Where the commonest delivery is sent without a ``Delivery`` (None until the
        connection has sent anything)."""
        ...

    def take_over(self) -> None: ...

    def keepalive_deadline(self) -> float | None: ...

    def keepalive_expired(self) -> None: ...

    def writes_stuck(self, seconds: float) -> None: ...

    def server_shutdown(self) -> None: ...


class ClientRights(Protocol):
    """What an access control list lets one client (user name, client id) do, compiled
    once: the core keeps it with the client's session."""

    generation: int  # of the Authorizer's rules it was made from

    def may_read(self, topic: str) -> bool: ...

    def may_write(self, topic: str) -> bool: ...

    def may_subscribe(self, topic_filter: str) -> bool:
        """Whether the client may place a subscription to ``topic_filter``."""
        ...

    def may_write_all(self, topic_filter: str) -> bool:
        """Whether the client may write every topic ``topic_filter`` matches."""
        ...


class Authorizer(Protocol):
    """What the core asks of an access control list (with none, everything is allowed).
    A client is its user name (None: anonymous) and client id."""

    generation: int  # changes when the rules do (a reload): rights made before are stale

    def rules_for(self, username: str | None, client_id: str) -> ClientRights: ...


class ClusterBus(Protocol):
    """What the core needs of the cluster it belongs to (none when the node runs alone)."""

    def forward(self, message: Message) -> tuple[int, Container[str]]:
        """Send a locally published message to the other nodes that have subscribers of
        it; returns how many nodes it goes to and the shared filters served here."""
        ...

    def after_forwarded(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every message forwarded so far is durable in Redis."""
        ...

    def route_added(self, topic_filter: str) -> None:
        """This node has its first subscriber of ``topic_filter``."""
        ...

    def route_removed(self, topic_filter: str) -> None:
        """This node has lost its last subscriber of ``topic_filter``."""
        ...

    def session_ended(self, client_id: str) -> None:
        """The session of ``client_id`` ended here: its cluster-wide claim can go."""
        ...

    def transaction_prepared(self, transaction_id: str) -> None:
        """This node holds (and checks back) a new pending transaction."""
        ...

    def transaction_settled(self, transaction_id: str, outcome: Settled) -> None: ...

    def forward_decision(self, transaction_id: str, decision: Decision) -> None:
        """A decision for a transaction another node holds (or one unknown here)."""
        ...

    def send_check(self, request: Message) -> bool:
        """Give a check request to a member of its group on another node; False if no
        node has one."""
        ...


class BrokerCore:
    """Sessions, connections and routing of one node."""

    def __init__(self, settings: Settings, clock: Callable[[], float], store: Store) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        # Runs a callback once a published message is safe: on disk, and in a cluster also
        # in Redis (PUBACK / PUBREC wait for it).
        self.after_durable: Callable[[Callable[[], None]], None] = store.after_commit
        self.bus: ClusterBus | None = None
        self.acl: Authorizer | None = None  # None: every client may do everything
        self.node_name = settings.node_id or "local"  # in presence events
        self.router = Router()
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, Connection] = {}  # client id -> its live connection
        self.open_connections: set[Connection] = set()  # every socket, CONNECTed or not
        self.keepalive: TimingWheel[Connection] = TimingWheel(clock())
        self.deadlines: Deadlines[tuple[str, str]] = Deadlines()
        self.blocked_writers: dict[Connection, float] = {}  # -> since when it reads nothing
        self.dropped_messages = 0  # messages dropped because a session's queue was full
        self.deliveries = 0  # deliveries made so far (an input turn's budget counts them)
        self.traffic = TrafficCounters(clock())  # read by metrics, $SYS and the admin API
        self.limits = Limits(settings)  # rates and quotas per client, address and user
        # Run by every tick with its time, after the core's own timers ($SYS topics)
        self.tick_hooks: list[Callable[[float], None]] = []
        self._drops_to_report: dict[str, int] = {}  # client id -> drops not yet logged
        self._next_drop_report = 0.0
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

    def join(self, bus: ClusterBus) -> None:
        """Become a node of a cluster: messages go to (and come from) other nodes."""
        self.bus = bus
        self.after_durable = self._after_forwarded_and_committed

    def _after_forwarded_and_committed(self, callback: Callable[[], None]) -> None:
        assert self.bus is not None
        self.bus.after_forwarded(partial(self.store.after_commit, callback))

    def load(self) -> None:
        """Take over the state saved in the store (at start-up)."""
        now = self.clock()
        state = self.store.load(now)
        for message in state.retained:  # before the sessions: their wills may retain
            self.router.retained[message.topic] = message
        self.adopt_sessions(state.sessions, now)
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

    def adopt_sessions(self, sessions: list[Session], now: float) -> None:
        """Take sessions read from the store (at start-up, or from a node that died):
        offline ones wait for their clients as before; those whose connection was open
        ended abnormally at ``now``: their wills go out (after their delay) and their
        expiry starts."""
        interrupted: list[Session] = []  # connected when their broker stopped
        for session in sessions:
            client_id = session.client_id
            if client_id in self.sessions:
                continue
            self.sessions[client_id] = session
            for topic_filter, options in session.subscriptions.items():
                self._router_subscribe(client_id, topic_filter, options)
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
        for session in interrupted:  # once all are subscribed: one may want another's will
            will, session.will = session.will, None
            self._session_left(session, will, now)

    # -- connections and sessions -------------------------------------------------------

    def is_online(self, client_id: str) -> bool:
        return client_id in self.connections

    def open_session(
        self,
        connection: Connection,
        client_id: str,
        clean_start: bool,
        expiry: int,
        will: Will | None,
        username: str | None = None,
    ) -> tuple[Session, bool]:
        """Attach ``connection`` to the session of ``client_id``; returns (session, present).

        An existing connection with that client id is taken over [MQTT-3.1.4-3]; with clean
        start the old session ends [MQTT-3.1.2-4], otherwise it resumes [MQTT-3.1.2-5]. The
        connection's will is kept with the session (and stored), so that a broker crash
        does not lose it. ``username`` is the client's identity (None: anonymous); with an
        ACL, a session that belongs to another identity (or to an unknown one) is not
        resumed but ends, as with clean start: what was queued for it is not for this one.
        """
        previous = self.connections.get(client_id)
        if previous is not None:
            previous.take_over()
        session = self.sessions.get(client_id)
        if (
            session is not None
            and not clean_start
            and self.acl is not None
            and not session.owned_by(username)
        ):
            log.info("session of %s belongs to another user: it ends", client_id)
            clean_start = True
        if session is not None and clean_start:
            self.end_session(client_id)
            session = None
        present = session is not None
        if session is None:
            session = self.sessions[client_id] = Session(client_id, expiry)
            session.set_owner(username)
            session.will = will
            session.attach_store(self.store)
        else:
            # Reconnected in time: a delayed will is not sent [MQTT-3.1.3-9].
            self._cancel_deadlines(client_id)
            session.set_owner(username)
            session.will = will
            session.will_due = None
            session.expires_at = None
            session.set_expiry_interval(expiry, self.store)
        self.connections[client_id] = connection
        self.traffic.connected(len(self.connections))
        return session, present

    def session_attached(self, client_id: str) -> None:
        """The connection that opened the session of ``client_id`` holds it now: its
        presence event goes out (the session itself may be subscribed to it)."""
        self._announce_presence(client_id, CONNECTED)

    def connection_ended(self, connection: Connection) -> None:
        """A network connection closed: forget it everywhere (it may never have attached)."""
        self.open_connections.discard(connection)
        self.blocked_writers.pop(connection, None)
        self.keepalive.discard(connection)

    def connection_closed(
        self, connection: Connection, session: Session, will: Will | None
    ) -> None:
        """The connection holding ``session`` ended; ``will`` is its will if it must be sent."""
        client_id = session.client_id
        if self.connections.get(client_id) is not connection:
            return
        del self.connections[client_id]
        self._announce_presence(client_id, DISCONNECTED)
        session.will = None  # the connection's will: sent below if it must be
        if session.expiry_interval == 0:
            if will is not None:
                self.publish_will(client_id, will, session)
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
            self.publish_will(client_id, will, session)
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
        self._cancel_deadlines(client_id)
        session.forget()
        if session.will is not None:
            self.publish_will(client_id, session.will, session)
            session.will = None
        self._drop_subscriptions(session)
        if self.bus is not None:
            self.bus.session_ended(client_id)

    def _drop_subscriptions(self, session: Session) -> None:
        """Take a session's subscriptions out of the router (not out of the session)."""
        for topic_filter in session.subscriptions:
            self._router_unsubscribe(session.client_id, topic_filter)

    def _router_subscribe(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> bool:
        """Add a subscription to the router; the cluster hears of a new filter."""
        is_new = self.router.subscribe(client_id, topic_filter, options)
        if is_new and self.bus is not None and self.router.subscribers(topic_filter) == 1:
            self.bus.route_added(topic_filter)
        return is_new

    def _router_unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        """Remove a subscription from the router; the cluster hears of a filter gone."""
        existed = self.router.unsubscribe(client_id, topic_filter)
        if existed and self.bus is not None and not self.router.subscribers(topic_filter):
            self.bus.route_removed(topic_filter)
        return existed

    def hold_session(self, client_id: str, subscriptions: dict[str, SubscriptionOptions]) -> None:
        """A session is on its way from another node: subscribe for it now, so that what
        its subscriptions match meanwhile waits here (see :meth:`take_held_session`)."""
        if client_id in self.sessions:
            return
        held = self.sessions[client_id] = Session(client_id, NEVER_EXPIRES)  # not stored
        for topic_filter, options in subscriptions.items():
            held.subscribe(topic_filter, options)  # not stored: the session has no store
            self._router_subscribe(client_id, topic_filter, options)

    def take_held_session(self, client_id: str, session: Session | None) -> None:
        """The session announced by :meth:`hold_session` has arrived (None: there is none):
        it takes the held one's place, and what was queued for it meanwhile."""
        held = self.sessions.pop(client_id, None)
        if session is not None:
            self.adopt_sessions([session], self.clock())
        if held is None:
            return
        kept = session.subscriptions if session is not None else {}
        for topic_filter in held.subscriptions:
            if topic_filter not in kept:
                self._router_unsubscribe(client_id, topic_filter)
        if session is None or not held.queue:
            return
        limit = self.settings.max_queued_messages
        now = self.clock()
        while held.queue:
            if not session.enqueue(held.dequeue(), limit, now):
                self.note_dropped(client_id)

    def kick(self, client_id: str) -> None:
        """Another node took ``client_id`` over: close its connection here and let its
        session go, leaving the stored session to the new owner."""
        connection = self.connections.get(client_id)
        if connection is not None:
            connection.take_over()
        self._let_go(client_id)

    def let_go_of_sessions(self) -> None:
        """Forget every session, leaving the stored ones as they are: this node may not
        own them any more (it was cut off from its cluster, which adopted them)."""
        for client_id in list(self.sessions):
            self._let_go(client_id)

    def _let_go(self, client_id: str) -> None:
        session = self.sessions.pop(client_id, None)
        if session is None:
            return
        self._cancel_deadlines(client_id)
        self._drop_subscriptions(session)
        session.store = None  # the stored session is its new owner's

    def _cancel_deadlines(self, client_id: str) -> None:
        self.deadlines.cancel((SESSION_EXPIRES, client_id))
        self.deadlines.cancel((WILL_DUE, client_id))

    def _announce_presence(self, client_id: str, event: str) -> None:
        if self.settings.presence_events:
            self.publish(presence_event(client_id, self.node_name, event, self.clock()))

    def publish_will(self, client_id: str, will: Will, owner: Session | None = None) -> None:
        """Publish the will of ``client_id``; with an ACL, only if ``owner`` (its session;
        None: unknown) may write the will's topic."""
        if self.acl is not None and not self.may_write(owner, will.topic):
            log.info("will of %s on %r not published: not authorized", client_id, will.topic)
            return
        properties = will.properties
        if properties.will_delay_interval is not None:
            properties = replace(properties, will_delay_interval=None)
        message = Message(
            will.topic, will.payload, will.qos, will.retain, properties, client_id, self.clock()
        )
        log.debug("publishing the will of %s on %r", client_id, will.topic)
        self.publish(message)

    def watch_keepalive(self, connection: Connection, deadline: float) -> None:
        """Check ``connection`` at ``deadline``; it keeps one live entry in the wheel (a new
        deadline replaces the one before)."""
        self.keepalive.schedule(connection, deadline)

    # -- routing --------------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Retain and route one message published here; returns how many sessions (and
        other nodes) it was given to."""
        if message.retain:
            self.router.retain(message)
            if message.payload:
                self.store.save_retained(message)
            else:
                self.store.delete_retained(message.topic)
        if self.bus is None:
            return self._deliver(message, None)
        nodes, serve_shared = self.bus.forward(message)
        return nodes + self._deliver(message, serve_shared)

    def publish_relayed(self, message: Message, serve_shared: Container[str] | None) -> None:
        """A message published on another node, for the subscribers here (its node
        stored it if retained); None serves every shared group here (a message of this
        node's own that stays on it, as ``$SYS/broker/...``)."""
        if message.retain:
            self.router.retain(message)
        self._deliver(message, serve_shared)

    def fullest_queue(self, message: Message, ignore: Container[str] = ()) -> tuple[int, str]:
        """How many deliveries wait in the longest queue among the connected sessions
        that ``message`` would go to (plain subscriptions; not those in ``ignore``), and
        whose queue that is (0, "" if none waits). A query for the cluster's inbox reader:
        it changes nothing (no shared group is served, so none moves on to its next member)."""
        longest, whose = 0, ""
        sessions = self.sessions
        connections = self.connections
        for client_id, _ in self.router.route(message, self.is_online, ()):
            if client_id in connections and client_id not in ignore:
                waiting = len(sessions[client_id].queue)
                if waiting > longest:
                    longest, whose = waiting, client_id
        return longest, whose

    def deliver_adopted(
        self, message: Message, serve_shared: Container[str], adopted: Container[str]
    ) -> None:
        """A message that was on its way to a node that died, for the sessions adopted
        from it only (the others here had their own copy)."""
        self._deliver(message, serve_shared, adopted)

    def _deliver(
        self,
        message: Message,
        serve_shared: Container[str] | None,
        only: Container[str] | None = None,
    ) -> int:
        if self.acl is None:
            targets = self.router.route(message, self.is_online, serve_shared)
        else:
            topic = message.topic
            may_read = self.may_read
            targets = self.router.route(
                message, self.is_online, serve_shared, lambda client_id: may_read(client_id, topic)
            )
            targets = [target for target in targets if may_read(target[0], topic)]
        if only is not None:
            targets = [target for target in targets if target[0] in only]
        return self._hand_out(message, targets)

    def deliver_to_groups(self, message: Message, groups: Collection[str]) -> int:
        """A message for the shared groups ``groups`` only (one member of each here), not
        for the plain subscriptions of its topic: one that waited in a dead node's inbox,
        dealt again to its groups by the node adopting that one."""
        topic = message.topic

        def may_receive(client_id: str) -> bool:
            return self.may_read(client_id, topic)

        eligible = None if self.acl is None else may_receive
        return self._hand_out(message, self.router.route_groups(groups, self.is_online, eligible))

    def _hand_out(self, message: Message, targets: Route) -> int:
        """Give ``message`` to each target: its connection, or its session's queue."""
        if not targets:  # as a message that only goes to other nodes
            return 0
        sessions = self.sessions
        connections = self.connections
        limit = self.settings.max_queued_messages
        message_time = self.clock()
        self.deliveries += len(targets)
        for client_id, target in targets:
            qos = message.qos if message.qos < target.qos else target.qos
            retain = message.retain and target.retain_as_published
            connection = connections.get(client_id)
            if connection is not None:
                outbox = connection.outbox
                if (
                    qos
                    or target.subscription_ids
                    or outbox is None
                    or not outbox.send_plain(message, retain)
                ):
                    connection.deliver(Delivery(message, qos, retain, target.subscription_ids))
            # Offline sessions keep QoS 1/2 messages; QoS 0 is not queued for them.
            elif qos and not sessions[client_id].enqueue(
                Delivery(message, qos, retain, target.subscription_ids), limit, message_time
            ):
                self.note_dropped(client_id)
        return len(targets)

    # -- authorization ----------------------------------------------------------------------

    def may_read(self, client_id: str, topic: str) -> bool:
        """Whether the session of ``client_id`` may receive messages of ``topic``."""
        if self.acl is None:
            return True
        session = self.sessions.get(client_id)
        return session is not None and session.identified and self._rights(session).may_read(topic)

    def may_write(self, session: Session | None, topic: str) -> bool:
        """Whether the owner of ``session`` (None: unknown) may publish to ``topic``."""
        if self.acl is None:
            return True
        return session is not None and session.identified and self._rights(session).may_write(topic)

    def _rights(self, session: Session) -> ClientRights:
        """The ACL rules of the owner of ``session``, compiled once per session and owner
        (and again after a reload of the rules)."""
        acl = self.acl
        assert acl is not None
        rights = session.acl_rights
        if rights is None or rights.generation != acl.generation:
            rights = session.acl_rights = acl.rules_for(session.username, session.client_id)
        return rights

    def _may_subscribe(self, session: Session, topic_filter: str) -> bool:
        inner = parse_shared(topic_filter)[1]
        if session.identified and self._rights(session).may_subscribe(inner):
            return True
        log.info("client %s may not subscribe to %r", session.client_id, topic_filter)
        return False

    def note_dropped(self, client_id: str) -> None:
        """A message for ``client_id`` was dropped because its session's queue is full;
        counted, and logged by the periodic tick (rate limited)."""
        self.dropped_messages += 1
        drops = self._drops_to_report
        drops[client_id] = drops.get(client_id, 0) + 1

    def _report_drops(self, now: float) -> None:
        drops = self._drops_to_report
        if not drops or now < self._next_drop_report:
            return
        self._next_drop_report = now + DROP_REPORT_INTERVAL
        self._drops_to_report = {}
        named = sorted(drops.items(), key=lambda item: -item[1])[:DROP_REPORT_CLIENTS]
        listed = ", ".join(f"{client_id}: {count}" for client_id, count in named)
        rest = len(drops) - len(named)
        log.warning(
            "queue full (max_queued_messages=%d), messages dropped for %s%s",
            self.settings.max_queued_messages,
            listed,
            f" and {rest} more clients" if rest else "",
        )

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(
        self, session: Session, packet: Subscribe, v5: bool
    ) -> tuple[SubAck, list[Delivery]]:
        """Apply a SUBSCRIBE: its SUBACK and the retained messages to send [MQTT-3.3.1-8].

        Every filter is checked before any is applied, so a protocol error anywhere in the
        packet changes nothing.
        """
        settings = self.settings
        ids = packet.properties.subscription_identifiers
        identifier = ids[0] if ids else None
        if identifier is not None and not settings.subscription_identifier_available:
            raise ProtocolError(
                "subscription identifiers are not supported",
                ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            )
        failures = [self._check_filter(sub) for sub in packet.subscriptions]
        if self.acl is not None:
            failures = [
                ReasonCode.NOT_AUTHORIZED
                if failure is None and not self._may_subscribe(session, sub.topic_filter)
                else failure
                for sub, failure in zip(packet.subscriptions, failures, strict=True)
            ]
        codes: list[int] = []
        retained: list[Delivery] = []
        now = self.clock()
        sub_ids = () if identifier is None else (identifier,)
        for sub, failure in zip(packet.subscriptions, failures, strict=True):
            if failure is not None:
                codes.append(failure if v5 else 0x80)
                continue
            topic_filter = sub.topic_filter
            qos = min(sub.qos, settings.maximum_qos)
            options = SubscriptionOptions(
                qos, sub.no_local, sub.retain_as_published, sub.retain_handling, identifier
            )
            is_new = self._router_subscribe(session.client_id, topic_filter, options)
            session.subscribe(topic_filter, options)
            codes.append(qos)
            handling = sub.retain_handling
            shared = topic_filter.startswith("$share/")  # no retained for shared [MQTT-3.8.4]
            if not shared and (handling == 0 or (handling == 1 and is_new)):
                for message in self.router.retained_for(topic_filter, now):
                    if not self.may_read(session.client_id, message.topic):
                        continue
                    granted = min(message.qos, qos)
                    retained.append(Delivery(message, granted, True, sub_ids))
        return SubAck(packet.packet_id, tuple(codes)), retained

    def _check_filter(self, sub: Subscription) -> int | None:
        """The SUBACK failure code for a filter, or None if it can be subscribed."""
        settings = self.settings
        topic_filter = sub.topic_filter
        try:
            validate_topic_filter(
                topic_filter, settings.max_topic_length, settings.max_topic_levels
            )
        except ProtocolError as exc:
            return exc.reason_code
        group, inner = parse_shared(topic_filter)
        if group is not None:
            if not settings.shared_subscription_available:
                return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            if sub.no_local:
                raise ProtocolError("no local on a shared subscription")  # [MQTT-3.8.3-4]
        if not settings.wildcard_subscription_available and is_wildcard(inner):
            return ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        return None

    def unsubscribe(self, session: Session, packet: Unsubscribe) -> UnsubAck:
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            existed = self._router_unsubscribe(session.client_id, topic_filter)
            session.unsubscribe(topic_filter)
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        return UnsubAck(packet.packet_id, tuple(codes))

    # -- flow control -----------------------------------------------------------------------

    def writes_blocked(self, connection: Connection) -> None:
        """``connection``'s client stopped reading; the tick closes it if it stays so."""
        self.blocked_writers.setdefault(connection, self.clock())

    def writes_unblocked(self, connection: Connection) -> None:
        self.blocked_writers.pop(connection, None)

    # -- transactions -----------------------------------------------------------------------

    def prepare_transaction(
        self,
        transaction_id: str,
        group: str,
        check_delay: int | None,
        message: Message,
        producer: Session | None,
    ) -> None:
        """Keep a half message, undelivered (raises TransactionRefused). With an ACL, the
        ``producer`` (its session; None: unknown) must be allowed to write the message's
        topic and ``$tx/prepare/<group>``."""
        if self.acl is not None:
            for topic in (message.topic, rights_topic(PREPARE, group)):
                if not self.may_write(producer, topic):
                    raise TransactionRefused(
                        f"not authorized to write {topic!r}", ReasonCode.NOT_AUTHORIZED
                    )
        half = self.transactions.prepare(transaction_id, group, message, check_delay, self.clock())
        if half is not None:
            self.store.save_transaction(half)
            if self.bus is not None:
                self.bus.transaction_prepared(transaction_id)
            log.debug("transaction %s of group %s prepared", transaction_id, group)

    def decide_transaction(self, topic: str, payload: bytes, decider: Session | None) -> None:
        """Apply a decision published on a ``$tx/...`` topic (raises TransactionRefused);
        in a cluster, one for a transaction held by another node goes there. ``decider``
        is the session of the client that sent it, None for the operator (admin API)."""
        decision = DECISION_TOPICS.get(topic)
        if decision is None:
            raise TransactionRefused(
                f"{topic!r} is reserved for transactions", ReasonCode.NOT_AUTHORIZED
            )
        transaction_id = payload.decode("utf-8", "replace")
        transactions = self.transactions
        if self.acl is not None and decider is not None:
            self._authorize_decision(decider, decision, transaction_id)
        if (
            self.bus is not None
            and transaction_id not in transactions.pending
            and transaction_id not in transactions.settled
        ):
            self.bus.forward_decision(transaction_id, decision)
            return
        half = transactions.decide(transaction_id, decision)
        if half is not None:
            self._settle(half, OUTCOMES[decision])

    def _authorize_decision(
        self, decider: Session, decision: Decision, transaction_id: str
    ) -> None:
        """Raise TransactionRefused (0x87) unless ``decider`` may write
        ``$tx/<decision>/<group>`` for the transaction's group. A settled transaction is
        answered as such; one not held here needs the right for every group."""
        half = self.transactions.pending.get(transaction_id)
        if half is not None:
            right = rights_topic(decision.value, half.group)
            if self.may_write(decider, right):
                return
        elif transaction_id in self.transactions.settled:
            return
        else:
            right = rights_topic(decision.value, "+")
            if decider.identified and self._rights(decider).may_write_all(right):
                return
        raise TransactionRefused(f"not authorized to write {right!r}", ReasonCode.NOT_AUTHORIZED)

    def apply_decision(self, transaction_id: str, decision: Decision) -> None:
        """A decision another node received, for a transaction that may be held here."""
        if transaction_id not in self.transactions.pending:
            return
        half = self.transactions.decide(transaction_id, decision)
        if half is not None:
            self._settle(half, OUTCOMES[decision])

    def settled_elsewhere(self, transaction_id: str, outcome: Settled) -> None:
        """Another node settled a transaction: answer a late decision as it would."""
        self.transactions.restore_settled(transaction_id, outcome)

    def adopt_transaction(self, half: HalfMessage) -> None:
        """Hold (and check back) a pending transaction from a node that died."""
        if half.transaction_id not in self.transactions.pending:
            self.transactions.restore(half)

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
        if self.bus is not None:
            self.bus.transaction_settled(half.transaction_id, outcome)
        log.debug("transaction %s %s", half.transaction_id, outcome.value)

    def _check_transaction(self, half: HalfMessage, now: float) -> None:
        """A half message is due: check back with its group, or take the final action."""
        action = self.transactions.next_step(half, now)
        if action is None:
            self._send_check(half)
            self.store.save_transaction(half)
            return
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
        if self.deliver_check(request) or (self.bus is not None and self.bus.send_check(request)):
            self.transactions.counters.checks_sent += 1
            return
        log.info(
            "transaction %s: no member of group %s is connected for check %d",
            half.transaction_id,
            half.group,
            half.checks,
        )

    def deliver_check(self, request: Message) -> bool:
        """Give a check request to one connected member of its group here, if any."""
        topic = request.topic

        def may_receive(client_id: str) -> bool:
            return self.is_online(client_id) and self.may_read(client_id, topic)

        member = self.router.pick_subscriber(
            topic, self.is_online if self.acl is None else may_receive
        )
        if member is None:
            return False
        client_id, options = member
        ids = () if options.identifier is None else (options.identifier,)
        self.connections[client_id].deliver(Delivery(request, min(1, options.qos), False, ids))
        return True

    # -- timers ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Run everything that is due: keep-alive checks, clients that stopped reading,
        clients over their rate, delayed wills, session expiry, transaction checks,
        housekeeping. Every due item is handled even when another one fails."""
        now = self.clock()
        for connection in self.keepalive.due(now):
            _guarded(self._check_keepalive, connection, now)
        stall = self.settings.write_stall_timeout
        for connection, since in list(self.blocked_writers.items()):
            if now - since >= stall:
                _guarded(connection.writes_stuck, now - since)
        for kind, client_id in self.deadlines.due(now):
            _guarded(self._deadline_due, kind, client_id, now)
        resume, expel = self.limits.throttles.sweep(now)
        for client in resume:
            _guarded(client.rate_refilled)
        for client in expel:
            _guarded(client.rate_exceeded)
        for half in self.transactions.due(now):
            _guarded(self._check_transaction, half, now)
        self._report_drops(now)
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            self._report_transactions()
            for topic in self.router.drop_expired_retained(now):
                self.store.delete_retained(topic)
        for hook in self.tick_hooks:
            _guarded(hook, now)

    def _check_keepalive(self, connection: Connection, now: float) -> None:
        deadline = connection.keepalive_deadline()
        if deadline is None:
            return
        if now >= deadline:
            connection.keepalive_expired()
        else:
            self.watch_keepalive(connection, deadline)

    def _deadline_due(self, kind: str, client_id: str, now: float) -> None:
        session = self.sessions.get(client_id)
        if session is None or client_id in self.connections:
            return
        will = session.will
        if kind == WILL_DUE:
            if will is not None and session.will_due is not None and session.will_due <= now:
                session.will = session.will_due = None
                session.save()
                self.publish_will(client_id, will, session)
        elif session.expires_at is not None and session.expires_at <= now:
            log.debug("session %s expired", client_id)
            self.end_session(client_id)

    def shutdown(self) -> None:
        """Close every connection: the server is shutting down."""
        for connection in list(self.open_connections):
            connection.server_shutdown()


def _guarded(step: Callable[..., None], *args: object) -> None:
    """Run one step of the tick; a failure is logged and does not stop the others."""
    try:
        step(*args)
    except Exception:
        log.exception("error in the periodic tick (%s)", getattr(step, "__name__", step))
