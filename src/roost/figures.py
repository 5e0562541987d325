"""One reading of a node's figures, shared by ``/metrics``, ``/api/v1/stats`` and the
``$SYS/broker/...`` topics, so that the three always agree on what a figure means.

Taken when asked (a scrape, a tick of the ``$SYS`` publisher), never on the hot path:
the counters are the plain integers of :mod:`roost.stats`; totals over sessions (queued,
inflight) are summed here, once per reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from roost.stats import LatencyHistogram
from roost.store.batching import BatchingStore
from roost.transactions import TransactionCounters

if TYPE_CHECKING:
    from roost.cluster.node import ClusterNode
    from roost.core import BrokerCore


@dataclass(frozen=True)
class ClusterFigures:
    nodes_alive: int  # this node included
    forwarded_messages: int  # records sent to other nodes' inboxes
    forward_entries: int  # stream entries that carried them


@dataclass(frozen=True)
class Figures:
    uptime: float  # seconds, by the broker clock
    clients_connected: int
    sessions: int  # connected and disconnected (persistent, offline) ones
    connections_open: int  # sockets, attached or not
    connections_total: int
    connections_max: int
    refused: dict[int, int]  # CONNACK reason code -> CONNECTs refused with it
    messages_in: tuple[int, int, int]  # by QoS
    messages_out: tuple[int, int, int]
    payload_bytes_in: tuple[int, int, int]
    payload_bytes_out: tuple[int, int, int]
    bytes_in: int
    bytes_out: int
    dropped: dict[str, int]  # reason -> deliveries dropped
    rate_limited: dict[str, int]  # action -> times taken on a client over its rate
    queued: int  # deliveries waiting in session queues
    inflight: int  # deliveries sent, not yet acknowledged
    retained: int
    subscriptions: int
    pending_writes: int  # store operations not yet durable
    transactions_pending: int
    transactions: TransactionCounters
    commit_latency: LatencyHistogram | None = field(default=None, compare=False)
    cluster: ClusterFigures | None = None

    @property
    def clients_disconnected(self) -> int:
        return self.sessions - self.clients_connected


def read_figures(core: BrokerCore, cluster: ClusterNode | None = None) -> Figures:
    traffic = core.traffic
    sessions = core.sessions.values()
    store = core.store
    batching = store if isinstance(store, BatchingStore) else None
    cluster_figures = None
    if cluster is not None:
        cluster_figures = ClusterFigures(
            len(cluster.peers.alive) + 1, cluster.forwarded_messages, cluster.sender.entries
        )
    return Figures(
        uptime=core.clock() - traffic.started,
        clients_connected=len(core.connections),
        sessions=len(core.sessions),
        connections_open=len(core.open_connections),
        connections_total=traffic.connections_total,
        connections_max=traffic.connections_max,
        refused=dict(traffic.refused),
        messages_in=_by_qos(traffic.messages_in),
        messages_out=_by_qos(traffic.messages_out),
        payload_bytes_in=_by_qos(traffic.payload_bytes_in),
        payload_bytes_out=_by_qos(traffic.payload_bytes_out),
        bytes_in=traffic.bytes_in,
        bytes_out=traffic.bytes_out,
        dropped={
            "queue_full": core.dropped_messages,
            "expired": traffic.dropped_expired,
            "too_large": traffic.dropped_too_large,
        },
        rate_limited={"paused": traffic.throttled, "disconnected": traffic.rate_disconnects},
        queued=sum(len(session.queue) for session in sessions),
        inflight=sum(len(session.inflight) for session in sessions),
        retained=len(core.router.retained),
        subscriptions=core.router.subscription_count(),
        pending_writes=0 if batching is None else batching.pending_writes,
        transactions_pending=len(core.transactions.pending),
        transactions=TransactionCounters(**vars(core.transactions.counters)),
        commit_latency=None if batching is None else batching.commit_latency,
        cluster=cluster_figures,
    )


def _by_qos(counts: list[int]) -> tuple[int, int, int]:
    return counts[0], counts[1], counts[2]
