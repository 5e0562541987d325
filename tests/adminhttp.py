"""Plain HTTP calls to a node's listener with aiohttp's client, from a synchronous test:
the admin API (``AdminApi``, bearer token added), ``/metrics`` and the dashboard's files."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from brokerthread import RunningBroker

TOKEN = "s3cret-admin-token"  # the admin_token of the ops tests' brokers


def http_base(running: RunningBroker) -> str:
    http = running.broker.http
    assert http is not None, "the broker has no HTTP listener (http_port=0 is needed)"
    return f"http://127.0.0.1:{http.port}"


def request(
    method: str, url: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body)."""

    async def send() -> tuple[int, dict[str, str], bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, headers=headers, json=body) as response,
        ):
            return response.status, dict(response.headers), await response.read()

    return asyncio.run(send())


class AdminApi:
    """The admin API of one running broker: ``get``/``post``/``delete`` return (status,
    JSON body)."""

    def __init__(self, running: RunningBroker, token: str = TOKEN) -> None:
        self.base = http_base(running)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = request(method, self.base + path, self.headers, body)
        return status, json.loads(data) if data else None

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return self.call("POST", path, body)

    def delete(self, path: str) -> tuple[int, Any]:
        return self.call("DELETE", path)


def scrape(running: RunningBroker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    status, headers, body = request("GET", http_base(running) + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]
