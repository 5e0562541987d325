"""Plain counters of what a node does, bumped where it happens and read when someone asks.

The hot path only adds to integers here (an attribute or a list slot ``+= 1``): no
metrics library is called per message. ``/metrics``, ``/api/v1/stats`` and the
``$SYS/broker/...`` topics read these at their own pace (see :mod:`roost.figures`).
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds) of the store commit latency buckets: from a batch that needed no
# fsync to a disk or Redis that stalls.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class TrafficCounters:
    """Connections and messages of one node, since it started.

    ``messages_in``/``messages_out`` and ``payload_bytes_in``/``payload_bytes_out`` are
    indexed by QoS (0, 1, 2): PUBLISHes received from clients and sent to them.
    ``bytes_in``/``bytes_out`` count every byte on the MQTT connections.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections_max",
        "connections_total",
        "dropped_expired",
        "dropped_too_large",
        "messages_in",
        "messages_out",
        "payload_bytes_in",
        "payload_bytes_out",
        "rate_disconnects",
        "refused",
        "sockets",
        "sockets_refused",
        "started",
        "throttled",
    )

    def __init__(self, started: float) -> None:
        self.started = started  # broker clock when the node started
        self.connections_total = 0  # CONNECTs accepted
        self.connections_max = 0  # most clients connected at once
        self.refused: dict[int, int] = {}  # CONNACK reason code -> CONNECTs refused with it
        self.messages_in = [0, 0, 0]
        self.messages_out = [0, 0, 0]
        self.payload_bytes_in = [0, 0, 0]
        self.payload_bytes_out = [0, 0, 0]
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped_expired = 0  # deliveries whose message expired before it was sent
        self.dropped_too_large = 0  # ... larger than the client's Maximum Packet Size
        self.throttled = 0  # times a client's reading paused for its message or byte rate
        self.rate_disconnects = 0  # clients disconnected for staying over their rate
        self.sockets = 0  # accepted sockets open now, MQTT or still in a handshake
        self.sockets_refused = 0  # sockets closed at accept: too many open already

    def connected(self, clients: int) -> None:
        """A CONNECT was accepted; ``clients`` are connected now."""
        self.connections_total += 1
        if clients > self.connections_max:
            self.connections_max = clients

    def refused_with(self, reason: int) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class LatencyHistogram:
    """Durations in fixed buckets, kept as plain counts (cumulated when read)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = COMMIT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf."""
        running = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets
