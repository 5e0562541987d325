"""Taking over what a node held when it died (or stopped): its clients and what was on its
way to them. Run by exactly one surviving node per dead node (a lock in Redis), or by the
node itself when it starts again and nobody has done it.

1. Each client id the dead node claimed and still owns is claimed (compare-and-set on the
   owner, so one that moved on is left alone). A stored session is loaded and adopted: if
   its client was connected, its connection ended abnormally now (will after its delay,
   expiry starts). A session that was not stored only has its will, kept with the claim:
   it is published.
2. The dead node's inbox still holds what was sent to it and not yet durable there. A
   message in it goes to the plain subscriptions of the adopted sessions only (the other
   nodes' subscribers had their own copies); for each shared group it was sent there for,
   it is dealt again to the group as a whole: one member, on any live node that has
   members (this one included), in turn. Decisions in it are applied to the transactions
   taken over from it.
3. Its routes are withdrawn, announced on its own channel: until then, the other nodes
   kept sending to its inbox (durable) rather than dropping what its sessions should get.
   After a grace period the inbox is read once more (senders that had not heard yet) and
   the dead node's keys are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from roost.cluster import keys, scripts
from roost.cluster.wire import Decide, Relayed, decode_entry
from roost.core import BrokerCore
from roost.errors import ProtocolError
from roost.message import Message
from roost.session import Session
from roost.store.records import decode_will

log = logging.getLogger("roost.cluster")

LOCK_TIMEOUTS = 20  # an adoption holds its lock for this many node timeouts at most
READ_COUNT = 500  # inbox entries read per call while draining


class Adoption:
    """One node taking over what ``dead`` held."""

    def __init__(
        self,
        core: BrokerCore,
        redis: Any,
        node_id: str,
        dead: str,
        fetch_session: Callable[[str, float], Awaitable[Session | None]],
        claimed: Callable[[str, int], None],
        deal_to_groups: Callable[[Message, frozenset[str]], None] | None,
    ) -> None:
        """``claimed(client_id, epoch)`` tells the node of each client id it now owns, as
        soon as it does (before its session is here); ``deal_to_groups(message, groups)``
        gives a message of the inbox to the shared groups it was sent there for (None: the
        groups are left to the node that adopts the dead one)."""
        self.core = core
        self.redis = redis
        self.node_id = node_id
        self.dead = dead
        self.fetch_session = fetch_session
        self.claimed = claimed
        self.deal_to_groups = deal_to_groups
        self.adopted: set[str] = set()
        self.last_entry = "0-0"

    async def lock(self, timeout: float) -> bool:
        """Become the one adopter of the dead node; False if another node is, or if it
        was adopted already (it has left the node list). A lock left by a former run of
        this node id is taken over (see scripts.TAKE_ADOPTION)."""
        lock = keys.adopter(self.dead)
        milliseconds = int(LOCK_TIMEOUTS * timeout * 1000)
        taken = await self.redis.eval(scripts.TAKE_ADOPTION, 1, lock, self.node_id, milliseconds)
        if taken and not await self.redis.sismember(keys.NODES, self.dead):
            await self.redis.delete(lock)
            return False
        return bool(taken)

    async def unlock(self) -> None:
        """Let go of the lock if this node holds it: an adoption that failed or was
        stopped is taken up by another node at once, not after the lock expires."""
        await self.redis.eval(scripts.RELEASE_ADOPTION, 1, keys.adopter(self.dead), self.node_id)

    async def adopt_clients(self) -> None:
        """Claim the dead node's client ids and take their sessions (step 1)."""
        members = await self.redis.smembers(keys.clients(self.dead))
        now = self.core.clock()
        sessions: list[Session] = []
        wills = []
        for member in members:
            client_id = member.decode()
            result = await self.redis.eval(
                scripts.ADOPT_CLIENT, 1, keys.owner(client_id), self.dead, self.node_id
            )
            if not result:
                continue  # it moved to another node since
            epoch, will = int(result[0]), result[1]
            self.claimed(client_id, epoch)
            session = await self.fetch_session(client_id, now)
            if session is not None:
                sessions.append(session)
                await self.redis.sadd(keys.clients(self.node_id), client_id)
            else:
                await self.redis.eval(
                    scripts.RELEASE_CLIENT, 1, keys.owner(client_id), self.node_id, epoch
                )
                if will:
                    wills.append((client_id, decode_will(will)))
        self.core.adopt_sessions(sessions, now)
        self.adopted.update(session.client_id for session in sessions)
        for client_id, will in wills:
            self.core.publish_will(client_id, will)
        log.info(
            "adopted %d sessions of node %s and published %d wills of its clients",
            len(sessions),
            self.dead,
            len(wills),
        )

    async def drain_inbox(self) -> int:
        """Deliver what waits in the dead node's inbox to the adopted sessions and the
        shared groups (step 2); returns how many messages were delivered."""
        delivered = 0
        key = keys.inbox(self.dead)
        while True:
            entries = await self.redis.xrange(key, f"({self.last_entry}", "+", count=READ_COUNT)
            if not entries:
                return delivered
            for entry_id, fields in entries:
                self.last_entry = entry_id.decode()
                delivered += self._deliver(fields)

    def _deliver(self, fields: dict[bytes, bytes]) -> int:
        try:
            records = list(decode_entry(fields, self.core.clock(), time.time()))
        except ProtocolError as exc:
            log.error("dropping a malformed batch of node %s's inbox: %s", self.dead, exc)
            return 0
        delivered = 0
        for record in records:
            if isinstance(record, Message):  # one with no shared group to serve
                record = Relayed(record, frozenset())
            if isinstance(record, Relayed):
                self.core.deliver_adopted(record.message, (), self.adopted)
                if record.shared and self.deal_to_groups is not None:
                    self.deal_to_groups(record.message, record.shared)
                delivered += 1
            elif isinstance(record, Decide):  # for a transaction taken over from it
                self.core.apply_decision(record.transaction_id, record.decision)
            # a take-over sent to the dead node is moot, and so is news of transactions
        return delivered

    async def withdraw_routes(self) -> None:
        """Announce that the dead node has no routes any more (step 3)."""
        await self.redis.eval(
            scripts.CHANGE_ROUTES,
            2,
            keys.routes(self.dead),
            keys.routes_version(self.dead),
            keys.routes_channel(self.dead),
            "=",
        )

    async def forget_dead_node(self) -> None:
        """Delete what is left of the dead node (the end of step 3)."""
        dead = self.dead
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.inbox(dead), keys.clients(dead), keys.routes(dead))
        pipe.delete(keys.routes_version(dead), keys.adopter(dead))
        pipe.srem(keys.NODES, dead)
        await pipe.execute()
