"""Retained messages: listed by topic filter, cleared by topic."""

from __future__ import annotations

from aiohttp import web

from roost.errors import ProtocolError
from roost.http.admin.errors import bad_request, not_found
from roost.http.admin.paging import paged
from roost.http.admin.render import message_json
from roost.http.node import NODE
from roost.message import Message
from roost.topics import validate_topic_filter

routes = web.RouteTableDef()


@routes.get("/api/v1/retained")
async def list_retained(request: web.Request) -> web.Response:
    """Retained messages matching ``filter`` (default ``#``, which leaves out ``$``
    topics as it does for a subscriber), ``q`` matching the topic."""
    core = request.app[NODE].core
    topic_filter = request.query.get("filter", "#")
    settings = core.settings
    try:
        validate_topic_filter(topic_filter, settings.max_topic_length, settings.max_topic_levels)
    except ProtocolError as exc:
        raise bad_request(f"filter: {exc}") from exc
    now = core.clock()
    messages = core.router.retained_for(topic_filter, now)
    return paged(
        request, ((message.topic, message) for message in messages), lambda m: message_json(m, now)
    )


@routes.delete("/api/v1/retained")
async def delete_retained(request: web.Request) -> web.Response:
    """Clear the retained message of ``topic`` the way an MQTT client does, by publishing
    an empty retained message: stored, sent to every cluster node, and received by the
    current subscribers of the topic as any such clear is."""
    core = request.app[NODE].core
    topic = request.query.get("topic", "")
    if topic not in core.router.retained:
        raise not_found(f"no retained message on {topic!r}")
    core.publish(Message(topic, b"", 0, True, now=core.clock()))
    return web.json_response({"topic": topic, "deleted": True})
