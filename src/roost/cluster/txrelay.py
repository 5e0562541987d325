"""Transactional messages in a cluster: the node that received a half message holds it
(and checks back with its group); every node knows where each pending transaction is, so
that a decision published anywhere reaches the holder.

Redis keeps, beside the half messages of the store, which node holds each pending
transaction (``roost:{tx}:home``); nodes tell each other of new and settled transactions
through their inboxes (PREPARED / SETTLED records), send decisions (DECIDE) to the holder,
and check-back requests (CHECK) to a node with a member of the group.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from roost.cluster import keys, scripts
from roost.cluster.routes import ClusterRoutes
from roost.cluster.sender import Sender
from roost.cluster.wire import (
    CHECK,
    Decide,
    Prepared,
    TransactionSettled,
    encode_decide,
    encode_prepared,
    encode_publish,
    encode_settled,
)
from roost.core import BrokerCore
from roost.message import Message
from roost.transactions import Decision, HalfMessage, Settled

log = logging.getLogger("roost.cluster")

FetchTransaction = Callable[[str, float], Awaitable[HalfMessage | None]]


class TransactionRelay:
    def __init__(
        self,
        redis: Any,
        node_id: str,
        core: BrokerCore,
        sender: Sender,
        routes: ClusterRoutes,
        peers: Callable[[], Iterable[str]],
        fetch: FetchTransaction,
    ) -> None:
        """``peers`` gives the live other nodes; ``fetch`` reads one stored half
        message (to take over a dead node's)."""
        self.redis = redis
        self.node_id = node_id
        self.core = core
        self.sender = sender
        self.routes = routes
        self.peers = peers
        self.fetch = fetch
        self.homes: dict[str, str] = {}  # transaction held by another node -> that node

    def prepared(self, transaction_id: str) -> None:
        self.sender.command(partial(_hset, keys.TRANSACTION_HOMES, transaction_id, self.node_id))
        self.sender.broadcast(encode_prepared(Prepared(transaction_id, self.node_id)), self.peers())

    def settled(self, transaction_id: str, outcome: Settled) -> None:
        self.sender.command(partial(_hdel, keys.TRANSACTION_HOMES, transaction_id))
        self.sender.broadcast(
            encode_settled(TransactionSettled(transaction_id, outcome)), self.peers()
        )

    def forward_decision(self, transaction_id: str, decision: Decision) -> None:
        """To the node holding the transaction; to every node if it is not known here
        (yet: its PREPARED record may still be on its way)."""
        record = encode_decide(Decide(transaction_id, decision))
        home = self.homes.get(transaction_id)
        peers = set(self.peers())
        if home is not None and home in peers:
            self.sender.record(home, record)
        else:
            self.sender.broadcast(record, peers)

    def send_check(self, request: Message) -> bool:
        """To a node with a member of the request's group; False if there is none."""
        nodes = self.routes.nodes_with(request.topic)
        nodes.discard(self.node_id)
        if not nodes:
            return False
        chosen = self.routes.take_turn(request.topic, nodes)
        self.sender.record(chosen, encode_publish(request, (), self.core.clock(), CHECK))
        return True

    def on_prepared(self, record: Prepared) -> None:
        self.homes[record.transaction_id] = record.node

    def on_settled(self, record: TransactionSettled) -> None:
        self.homes.pop(record.transaction_id, None)
        self.core.settled_elsewhere(record.transaction_id, record.outcome)

    async def sort_pending(self) -> None:
        """Keep the pending transactions this node holds (or that nobody holds), let go
        of the others' and learn where they are (at start and on rejoining)."""
        homes = {
            key.decode(): value.decode()
            for key, value in (await self.redis.hgetall(keys.TRANSACTION_HOMES)).items()
        }
        transactions = self.core.transactions
        for transaction_id in list(transactions.pending):
            home = homes.get(transaction_id)
            if home is None:
                await self.redis.hsetnx(keys.TRANSACTION_HOMES, transaction_id, self.node_id)
                home = (await self.redis.hget(keys.TRANSACTION_HOMES, transaction_id)).decode()
            if home != self.node_id:
                transactions.hand_over(transaction_id)
        self.homes = {
            transaction_id: home for transaction_id, home in homes.items() if home != self.node_id
        }

    async def adopt(self, dead: str) -> None:
        """Hold (and check back) the pending transactions a dead node held."""
        homes = await self.redis.hgetall(keys.TRANSACTION_HOMES)
        held = [key.decode() for key, value in homes.items() if value.decode() == dead]
        for transaction_id in held:
            moved = await self.redis.eval(
                scripts.MOVE_FIELD, 1, keys.TRANSACTION_HOMES, transaction_id, dead, self.node_id
            )
            if not moved:
                continue
            half = await self.fetch(transaction_id, self.core.clock())
            if half is not None:
                self.core.adopt_transaction(half)
                self.sender.broadcast(
                    encode_prepared(Prepared(transaction_id, self.node_id)), self.peers()
                )
        if held:
            log.info("took over %d pending transactions of node %s", len(held), dead)


def _hset(key: str, field: str, value: str, client: Any) -> None:
    client.hset(key, field, value)


def _hdel(key: str, field: str, client: Any) -> None:
    client.hdel(key, field)
