"""Routing: which sessions receive a published message, at which QoS, with which
subscription identifiers; and the retained-message store. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator

from roost.cache import GenerationalCache
from roost.message import Message
from roost.session import SubscriptionOptions
from roost.timers import Deadlines
from roost.topics import SHARE_PREFIX, TopicMap, TopicTrie, parse_shared

ROUTE_CACHE_SIZE = 4096


class Target:
    """What one session gets from one publish, merged over its matching subscriptions:
    one copy at the highest QoS carrying every subscription identifier [MQTT-3.3.4-2,-4]."""

    __slots__ = ("qos", "retain_as_published", "subscription_ids")

    def __init__(self, options: SubscriptionOptions) -> None:
        self.qos = options.qos
        self.retain_as_published = options.retain_as_published
        self.subscription_ids: tuple[int, ...] = (
            () if options.identifier is None else (options.identifier,)
        )

    def merge(self, options: SubscriptionOptions) -> None:
        if options.qos > self.qos:
            self.qos = options.qos
        self.retain_as_published = self.retain_as_published or options.retain_as_published
        if options.identifier is not None:
            self.subscription_ids = (*self.subscription_ids, options.identifier)


Route = list[tuple[str, Target]]  # (client id, what it gets) for each receiving session


class RetainedMessages(TopicMap[Message]):
    """Retained messages by topic [MQTT-3.3.1-5], found by filter through the topic index
    and by expiry through a heap of deadlines, so that neither a SUBSCRIBE nor the
    periodic clean-up scans them all. Assigning an item (as loading does) indexes it at
    once: the first SUBSCRIBE after a load does not pay for every topic loaded."""

    def __init__(self) -> None:
        super().__init__()
        self._expiry: Deadlines[str] = Deadlines()

    def __setitem__(self, topic: str, message: Message) -> None:
        super().__setitem__(topic, message)
        self.index_new_topics()
        if message.expires_at is None:
            self._expiry.cancel(topic)
        else:
            self._expiry.schedule(topic, message.expires_at)

    def __delitem__(self, topic: str) -> None:
        super().__delitem__(topic)
        self._expiry.cancel(topic)

    def clear(self) -> None:
        """Empty the map and its expiry heap together."""
        super().clear()
        self._expiry = Deadlines()

    def drop_expired(self, now: float) -> list[str]:
        """Remove the messages whose expiry has passed; returns their topics."""
        expired = self._expiry.due(now)
        for topic in expired:
            super().__delitem__(topic)  # their deadlines are spent already
        return expired


class RouteCache(GenerationalCache[Route]):
    """Cached routes by topic, in generations that can be searched by topic filter: the
    routes a subscription change can alter are forgotten in both."""

    young: TopicMap[Route]
    old: TopicMap[Route]

    def new_generation(self) -> TopicMap[Route]:
        return TopicMap()

    def discard_matching(self, topic_filter: str) -> None:
        """Forget the routes of the topics a (non-shared) filter matches."""
        self.young.discard_matching(topic_filter)
        self.old.discard_matching(topic_filter)


class Router:
    """Subscriptions of all sessions in one trie (client id -> options per filter), the
    round-robin position of each shared group, and retained messages by topic."""

    def __init__(self) -> None:
        self._trie: TopicTrie[str, SubscriptionOptions] = TopicTrie()
        # Routes that depend on nothing but the topic (no shared group, no no-local),
        # until a subscription matching the topic changes.
        self._routes = RouteCache(ROUTE_CACHE_SIZE // 2)
        self._next_member: dict[str, int] = {}  # shared filter -> round-robin counter
        self.retained = RetainedMessages()

    def subscribe(self, client_id: str, topic_filter: str, options: SubscriptionOptions) -> bool:
        """Add or replace a subscription; True if it did not exist [MQTT-3.8.4-3]."""
        self._forget_routes(topic_filter)
        return self._trie.add(topic_filter, client_id, options)

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        """Remove a subscription; True if it existed."""
        existed = self._trie.remove(topic_filter, client_id) is not None
        if existed:
            self._forget_routes(topic_filter)
            if self._trie.get(topic_filter) is None:
                self._next_member.pop(topic_filter, None)  # its round robin ends with it
        return existed

    def _forget_routes(self, topic_filter: str) -> None:
        """Drop the cached routes of the topics ``topic_filter`` matches: the only ones a
        change to it can alter (a shared filter counts as its inner filter)."""
        self._routes.discard_matching(parse_shared(topic_filter)[1])

    def subscription_count(self) -> int:
        return len(self._trie)

    def subscribers(self, topic_filter: str) -> int:
        """How many sessions subscribe to exactly ``topic_filter``."""
        entries = self._trie.get(topic_filter)
        return 0 if entries is None else len(entries)

    def filters(self) -> Iterator[str]:
        """Every filter with at least one subscriber."""
        return self._trie.filters()

    def route(
        self,
        message: Message,
        online: Callable[[str], bool],
        serve_shared: Container[str] | None = None,
        eligible: Callable[[str], bool] | None = None,
    ) -> Route:
        """The sessions that receive ``message``: (client id, what it gets).

        Ordinary subscriptions of one session merge into one copy. Each shared subscription
        gives the message to one member of its group, round robin, preferring connected
        members, as a copy of its own [MQTT 4.8.2]; in a cluster only the groups in
        ``serve_shared`` are served here (the others by another node). No-local
        subscriptions skip the publisher's own session [MQTT-3.8.3-3]. With ``eligible``
        (an ACL), a shared group's message goes only to a member it accepts (the caller
        checks the other sessions: their route depends on the topic only).
        """
        topic = message.topic
        routes = self._routes
        cached = routes.young.get(topic)
        if cached is None:
            cached = routes.revive(topic)
        if cached is not None:
            return cached
        targets: dict[str, Target] = {}
        shared: list[tuple[str, Target]] = []
        origin = message.origin
        static = True
        for topic_filter, entries in self._trie.match(topic):
            if topic_filter.startswith(SHARE_PREFIX):
                static = False
                if serve_shared is not None and topic_filter not in serve_shared:
                    continue
                chosen = self._pick_member(topic_filter, entries, online, eligible)
                if chosen is not None:
                    shared.append((chosen[0], Target(chosen[1])))
                continue
            for client_id, options in entries.items():
                if options.no_local:
                    static = False
                    if client_id == origin:
                        continue
                target = targets.get(client_id)
                if target is None:
                    targets[client_id] = Target(options)
                else:
                    target.merge(options)
        route = [*targets.items(), *shared]
        if static:
            routes.put(topic, route)
        return route

    def route_groups(
        self,
        groups: Iterable[str],
        online: Callable[[str], bool],
        eligible: Callable[[str], bool] | None = None,
    ) -> Route:
        """One member here of each shared group in ``groups`` (``$share/...`` filters), in
        turn as :meth:`route` picks them, for a message meant for those groups only (not
        for the plain subscriptions its topic matches)."""
        route: Route = []
        for topic_filter in groups:
            entries = self._trie.get(topic_filter)
            if entries:
                chosen = self._pick_member(topic_filter, entries, online, eligible)
                if chosen is not None:
                    route.append((chosen[0], Target(chosen[1])))
        return route

    def _pick_member(
        self,
        topic_filter: str,
        entries: dict[str, SubscriptionOptions],
        online: Callable[[str], bool],
        eligible: Callable[[str], bool] | None = None,
    ) -> tuple[str, SubscriptionOptions] | None:
        members = list(entries.items())
        start = self._next_member.get(topic_filter, 0)
        count = len(members)
        offline: tuple[int, tuple[str, SubscriptionOptions]] | None = None
        for step in range(count):
            member = members[(start + step) % count]
            if eligible is not None and not eligible(member[0]):
                continue
            if online(member[0]):
                self._next_member[topic_filter] = (start + step + 1) % count
                return member
            if offline is None:
                offline = step, member
        if offline is None:
            return None  # no members, or none eligible
        self._next_member[topic_filter] = (start + offline[0] + 1) % count
        return offline[1]

    def pick_subscriber(
        self, topic_filter: str, online: Callable[[str], bool]
    ) -> tuple[str, SubscriptionOptions] | None:
        """One connected session subscribed to exactly ``topic_filter`` (wildcard
        subscriptions that merely match it do not count), taking turns among them; None if
        there is none."""
        entries = self._trie.get(topic_filter) or {}
        candidates = sorted(client_id for client_id in entries if online(client_id))
        if not candidates:
            return None
        turn = self._next_member.get(topic_filter, 0)
        self._next_member[topic_filter] = turn + 1
        client_id = candidates[turn % len(candidates)]
        return client_id, entries[client_id]

    def retain(self, message: Message) -> None:
        """Store, replace or (empty payload) clear the retained message of a topic
        [MQTT-3.3.1-5, -6, -7]."""
        if message.payload:
            self.retained[message.topic] = message
        else:
            self.retained.pop(message.topic, None)

    def retained_for(self, topic_filter: str, now: float) -> list[Message]:
        """Unexpired retained messages matching a filter (a shared one as its inner
        filter), oldest topic first; found through the topic trie, not by a scan."""
        messages = self.retained.values_matching(parse_shared(topic_filter)[1])
        return [message for message in messages if not message.expired(now)]

    def drop_expired_retained(self, now: float) -> list[str]:
        """Forget retained messages whose expiry has passed; returns their topics."""
        return self.retained.drop_expired(now)
