"""One user's chat: a persistent MQTT 5 session on the user's node, friends' presence in,
direct messages in and out, until the input ends.

The session survives the user's absence (``SESSION_EXPIRY``): QoS 1 messages sent to the
inbox meanwhile are queued by the cluster and delivered at the next connect, wherever that
is. Leaving sends DISCONNECT "with will", so the will ("offline") is what friends see,
whether the user quits or the connection dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from roost.client import ClientError, MQTTClient
from roost.codec import Publish, Will

from .placement import NodeAddress
from .wire import Line, Status, check_user, inbox_topic, status_topic

SESSION_EXPIRY = 86_400  # seconds the cluster keeps an absent user's session and inbox
KEEP_ALIVE = 30
DISCONNECT_WITH_WILL = 0x04  # MQTT 5: publish the will although the client says goodbye
USAGE = "! write '@friend message', or /quit"


class Chat:
    """``user``'s chat; ``say`` shows one line of output."""

    def __init__(self, user: str, friends: list[str], say: Callable[[str], None]) -> None:
        self.user = check_user(user)
        self.friends = [check_user(friend) for friend in friends]
        self.say = say

    async def run(self, node: NodeAddress, lines: AsyncIterator[str]) -> int:
        """Chat on ``node`` with input ``lines``; 0 when the input ends or says /quit, 1 if
        the connection is lost."""
        client = await self._connect(node)
        self.say(f"* {self.user} connected to node {node.node_id} ({node.host}:{node.port})")
        receiving = asyncio.create_task(self._receive(client))
        sending = asyncio.create_task(self._send(client, lines))
        await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done() and not client.closed.is_set():
            await client.disconnect(DISCONNECT_WITH_WILL)
            await receiving
            self.say("* bye")
            return 0
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await sending
        self.say(f"! connection lost: {client.close_reason}")
        return 1

    async def _connect(self, node: NodeAddress) -> MQTTClient:
        """Resume (or start) the session, subscribe, and say "online"."""
        offline = Status(self.user, "offline", node.node_id)
        client = await MQTTClient.connect(
            node.host,
            node.port,
            f"chat-{self.user}",
            clean_start=False,
            session_expiry=SESSION_EXPIRY,
            keep_alive=KEEP_ALIVE,
            will=Will(status_topic(self.user), offline.encode(), qos=1, retain=True),
        )
        await client.subscribe(inbox_topic(self.user), qos=1)
        if self.friends:
            await client.subscribe(*(status_topic(friend) for friend in self.friends), qos=1)
        online = Status(self.user, "online", node.node_id)
        await client.publish(status_topic(self.user), online.encode(), qos=1, retain=True)
        return client

    async def _receive(self, client: MQTTClient) -> None:
        async for message in client.messages():
            try:
                self.say(self._describe(message))
            except (ValueError, KeyError, TypeError):
                self.say(f"! unreadable message on {message.topic}")

    def _describe(self, message: Publish) -> str:
        if message.topic == inbox_topic(self.user):
            line = Line.decode(message.payload)
            return f"<{line.sender}> {line.text}"
        status = Status.decode(message.payload)
        if status.state == "online":
            return f"* {status.user} is online on node {status.node}"
        return f"* {status.user} is offline (was on node {status.node})"

    async def _send(self, client: MQTTClient, lines: AsyncIterator[str]) -> None:
        async for text in lines:
            text = text.strip()
            if text == "/quit":
                return
            if text:
                await self._send_line(client, text)

    async def _send_line(self, client: MQTTClient, text: str) -> None:
        """``@friend message``: to the friend's inbox at QoS 1, "sent" once the node has it."""
        to, _, body = text.partition(" ")
        if not to.startswith("@") or not body.strip():
            self.say(USAGE)
            return
        try:
            friend = check_user(to[1:])
        except ValueError as exc:
            self.say(f"! {exc}")
            return
        await client.publish(inbox_topic(friend), Line(self.user, body.strip()).encode(), qos=1)
        self.say(f"* sent to {friend}")
