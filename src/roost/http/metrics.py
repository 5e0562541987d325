"""``GET /metrics``: the node's figures in the Prometheus text format.

A custom collector turns one :func:`~roost.figures.read_figures` reading into metric
families at scrape time; nothing is recorded through the client library while messages
flow. Each app has its own registry, so several nodes in one process (tests) do not mix.
The endpoint is public on the HTTP listener, like ``/api/v1/assign``: it holds counts,
no client ids or payloads.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from roost.errors import ReasonCode
from roost.figures import Figures
from roost.http.node import NodeView

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

routes = web.RouteTableDef()


class NodeCollector(Collector):
    """Reads the node's plain counters when Prometheus scrapes."""

    def __init__(self, node: NodeView) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        figures = self.node.figures()
        yield from _connections(figures)
        yield from _messages(figures)
        yield from _backlog(figures)
        yield from _transactions(figures)
        if figures.cluster is not None:
            cluster = figures.cluster
            yield _gauge(
                "roost_cluster_nodes", "Live cluster nodes, this one included.", cluster.nodes_alive
            )
            yield _counter(
                "roost_cluster_forwarded_messages",
                "Messages sent to other nodes' inboxes.",
                cluster.forwarded_messages,
            )
            yield _counter(
                "roost_cluster_forward_entries",
                "Inbox stream entries that carried them.",
                cluster.forward_entries,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _connections(figures: Figures) -> Iterator[Metric]:
    yield _gauge("roost_uptime_seconds", "Seconds since the node started.", figures.uptime)
    yield _gauge("roost_clients_connected", "Clients connected now.", figures.clients_connected)
    yield _gauge("roost_sessions", "Sessions held, connected or not.", figures.sessions)
    yield _gauge("roost_connections_open", "Open MQTT sockets.", figures.connections_open)
    yield _counter("roost_connections", "CONNECTs accepted.", figures.connections_total)
    refused = CounterMetricFamily(
        "roost_connections_refused", "CONNECTs refused, by reason.", labels=["reason"]
    )
    for code, count in sorted(figures.refused.items()):
        refused.add_metric([_reason_name(code)], count)
    yield refused


def _reason_name(code: int) -> str:
    try:
        return ReasonCode(code).name.lower()
    except ValueError:
        return f"0x{code:02x}"


def _messages(figures: Figures) -> Iterator[Metric]:
    for direction, counts, sizes in (
        ("received", figures.messages_in, figures.payload_bytes_in),
        ("sent", figures.messages_out, figures.payload_bytes_out),
    ):
        messages = CounterMetricFamily(
            f"roost_messages_{direction}", f"PUBLISHes {direction}, by QoS.", labels=["qos"]
        )
        payload = CounterMetricFamily(
            f"roost_payload_bytes_{direction}",
            f"Payload bytes of the PUBLISHes {direction}, by QoS.",
            labels=["qos"],
        )
        for qos in range(3):
            messages.add_metric([str(qos)], counts[qos])
            payload.add_metric([str(qos)], sizes[qos])
        yield messages
        yield payload
    yield _counter("roost_bytes_received", "Bytes read from MQTT sockets.", figures.bytes_in)
    yield _counter("roost_bytes_sent", "Bytes written to MQTT sockets.", figures.bytes_out)
    dropped = CounterMetricFamily(
        "roost_deliveries_dropped", "Deliveries dropped, by reason.", labels=["reason"]
    )
    for reason, count in figures.dropped.items():
        dropped.add_metric([reason], count)
    yield dropped
    limited = CounterMetricFamily(
        "roost_rate_limited",
        "Clients over their message or byte rate: reading paused, or disconnected.",
        labels=["action"],
    )
    for action, count in figures.rate_limited.items():
        limited.add_metric([action], count)
    yield limited


def _backlog(figures: Figures) -> Iterator[Metric]:
    yield _gauge("roost_queued_messages", "Deliveries waiting in session queues.", figures.queued)
    yield _gauge(
        "roost_inflight_messages", "Deliveries sent, not yet acknowledged.", figures.inflight
    )
    yield _gauge("roost_retained_messages", "Retained messages held.", figures.retained)
    yield _gauge("roost_subscriptions", "Subscriptions held.", figures.subscriptions)
    yield _gauge(
        "roost_store_pending_writes", "Store operations not yet durable.", figures.pending_writes
    )
    latency = figures.commit_latency
    if latency is not None:
        yield HistogramMetricFamily(
            "roost_store_commit_seconds",
            "Time from a store batch's start to its durability.",
            buckets=[(_bound(bound), count) for bound, count in latency.cumulative()],
            sum_value=latency.total,
        )


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _transactions(figures: Figures) -> Iterator[Metric]:
    counters = figures.transactions
    yield _gauge(
        "roost_transactions_pending",
        "Half messages awaiting a decision.",
        figures.transactions_pending,
    )
    for name, value, documentation in (
        ("commits", counters.commits, "Transactions committed."),
        ("rollbacks", counters.rollbacks, "Transactions rolled back."),
        ("checks", counters.checks, "Check-backs made."),
        ("checks_sent", counters.checks_sent, "Check-backs a group member received."),
        ("checks_exhausted", counters.checks_exhausted, "Transactions out of check-backs."),
    ):
        yield _counter(f"roost_transaction_{name}", documentation, value)


def install(app: web.Application, node: NodeView) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    app[REGISTRY] = registry
    app.add_routes(routes)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text exposition of this node's figures."""
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
