"""Flow control between nodes (docs/cluster.md, "Flow control").

On one node a publisher is read only as fast as its messages are delivered. Across nodes
the publisher's node acknowledges once the message is in the receiving node's inbox, so
two brakes stand in for that:

- :class:`InboxPacing`, on the receiving node: the inbox stream is a durable queue, so
  the node hands a relayed message to its sessions only while the connected ones it goes
  to have room (their queues below a high-water mark, or again below a low-water mark
  after reaching it); the rest waits in Redis. One session may hold the inbox back for
  ``inbox_hold_ms`` in all while the reader is behind; after that it counts as slow and
  gets what comes, as on one node (its queue fills and the queue-full policy applies).
- :class:`InboxGate`, on the sending node: while a destination's inbox holds more than
  ``inbox_max_entries`` entries (its readers are behind), the acknowledgements of
  messages sent to it wait (so the publishers' windows close) and QoS 0 messages to it
  are dropped, until it is back to half of that. This bounds what an inbox holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from roost.cluster import keys
from roost.core import BrokerCore
from roost.message import Message

log = logging.getLogger("roost.cluster")

PAUSE_POLL = 0.001  # seconds between looks at the queues an inbox reader waits for
RELAY_BUDGET = 256  # records handed to the core before other work gets a loop turn
LENGTH_INTERVAL = 0.01  # seconds between measurements of one destination's inbox


class InboxPacing:
    """Hands relayed messages to the core only while their sessions have room."""

    def __init__(self, core: BrokerCore, hold_limit: float) -> None:
        """``hold_limit``: seconds one session may hold the inbox back while the reader
        is behind (0: no pacing, every message is delivered at once)."""
        self.core = core
        self.hold_limit = hold_limit
        limit = core.settings.max_queued_messages
        self.high = max(1, limit // 2)  # deliveries waiting in a queue: stop here
        self.low = limit // 4  # ... and go on once the queue is down to this
        self.held: dict[str, float] = {}  # client id -> seconds it held the reader back
        self.slow: set[str] = set()  # sessions that no longer hold it back
        self._budget = RELAY_BUDGET
        self._look = True  # the next QoS 0 message is looked at (see has_room)

    def has_room(self, message: Message) -> bool:
        """True if ``message`` may be delivered now (the fast path: no waiting).

        A QoS 1/2 message is looked at each time. A QoS 0 one only at the first record
        after each loop turn the reader gives (every RELAY_BUDGET records): a route
        lookup per message would cost the relay more than the rest of its work, and a
        queue below the high-water mark there takes the RELAY_BUDGET records up to the
        next look without dropping any (with the default limits: 500 + 256 < 1,000).
        So a burst from another node, which comes in entries of thousands, is handed
        over no faster than the subscriber's queue empties, as a burst on one node is
        read no faster than it is delivered."""
        if not self.hold_limit:
            return True
        if not message.qos:
            if not self._look:
                return True
            self._look = False
        return self.core.fullest_queue(message, self.slow)[0] < self.high

    async def room(self, message: Message) -> None:
        """Wait until the queues ``message`` goes to are down to the low-water mark, each
        session within what is left of its hold budget."""
        core = self.core
        clock = core.clock
        while True:
            waiting, whose = core.fullest_queue(message, self.slow)
            if waiting <= self.low:
                return
            started = clock()
            await asyncio.sleep(PAUSE_POLL)
            held = self.held[whose] = self.held.get(whose, 0.0) + clock() - started
            if held >= self.hold_limit:
                self.slow.add(whose)
                log.warning(
                    "client %s does not keep up with the messages from other nodes (its"
                    " queue held them back for %.1f s): they no longer wait for it",
                    whose,
                    held,
                )

    def turn(self) -> bool:
        """Count one record handed over; True every RELAY_BUDGET: the reader gives the
        loop a turn then (the subscribers' acknowledgements are read meanwhile). Not a
        coroutine: one is called per relayed message."""
        self._budget -= 1
        if self._budget:
            return False
        self._budget = RELAY_BUDGET
        self._look = True
        return True

    def read(self, caught_up: bool) -> None:
        """The reader took its next entries; ``caught_up``: they were all there was, so
        the waits so far were a burst, not a subscriber slower than its publishers. A
        slow session counts again once its queue is down to the low-water mark."""
        if caught_up:
            self.held.clear()
        if self.slow:
            sessions = self.core.sessions
            self.slow = {
                client_id
                for client_id in self.slow
                if self.core.is_online(client_id) and len(sessions[client_id].queue) > self.low
            }


class InboxGate:
    """Holds back acknowledgements of messages for nodes whose inbox is too long.

    Acknowledgements are released in the order they were asked for (a client gets its
    PUBACKs in the order of its PUBLISHes [MQTT-4.6.0-2]): once one waits, the later ones
    wait behind it, whatever their destination.
    """

    def __init__(
        self,
        max_entries: int,
        measure: Callable[[str, Callable[[Any], None]], None],
        alive: Callable[[str], bool],
        clock: Callable[[], float],
    ) -> None:
        """``measure(node, on_length)`` has the length of ``node``'s inbox read (in the
        next pipeline) and given to ``on_length``; ``alive(node)`` tells if a node is
        still there (a dead one's inbox is adopted: nothing waits for it)."""
        self.high = max_entries
        self.low = max_entries // 2
        self._measure = measure
        self._alive = alive
        self._clock = clock
        self.full: set[str] = set()  # destinations over the limit
        self._next_measure: dict[str, float] = {}  # node -> when to measure it next
        self._measuring: set[str] = set()  # nodes with a measurement in the pipeline
        self._held: deque[tuple[Collection[str], Callable[[], None]]] = deque()
        self._polling = False
        self.dropped_qos0 = 0  # QoS 0 messages not sent to a full inbox

    def sending(self, nodes: Collection[str]) -> None:
        """A pipeline goes out with entries for ``nodes``: measure those not measured for
        a while (and every full one)."""
        now = self._clock()
        due = self._next_measure
        for node in nodes:
            if now >= due.get(node, 0.0):
                self._start_measuring(node, now)

    def _start_measuring(self, node: str, now: float) -> None:
        if node in self._measuring:
            return
        self._measuring.add(node)
        self._next_measure[node] = now + LENGTH_INTERVAL
        self._measure(node, partial(self._measured, node))

    def _measured(self, node: str, length: Any) -> None:
        self._measuring.discard(node)
        if int(length) > self.high and self._alive(node):
            if node not in self.full:
                self.full.add(node)
                log.warning(
                    "the inbox of node %s holds %s entries: acknowledgements of messages"
                    " for it wait, QoS 0 messages for it are dropped, until it is down to %d",
                    node,
                    length,
                    self.low,
                )
                self._poll()
        elif node in self.full and (int(length) <= self.low or not self._alive(node)):
            self.full.discard(node)
            log.info("the inbox of node %s is down to %s entries", node, length)
            self._release()

    def _poll(self) -> None:
        """Measure the full inboxes again and again while there are any (no messages may
        go to them meanwhile, so nothing else would)."""
        if self._polling:
            return
        self._polling = True
        asyncio.get_running_loop().call_later(LENGTH_INTERVAL, self._poll_round)

    def _poll_round(self) -> None:
        self._polling = False
        if not self.full:
            return
        now = self._clock()
        for node in list(self.full):
            if not self._alive(node):
                self.full.discard(node)
            else:
                self._start_measuring(node, now)
        self._release()
        if self.full:
            self._poll()

    @property
    def holding(self) -> bool:
        """Acknowledgements are waiting."""
        return bool(self._held)

    def reset(self) -> None:
        """The pipeline failed (measurements in it are lost): start again from nothing;
        what waited was in Redis already, so it is released."""
        self._measuring.clear()
        self.full.clear()
        self._release()

    def after_sent(self, nodes: Collection[str], callback: Callable[[], None]) -> None:
        """Run ``callback`` (an acknowledgement) now, or once none of ``nodes`` is full
        and every acknowledgement asked for before it has run."""
        if self._held or (self.full and not self.full.isdisjoint(nodes)):
            self._held.append((nodes, callback))
            self._poll()
        else:
            callback()

    def _release(self) -> None:
        held = self._held
        full = self.full
        while held and full.isdisjoint(held[0][0]):
            held.popleft()[1]()


def measure_inbox(node: str, client: Any) -> None:
    """Add the length of ``node``'s inbox to a pipeline."""
    client.xlen(keys.inbox(node))
