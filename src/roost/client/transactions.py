"""Transactional ("half") messages: a producer modelled on RocketMQ's TransactionMQProducer.

The wire protocol is plain MQTT 5 (see ``docs/transactions.md``): a half message is a PUBLISH
to the real topic carrying the user properties ``roost-tx-id`` and ``roost-tx-group``; the
broker stores it without delivering it until a PUBLISH to ``$tx/commit`` (or ``$tx/rollback``,
``$tx/unknown``) names its transaction id. A half message left undecided is checked back: the
broker asks one connected producer of the group, on ``$tx/check/<group>``, for its state.

Usage::

    async with TransactionProducer(
        "mqtt://127.0.0.1:1883", group="orders", check=check_local_transaction
    ) as producer:
        result = await producer.send("orders/paid", payload, execute=execute_local_transaction)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import unquote, urlsplit

from roost.client.connection import MQTTClient
from roost.client.errors import ClientError, ConnectionLost, PublishError, reason_name
from roost.codec import MQTT_5, NO_PROPERTIES, Properties, Publish

logger = logging.getLogger(__name__)

TX_ID = "roost-tx-id"
TX_GROUP = "roost-tx-group"
TX_CHECK_DELAY = "roost-tx-check-delay"
TX_TOPIC = "roost-tx-topic"
TX_CHECK = "roost-tx-check"
CHECK_TOPIC_PREFIX = "$tx/check/"
DEFAULT_PORT = 1883
FAILURE = 0x80  # reason codes from here up are failures [MQTT 2.4]


class LocalTransactionState(Enum):
    """The outcome of a local transaction; the value names the decision topic ``$tx/<value>``."""

    COMMIT = "commit"
    ROLLBACK = "rollback"
    UNKNOWN = "unknown"

    @property
    def topic(self) -> str:
        """The topic that carries this decision to the broker."""
        return f"$tx/{self.value}"


@dataclass(frozen=True, slots=True)
class HalfMessage:
    """A half message as the local transaction sees it; ``properties`` as sent or received."""

    transaction_id: str
    topic: str
    payload: bytes
    properties: Properties

    def user_property(self, name: str) -> str | None:
        """The first user property called ``name``, or None."""
        return next((value for key, value in self.properties.user_properties if key == name), None)


@dataclass(frozen=True, slots=True)
class CheckRequest(HalfMessage):
    """The broker asks for the state of a pending half message; ``check_number`` counts from 1."""

    check_number: int


@dataclass(frozen=True, slots=True)
class SendResult:
    """What :meth:`TransactionProducer.send` decided for the half message it sent."""

    transaction_id: str
    state: LocalTransactionState


class TransactionError(ClientError):
    """The broker refused a half message (``state`` None) or the decision ``state``."""

    def __init__(
        self,
        transaction_id: str,
        reason_code: int,
        reason_string: str | None,
        state: LocalTransactionState | None = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.reason_code = reason_code
        self.reason_string = reason_string
        self.state = state
        what = "half message" if state is None else f"{state.name} decision"
        detail = f": {reason_string}" if reason_string else ""
        super().__init__(
            f"{what} for transaction {transaction_id!r} refused: {reason_name(reason_code)}{detail}"
        )

    @classmethod
    def from_publish_error(
        cls, transaction_id: str, error: PublishError, state: LocalTransactionState | None = None
    ) -> TransactionError:
        """The refusal a PUBACK / PUBREC carried, for ``transaction_id``."""
        return cls(transaction_id, error.reason_code, error.ack.properties.reason_string, state)


Message = TypeVar("Message", bound=HalfMessage)
Callback = Callable[[Message], LocalTransactionState | Awaitable[LocalTransactionState]]
ExecuteLocalTransaction = Callback[HalfMessage]
CheckLocalTransaction = Callback[CheckRequest]


async def _run(callback: Callback[Message], message: Message) -> LocalTransactionState:
    """Call a sync or async callback and check that it returned a LocalTransactionState."""
    state = callback(message)
    if inspect.isawaitable(state):
        state = await state
    if not isinstance(state, LocalTransactionState):
        raise TypeError(f"{callback!r} returned {state!r}, not a LocalTransactionState")
    return state


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``mqtt://[user[:password]@]host[:port]`` as (host, port, username, password)."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"not an mqtt://host:port URL: {url!r}")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, parts.port or DEFAULT_PORT, username, password


class TransactionProducer:
    """A member of producer group ``group`` that sends half messages and answers check-backs.

    ``check`` answers the broker's check requests for any pending transaction of the group,
    including those another member started (it may have crashed); an exception means UNKNOWN.
    Callbacks may be plain functions or coroutine functions; plain ones run on the event loop,
    so keep them short. While this producer itself is running a transaction's ``execute``,
    check requests for it are answered UNKNOWN without calling ``check``.

    The producer does not reconnect: if the connection drops, open a new one; pending half
    messages are then settled through check-backs.
    """

    def __init__(
        self,
        url: str,
        group: str,
        check: CheckLocalTransaction,
        *,
        client_id: str | None = None,
        keep_alive: int = 60,
    ) -> None:
        self.host, self.port, self._username, self._password = parse_url(url)
        if not group or any(char in group for char in "/+#"):
            raise ValueError(f"producer group must be a non-empty topic level: {group!r}")
        self.group = group
        self.check_topic = CHECK_TOPIC_PREFIX + group
        self._check = check
        self._client_id = client_id or f"{group}-{uuid.uuid4().hex[:12]}"
        self._keep_alive = keep_alive
        self._client: MQTTClient | None = None
        self._server: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._executing: set[str] = set()
        self._closing = False

    @property
    def client(self) -> MQTTClient:
        """The producer's connection; RuntimeError before :meth:`start`."""
        if self._client is None:
            raise RuntimeError("the producer is not started")
        return self._client

    async def start(self) -> None:
        """Connect, subscribe to the group's check topic and start answering check requests."""
        client = await MQTTClient.connect(
            self.host,
            self.port,
            self._client_id,
            protocol_level=MQTT_5,
            keep_alive=self._keep_alive,
            username=self._username,
            password=self._password,
        )
        try:
            suback = await client.subscribe(self.check_topic, qos=1)
            if suback.reason_codes[0] >= FAILURE:
                raise ClientError(
                    f"subscription to {self.check_topic} refused: "
                    f"{reason_name(suback.reason_codes[0])}"
                )
        except BaseException:
            await client.disconnect()
            raise
        self._client = client
        self._server = asyncio.create_task(self._serve_checks(client))

    async def close(self) -> None:
        """Stop answering check requests and disconnect."""
        self._closing = True
        tasks = [task for task in (self._server, *self._answering) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None and not self._client.closed.is_set():
            await self._client.disconnect()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(
        self,
        topic: str,
        payload: bytes | str,
        execute: ExecuteLocalTransaction,
        *,
        qos: int = 1,
        retain: bool = False,
        transaction_id: str | None = None,
        check_delay: int | None = None,
        properties: Properties | None = None,
    ) -> SendResult:
        """Send a half message, run ``execute`` on it and send the decision it returns.

        ``execute`` raising means ROLLBACK. ``check_delay`` (seconds) overrides the broker's
        transaction timeout for the first check-back. With QoS 0 the broker does not confirm
        that it stored the half message. Raises TransactionError if the broker refuses the
        half message or the decision, ConnectionLost if the connection ends first.
        """
        transaction_id = transaction_id or uuid.uuid4().hex
        if isinstance(payload, str):
            payload = payload.encode()
        properties = properties or NO_PROPERTIES
        tags = [(TX_ID, transaction_id), (TX_GROUP, self.group)]
        if check_delay is not None:
            tags.append((TX_CHECK_DELAY, str(check_delay)))
        properties = replace(properties, user_properties=(*properties.user_properties, *tags))
        self._executing.add(transaction_id)
        try:
            try:
                await self.client.publish(topic, payload, qos, retain, properties)
            except PublishError as exc:
                raise TransactionError.from_publish_error(transaction_id, exc) from exc
            message = HalfMessage(transaction_id, topic, payload, properties)
            try:
                state = await _run(execute, message)
            except Exception:
                logger.exception("local transaction %s failed: rolling back", transaction_id)
                state = LocalTransactionState.ROLLBACK
        finally:
            self._executing.discard(transaction_id)
        await self.decide(transaction_id, state)
        return SendResult(transaction_id, state)

    async def decide(self, transaction_id: str, state: LocalTransactionState) -> None:
        """Send a decision for a pending transaction (of any member of the group).

        Raises TransactionError if the broker refuses it: the id is unknown or already decided.
        """
        try:
            await self.client.publish(state.topic, transaction_id.encode(), qos=1)
        except PublishError as exc:
            raise TransactionError.from_publish_error(transaction_id, exc, state) from exc

    async def _serve_checks(self, client: MQTTClient) -> None:
        """Answer every check request, each in its own task, until the connection ends."""
        async for publish in client.messages():
            if publish.topic != self.check_topic:
                continue
            task = asyncio.create_task(self._answer(publish))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        if not self._closing:
            logger.warning("producer %s: %s", self._client_id, client.close_reason)

    async def _answer(self, publish: Publish) -> None:
        """Ask ``check`` for the state of one check request and send it as the decision."""
        request = self._check_request(publish)
        if request is None:
            return
        if request.transaction_id in self._executing:
            state = LocalTransactionState.UNKNOWN
        else:
            try:
                state = await _run(self._check, request)
            except Exception:
                logger.exception("check of transaction %s failed: UNKNOWN", request.transaction_id)
                state = LocalTransactionState.UNKNOWN
        try:
            await self.decide(request.transaction_id, state)
        except TransactionError as exc:
            logger.info("%s", exc)  # settled meanwhile, e.g. by another member's answer
        except ConnectionLost:
            logger.warning("connection lost before answering check of %s", request.transaction_id)

    def _check_request(self, publish: Publish) -> CheckRequest | None:
        """Decode a check request; None (logged) if it lacks the transaction properties."""
        user = dict(publish.properties.user_properties)
        try:
            return CheckRequest(
                user[TX_ID],
                user[TX_TOPIC],
                publish.payload,
                publish.properties,
                int(user[TX_CHECK]),
            )
        except (KeyError, ValueError):
            logger.warning("ignoring malformed check request on %s: %r", publish.topic, user)
            return None
