"""Transactional ("half") messages with RocketMQ semantics, free of I/O.

A producer sends a half message (a PUBLISH carrying ``roost-tx-id`` and ``roost-tx-group``
user properties); the broker keeps it, invisible, until a decision arrives on
``$tx/commit``, ``$tx/rollback`` or ``$tx/unknown``. Without a decision, check requests
go to one live member of the producer group every ``check_interval`` seconds, and after
``check_max`` of them the configured final action is applied. See docs/transactions.md.

This module decides; the broker core does the publishing, delivering and storing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from roost.codec import Properties
from roost.errors import ReasonCode, TransactionRefused
from roost.message import Message
from roost.timers import Deadlines

log = logging.getLogger("roost.transactions")

ID_PROPERTY = "roost-tx-id"
GROUP_PROPERTY = "roost-tx-group"
CHECK_DELAY_PROPERTY = "roost-tx-check-delay"
TOPIC_PROPERTY = "roost-tx-topic"
CHECK_NUMBER_PROPERTY = "roost-tx-check"

TOPIC_PREFIX = "$tx/"
CHECK_TOPIC_PREFIX = "$tx/check/"
MAX_ID_LENGTH = 256
SETTLED_MEMORY = 100_000  # settled ids remembered to answer late or repeated decisions


class Decision(Enum):
    COMMIT = "commit"
    ROLLBACK = "rollback"
    UNKNOWN = "unknown"


DECISION_TOPICS = {TOPIC_PREFIX + decision.value: decision for decision in Decision}

PREPARE = "prepare"  # the action of sending half messages, in rights_topic


def rights_topic(action: str, group: str) -> str:
    """The topic whose ACL rights allow ``action`` for producer group ``group``:
    ``$tx/prepare/G`` (WRITE: send half messages), ``$tx/commit/G``, ``$tx/rollback/G``,
    ``$tx/unknown/G`` (WRITE: decide) and ``$tx/check/G`` (READ: receive check requests,
    the check topic itself). See docs/acl.md."""
    return f"{TOPIC_PREFIX}{action}/{group}"


class FinalAction(Enum):
    """What happens to a half message whose checks are exhausted."""

    ROLLBACK = "rollback"
    COMMIT = "commit"
    KEEP = "keep"  # stays pending, no more checks; logged


class Settled(Enum):
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"


# How a decision or a final action settles a transaction.
OUTCOMES = {
    Decision.COMMIT: Settled.COMMITTED,
    Decision.ROLLBACK: Settled.ROLLED_BACK,
    FinalAction.COMMIT: Settled.COMMITTED,
    FinalAction.ROLLBACK: Settled.ROLLED_BACK,
}


@dataclass(frozen=True, slots=True)
class TransactionPolicy:
    timeout: int  # seconds before the first check
    check_interval: int
    check_max: int
    final_action: FinalAction
    max_pending: int
    max_pending_per_group: int


class HalfMessage:
    """A stored, undelivered message of one transaction."""

    __slots__ = ("checks", "group", "message", "next_check", "transaction_id")

    def __init__(
        self, transaction_id: str, group: str, message: Message, next_check: float | None
    ) -> None:
        self.transaction_id = transaction_id
        self.group = group
        self.message = message
        self.next_check = next_check  # None: no more checks (kept after exhaustion)
        self.checks = 0

    def check_request(self) -> Message:
        """The check request for this transaction's group: the half message's payload and
        user properties plus its topic and the check number."""
        message = self.message
        user = (
            *message.properties.user_properties,
            (TOPIC_PROPERTY, message.topic),
            (CHECK_NUMBER_PROPERTY, str(self.checks)),
        )
        return Message(
            CHECK_TOPIC_PREFIX + self.group,
            message.payload,
            1,
            False,
            Properties(user_properties=user),
        )


@dataclass
class TransactionCounters:
    """Counters the metrics endpoint can export."""

    commits: int = 0
    rollbacks: int = 0
    checks: int = 0  # check-backs made, sent or not
    checks_sent: int = 0  # ... of which a connected member of the group received
    checks_exhausted: int = 0


def transaction_fields(properties: Properties) -> tuple[str, str, int | None] | None:
    """(id, group, check delay) when the user properties mark a half message, else None."""
    user = properties.user_properties
    if not user:
        return None
    found = dict(user)
    transaction_id = found.get(ID_PROPERTY)
    if transaction_id is None:
        return None
    group = found.get(GROUP_PROPERTY, "")
    if not group or "/" in group or "+" in group or "#" in group:
        raise TransactionRefused(
            f"{GROUP_PROPERTY} must be a non-empty name without '/', '+' or '#'",
            ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
        )
    if not 0 < len(transaction_id) <= MAX_ID_LENGTH:
        raise TransactionRefused(
            f"{ID_PROPERTY} must be 1..{MAX_ID_LENGTH} characters",
            ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
        )
    delay_text = found.get(CHECK_DELAY_PROPERTY)
    delay = None
    if delay_text is not None:
        if not (delay_text.isascii() and delay_text.isdigit()) or len(delay_text) > 9:
            raise TransactionRefused(
                f"{CHECK_DELAY_PROPERTY} must be a whole number of seconds (0..999999999)",
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
            )
        delay = int(delay_text)
    return transaction_id, group, delay


class Transactions:
    """Pending half messages, settled ids, check schedule and counters."""

    def __init__(self, policy: TransactionPolicy) -> None:
        self.policy = policy
        self.pending: dict[str, HalfMessage] = {}
        self.settled: dict[str, Settled] = {}  # oldest first, bounded
        self.per_group: dict[str, int] = {}
        self.counters = TransactionCounters()
        self._checks: Deadlines[str] = Deadlines()

    def restore(self, half: HalfMessage) -> None:
        """Take back a pending half message from the store."""
        self._add(half)

    def restore_settled(self, transaction_id: str, outcome: Settled) -> None:
        self._remember(transaction_id, outcome)

    def prepare(
        self,
        transaction_id: str,
        group: str,
        message: Message,
        check_delay: int | None,
        now: float,
    ) -> HalfMessage | None:
        """Accept a half message; None if it is a resend of one already pending."""
        existing = self.pending.get(transaction_id)
        if existing is not None:
            return None
        outcome = self.settled.get(transaction_id)
        if outcome is not None:
            raise TransactionRefused(
                f"transaction {transaction_id!r} is already {outcome.value}",
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
            )
        policy = self.policy
        if len(self.pending) >= policy.max_pending:
            raise TransactionRefused(
                f"{policy.max_pending} transactions pending (max_pending_transactions)",
                ReasonCode.QUOTA_EXCEEDED,
            )
        if self.per_group.get(group, 0) >= policy.max_pending_per_group:
            raise TransactionRefused(
                f"{policy.max_pending_per_group} transactions pending in group {group!r}"
                " (max_pending_transactions_per_group)",
                ReasonCode.QUOTA_EXCEEDED,
            )
        first_check = policy.timeout if check_delay is None else check_delay
        half = HalfMessage(transaction_id, group, message, now + first_check)
        self._add(half)
        return half

    def hand_over(self, transaction_id: str) -> HalfMessage | None:
        """Stop holding a pending half message (another cluster node runs it), without
        settling it."""
        half = self.pending.pop(transaction_id, None)
        if half is None:
            return None
        self._checks.cancel(transaction_id)
        group_count = self.per_group[half.group] - 1
        if group_count:
            self.per_group[half.group] = group_count
        else:
            del self.per_group[half.group]
        return half

    def decide(self, transaction_id: str, decision: Decision) -> HalfMessage | None:
        """Check a producer's decision; returns the half message to settle (None for
        "unknown", which leaves it pending)."""
        half = self.pending.get(transaction_id)
        if half is None:
            outcome = self.settled.get(transaction_id)
            reason = "unknown" if outcome is None else f"already {outcome.value}"
            raise TransactionRefused(
                f"transaction {transaction_id!r} is {reason}",
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
            )
        if decision is Decision.UNKNOWN:
            return None  # stays pending; the check schedule goes on
        return half

    def settle(self, half: HalfMessage, outcome: Settled) -> None:
        self.hand_over(half.transaction_id)
        self._remember(half.transaction_id, outcome)
        if outcome is Settled.COMMITTED:
            self.counters.commits += 1
        else:
            self.counters.rollbacks += 1

    def due(self, now: float) -> list[HalfMessage]:
        """Half messages whose next check time has come (each returned once per time)."""
        found: dict[str, HalfMessage] = {}  # an id may have stale entries due too
        for transaction_id in self._checks.due(now):
            half = self.pending.get(transaction_id)
            if half is not None and half.next_check is not None and half.next_check <= now:
                found[transaction_id] = half
        return list(found.values())

    def next_step(self, half: HalfMessage, now: float) -> FinalAction | None:
        """Count a check for ``half`` and schedule the next one; once ``check_max``
        checks are spent, returns the final action instead (and counts it)."""
        policy = self.policy
        if half.checks >= policy.check_max:
            self.counters.checks_exhausted += 1
            half.next_check = None
            return policy.final_action
        half.checks += 1
        self.counters.checks += 1
        half.next_check = now + policy.check_interval
        self._checks.schedule(half.transaction_id, half.next_check)
        return None

    def _add(self, half: HalfMessage) -> None:
        self.pending[half.transaction_id] = half
        self.per_group[half.group] = self.per_group.get(half.group, 0) + 1
        if half.next_check is not None:
            self._checks.schedule(half.transaction_id, half.next_check)

    def _remember(self, transaction_id: str, outcome: Settled) -> None:
        settled = self.settled
        settled[transaction_id] = outcome
        if len(settled) > SETTLED_MEMORY:
            del settled[next(iter(settled))]
