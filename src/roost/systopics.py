"""``$SYS/broker/...`` topics as Mosquitto publishes them, so that dashboards and scripts
written for Mosquitto work unchanged, plus ``$SYS/broker/transactions/...``.

Every ``sys_interval`` seconds of broker time (run by the core's periodic tick, so a test
moves it with its own clock) the figures are read and each topic whose value changed is
published, retained, at QoS 0. The messages are this node's own: they are retained in
memory and delivered to its subscribers, not stored and not sent to other cluster nodes
(a client sees the figures of the node it is connected to).

Load figures are Mosquitto's: exponentially damped per-minute rates over 1, 5 and 15
minutes, moved on at every interval by the rate seen during it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from roost import __version__
from roost.core import BrokerCore
from roost.figures import Figures, read_figures
from roost.message import Message

PREFIX = "$SYS/broker/"
LOAD_WINDOWS = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))

# name under load/ -> the running total whose rate it follows
LOADS: dict[str, Callable[[Figures], int]] = {
    "messages/received": lambda figures: sum(figures.messages_in),
    "messages/sent": lambda figures: sum(figures.messages_out),
    "bytes/received": lambda figures: figures.bytes_in,
    "bytes/sent": lambda figures: figures.bytes_out,
    "connections": lambda figures: figures.connections_total,
}


def plain_values(figures: Figures) -> dict[str, str]:
    """Every topic (below ``$SYS/broker/``) but the loads, with its payload."""
    counters = figures.transactions
    values = {
        "version": f"roost version {__version__}",
        "uptime": f"{int(figures.uptime)} seconds",
        "clients/connected": figures.clients_connected,
        "clients/disconnected": figures.clients_disconnected,
        "clients/total": figures.sessions,
        "clients/maximum": figures.connections_max,
        "messages/received": sum(figures.messages_in),
        "messages/sent": sum(figures.messages_out),
        "bytes/received": figures.bytes_in,
        "bytes/sent": figures.bytes_out,
        "retained messages/count": figures.retained,
        "subscriptions/count": figures.subscriptions,
        "transactions/pending": figures.transactions_pending,
        "transactions/commits": counters.commits,
        "transactions/rollbacks": counters.rollbacks,
        "transactions/checks": counters.checks,
        "transactions/checks_sent": counters.checks_sent,
        "transactions/checks_exhausted": counters.checks_exhausted,
    }
    return {topic: str(value) for topic, value in values.items()}


class SysTopics:
    """Publishes the ``$SYS/broker`` tree of one node; :meth:`tick` is a core tick hook."""

    def __init__(self, core: BrokerCore, interval: float) -> None:
        self.core = core
        self.interval = interval
        self._next_due = core.clock()  # the first tick publishes everything
        self._published: dict[str, str] = {}  # topic -> payload last published
        self._last: tuple[float, dict[str, int]] | None = None  # (time, totals) for loads
        self._loads = {f"{name}/{window}": 0.0 for name in LOADS for window, _ in LOAD_WINDOWS}

    def tick(self, now: float) -> None:
        if now < self._next_due:
            return
        self._next_due = now + self.interval
        figures = read_figures(self.core)
        values = plain_values(figures)
        self._update_loads(figures, now)
        values.update({f"load/{name}": f"{load:.2f}" for name, load in self._loads.items()})
        for topic, payload in values.items():
            if self._published.get(topic) != payload:
                self._published[topic] = payload
                self._publish(PREFIX + topic, payload, now)

    def _update_loads(self, figures: Figures, now: float) -> None:
        totals = {name: total(figures) for name, total in LOADS.items()}
        last, self._last = self._last, (now, totals)
        if last is None or now <= last[0]:
            return
        elapsed = now - last[0]
        for name, value in totals.items():
            per_minute = (value - last[1][name]) * 60.0 / elapsed
            for window, seconds in LOAD_WINDOWS:
                key = f"{name}/{window}"
                damping = math.exp(-elapsed / seconds)
                self._loads[key] = per_minute + damping * (self._loads[key] - per_minute)

    def _publish(self, topic: str, payload: str, now: float) -> None:
        """Retain and deliver on this node only: the path of a message relayed from
        another node (nothing stored, nothing forwarded)."""
        message = Message(topic, payload.encode(), 0, True, now=now)
        self.core.publish_relayed(message, None)
