"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 description of the admin API.

Written out here rather than derived from the handlers, so that it can say what each
answer holds; a test checks that it names exactly the admin routes the app registers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from roost import __version__
from roost.http.admin.render import Json

routes = web.RouteTableDef()


PAGE_PARAMETERS = [
    {
        "name": "q",
        "in": "query",
        "schema": {"type": "string"},
        "description": "substring of the key",
    },
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
]
SCOPE = {
    "name": "scope",
    "in": "query",
    "schema": {"type": "string", "enum": ["cluster", "node"], "default": "cluster"},
    "description": "node: this node only; else, in a cluster, every live node",
}
CLUSTER_PAGE_PARAMETERS = [*PAGE_PARAMETERS, SCOPE]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(**properties: str) -> Json:
    """A schema of an object whose properties have these JSON types."""
    return {
        "type": "object",
        "properties": {key: {"type": kind} for key, kind in properties.items()},
    }


def _page_of(name: str) -> Json:
    return {
        "allOf": [_ref("Page"), {"properties": {"items": {"type": "array", "items": _ref(name)}}}]
    }


def _operation(summary: str, answer: Json, *extra: Json, status: str = "200", **more: Any) -> Json:
    responses: Json = {
        status: {"description": "success", "content": {"application/json": {"schema": answer}}},
        "401": {
            "description": "no or wrong bearer token",
            "content": {"application/json": {"schema": _ref("Error")}},
        },
    }
    for error in more.pop("errors", ()):
        responses[error] = {
            "description": ERRORS[error],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    operation: Json = {"summary": summary, "responses": responses, **more}
    if extra:
        operation["parameters"] = list(extra)
    return operation


ERRORS = {
    "400": "a bad parameter",
    "404": "not found (in a cluster: on any node)",
    "409": "not in a state that allows it",
    "503": "not ready",
}

SCHEMAS: Json = {
    "Error": _object(error="string"),
    "Page": _object(
        total="integer", offset="integer", limit="integer", items="array", unreachable="array"
    ),
    "Session": _object(
        client_id="string",
        connected="boolean",
        expiry_interval="integer",
        expires_in="number",
        subscriptions="integer",
        queued="integer",
        inflight="integer",
        will_pending="boolean",
        node="string",
    ),
    "Client": {
        "allOf": [
            _ref("Session"),
            _object(peer="string", protocol="string", keep_alive="integer", connected_for="number"),
        ]
    },
    "Subscription": _object(
        client_id="string",
        topic_filter="string",
        qos="integer",
        no_local="boolean",
        retain_as_published="boolean",
        retain_handling="integer",
        identifier="integer",
        node="string",
    ),
    "Payload": _object(payload="string", encoding="string", payload_size="integer"),
    "RetainedMessage": {
        "allOf": [
            _ref("Payload"),
            _object(topic="string", qos="integer", retain="boolean", expires_in="number"),
        ]
    },
    "Transaction": {
        "allOf": [
            _ref("Payload"),
            _object(
                transaction_id="string",
                group="string",
                topic="string",
                qos="integer",
                checks="integer",
                next_check_in="number",
                node="string",
            ),
        ]
    },
    "Listener": _object(
        name="string", kind="string", address="string", path="string", require_certificate="boolean"
    ),
    "Listeners": {
        "type": "object",
        "properties": {
            "mqtt": {"type": "string"},
            "http": {"type": "string"},
            "all": {"type": "array", "items": _ref("Listener")},
        },
    },
    "Node": _object(
        node_id="string",
        address="string",
        connections="integer",
        version="string",
        started="number",
        last_beat_age="number",
        http="string",
        self="boolean",
    ),
}


def _path_parameter(name: str) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


CLIENT_ID = _path_parameter("client_id")
TRANSACTION_ID = _path_parameter("transaction_id")
DECISION = _object(transaction_id="string", outcome="string", forwarded="string")

PATHS: Json = {
    "/api/v1/health": {"get": _operation("Liveness: the node answers.", _object(status="string"))},
    "/api/v1/ready": {
        "get": _operation(
            "Readiness: the node takes clients.",
            _object(ready="boolean", reasons="array"),
            errors=["503"],
        )
    },
    "/api/v1/node": {
        "get": _operation(
            "Version, uptime, listeners and settings (secrets hidden).",
            {
                "allOf": [
                    _object(
                        node_id="string",
                        version="string",
                        uptime="number",
                        cluster="boolean",
                        settings="object",
                    ),
                    {"properties": {"listeners": _ref("Listeners")}},
                ]
            },
        )
    },
    "/api/v1/stats": {
        "get": _operation("This node's figures (those of /metrics).", {"type": "object"})
    },
    "/api/v1/nodes": {
        "get": _operation(
            "This node and the live cluster nodes, from their heartbeats.",
            {"type": "object", "properties": {"nodes": {"type": "array", "items": _ref("Node")}}},
        )
    },
    "/api/v1/clients": {
        "get": _operation(
            "Connected clients (in a cluster: of every node).",
            _page_of("Client"),
            *CLUSTER_PAGE_PARAMETERS,
            errors=["400"],
        )
    },
    "/api/v1/clients/{client_id}": {
        "get": _operation(
            "One connected client with its subscriptions.",
            _ref("Client"),
            CLIENT_ID,
            SCOPE,
            errors=["404"],
        )
    },
    "/api/v1/clients/{client_id}/kick": {
        "post": _operation(
            "Disconnect a client (MQTT 5: DISCONNECT 0x98 with the reason).",
            _object(client_id="string", kicked="boolean", reason="string"),
            CLIENT_ID,
            SCOPE,
            requestBody={
                "required": False,
                "content": {"application/json": {"schema": _object(reason="string")}},
            },
            errors=["400", "404"],
        )
    },
    "/api/v1/sessions": {
        "get": _operation(
            "Sessions, connected or not (in a cluster: of every node).",
            _page_of("Session"),
            *CLUSTER_PAGE_PARAMETERS,
            {
                "name": "connected",
                "in": "query",
                "schema": {"type": "string", "enum": ["true", "false"]},
            },
            errors=["400"],
        )
    },
    "/api/v1/sessions/{client_id}": {
        "delete": _operation(
            "End an offline session.",
            _object(client_id="string", deleted="boolean"),
            CLIENT_ID,
            SCOPE,
            errors=["404", "409"],
        )
    },
    "/api/v1/subscriptions": {
        "get": _operation(
            "Subscriptions, all or one client's (in a cluster: of every node).",
            _page_of("Subscription"),
            *CLUSTER_PAGE_PARAMETERS,
            {"name": "client_id", "in": "query", "schema": {"type": "string"}},
            errors=["400"],
        )
    },
    "/api/v1/retained": {
        "get": _operation(
            "Retained messages matching a topic filter.",
            _page_of("RetainedMessage"),
            *PAGE_PARAMETERS,
            {"name": "filter", "in": "query", "schema": {"type": "string", "default": "#"}},
            errors=["400"],
        ),
        "delete": _operation(
            "Clear a topic's retained message (an empty retained PUBLISH).",
            _object(topic="string", deleted="boolean"),
            {"name": "topic", "in": "query", "required": True, "schema": {"type": "string"}},
            errors=["404"],
        ),
    },
    "/api/v1/transactions": {
        "get": _operation(
            "Pending transactions (in a cluster: of every node).",
            _page_of("Transaction"),
            *CLUSTER_PAGE_PARAMETERS,
            errors=["400"],
        )
    },
    "/api/v1/transactions/{transaction_id}/commit": {
        "post": _operation(
            "Commit a pending transaction (202: sent to the node holding it).",
            DECISION,
            TRANSACTION_ID,
            errors=["404", "409"],
        )
    },
    "/api/v1/transactions/{transaction_id}/rollback": {
        "post": _operation(
            "Roll back a pending transaction (202: sent to the node holding it).",
            DECISION,
            TRANSACTION_ID,
            errors=["404", "409"],
        )
    },
    "/api/v1/openapi.json": {"get": _operation("This document.", {"type": "object"})},
}

DOCUMENT: Json = {
    "openapi": "3.1.0",
    "info": {"title": "Roost admin API", "version": __version__},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
}


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of the admin API."""
    return web.json_response(DOCUMENT)
