"""Who may use the admin API: the bearer token, and nothing without it."""

from __future__ import annotations

import pytest

from adminhttp import TOKEN, AdminApi, http_base, request
from brokerthread import BrokerFactory, RunningBroker

ADMIN_PATHS = ["/api/v1/node", "/api/v1/clients", "/api/v1/openapi.json", "/api/v1/no-such"]


@pytest.mark.parametrize("path", ADMIN_PATHS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
def test_without_the_token_only_401(
    node: RunningBroker, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, response_headers, body = request("GET", http_base(node) + path, headers)
    assert status == 401
    assert body == b'{"error": "unauthorized"}'
    assert response_headers["WWW-Authenticate"].startswith("Bearer")


def test_with_the_token_the_api_answers(api: AdminApi) -> None:
    assert api.get("/api/v1/health") == (200, {"status": "ok"})
    assert api.get("/api/v1/ready") == (200, {"ready": True, "reasons": []})


def test_without_an_admin_token_there_is_no_admin_api_nor_dashboard(
    make_broker: BrokerFactory,
) -> None:
    """The routes are absent (404), whatever the request carries; assignment and metrics
    are still served."""
    running = make_broker(http_port=0)
    base = http_base(running)
    for path in ("/api/v1/node", "/api/v1/health", "/"):
        status, _, _ = request("GET", base + path, {"Authorization": "Bearer "})
        assert status == 404, path
    assert request("GET", base + "/api/v1/assign?client_id=a")[0] == 200
    assert request("GET", base + "/metrics")[0] == 200


def test_assign_stays_public_with_the_admin_api_on(node: RunningBroker) -> None:
    status, _, _ = request("GET", http_base(node) + "/api/v1/assign?client_id=a")
    assert status == 200


def test_node_info_hides_secrets(make_broker: BrokerFactory) -> None:
    running = make_broker(http_port=0, admin_token=TOKEN)
    status, info = AdminApi(running).get("/api/v1/node")
    assert status == 200
    assert info["settings"]["admin_token"] == "********"
    assert TOKEN not in str(info)
    assert info["listeners"]["mqtt"] == f"127.0.0.1:{running.port}"
    assert info["listeners"]["http"] == f"127.0.0.1:{running.broker.http.port}"  # type: ignore[union-attr]
    assert info["version"] and info["uptime"] >= 0 and info["cluster"] is False
