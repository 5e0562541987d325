"""Real cluster nodes that serve HTTP on ephemeral ports (``clusterproc.Cluster`` with an
HTTP listener each), what they say about themselves, and asking them over HTTP."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from redis import Redis

from brokerproc import BrokerProcess
from clusterproc import Cluster
from paho_helpers import TIMEOUT, wait_until
from roost.cluster import keys

HTTP_LISTENING = re.compile(r"http listening on [\d.]+:(\d+)")
ACCESS_FLAGS = ("--store", "memory", "--http-port", "0")


def http_port(node: BrokerProcess) -> int:
    """The HTTP port the node logged (before it logged its MQTT port)."""
    match = HTTP_LISTENING.search("".join(node.log))
    assert match, "no 'http listening on' line in the log"
    return int(match.group(1))


def assign_url(node: BrokerProcess, client_id: str = "") -> str:
    return f"http://127.0.0.1:{http_port(node)}/api/v1/assign?client_id={client_id}"


def get_json(url: str) -> tuple[int, Any]:
    """Status and decoded body of a GET (error statuses too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


class AccessCluster(Cluster):
    """Nodes with an HTTP listener each; their loads as the heartbeats in Redis say."""

    def start(self, count: int, *extra: str) -> list[BrokerProcess]:
        return super().start(count, *ACCESS_FLAGS, *extra)

    def heartbeat_connections(self) -> dict[str, int]:
        with Redis.from_url(self.redis_server.url) as redis:
            return {
                node_id: int(redis.hget(keys.node(node_id), "connections") or 0)
                for node_id in self.node_ids()
            }

    def wait_connections(
        self, total: int, among: list[str] | None = None, timeout: float = TIMEOUT
    ) -> dict[str, int]:
        """The nodes' connection counts once the heartbeats of the nodes ``among`` (default:
        all) add up to ``total``."""
        counts: dict[str, int] = {}

        def settled() -> bool:
            counts.update(self.heartbeat_connections())
            return sum(counts[node] for node in among or counts) == total

        wait_until(settled, timeout, what=f"heartbeats to count {total} connections")
        return counts
