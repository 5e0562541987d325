"""Pending transactions held by this node or (in a cluster) by every node, and an
operator's decision on one, taken through the same path as a producer's ``$tx/commit`` /
``$tx/rollback``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from roost.errors import TransactionRefused
from roost.http.admin.errors import conflict, not_found
from roost.http.admin.peers import cluster_paged
from roost.http.admin.render import transaction_json
from roost.http.node import NODE
from roost.transactions import DECISION_TOPICS, Decision

routes = web.RouteTableDef()


@routes.get("/api/v1/transactions")
async def list_transactions(request: web.Request) -> web.Response:
    """Half messages awaiting a decision, ``q`` matching the id."""
    core = request.app[NODE].core
    now = core.clock()
    return await cluster_paged(
        request,
        core.transactions.pending.items(),
        lambda half: transaction_json(half, now),
        key=lambda item: str(item["transaction_id"]),
    )


def _decide(decision: Decision) -> Callable[[web.Request], Awaitable[web.Response]]:
    topic = next(topic for topic, each in DECISION_TOPICS.items() if each is decision)

    async def decide(request: web.Request) -> web.Response:
        core = request.app[NODE].core
        transaction_id = request.match_info["transaction_id"]
        transactions = core.transactions
        held = transaction_id in transactions.pending
        if not held and core.bus is None and transaction_id not in transactions.settled:
            raise not_found(f"no transaction {transaction_id!r}")
        try:
            core.decide_transaction(topic, transaction_id.encode(), None)
        except TransactionRefused as exc:
            raise conflict(str(exc)) from exc
        if held:
            outcome = transactions.settled[transaction_id].value
            return web.json_response({"transaction_id": transaction_id, "outcome": outcome})
        # held by another node, or not known here yet: the decision went to the cluster
        return web.json_response(
            {"transaction_id": transaction_id, "forwarded": decision.value}, status=202
        )

    decide.__doc__ = f"{decision.value.capitalize()} a pending transaction."
    return decide


routes.post("/api/v1/transactions/{transaction_id}/commit")(_decide(Decision.COMMIT))
routes.post("/api/v1/transactions/{transaction_id}/rollback")(_decide(Decision.ROLLBACK))
