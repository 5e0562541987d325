"""Transactions (pure part): prepare, decide, settle, the check schedule, limits, fields."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost import transactions as tx
from roost.codec import Properties
from roost.errors import ReasonCode
from roost.message import Message
from roost.transactions import (
    CHECK_NUMBER_PROPERTY,
    CHECK_TOPIC_PREFIX,
    TOPIC_PROPERTY,
    Decision,
    FinalAction,
    HalfMessage,
    Settled,
    TransactionPolicy,
    TransactionRefused,
    Transactions,
    transaction_fields,
)


def policy(**overrides: object) -> TransactionPolicy:
    values: dict[str, object] = {
        "timeout": 6,
        "check_interval": 30,
        "check_max": 3,
        "final_action": FinalAction.ROLLBACK,
        "max_pending": 100,
        "max_pending_per_group": 10,
    }
    values.update(overrides)
    return TransactionPolicy(**values)  # type: ignore[arg-type]


def half_message(topic: str = "orders/1") -> Message:
    return Message(topic, b"body", 1, False, Properties(user_properties=(("k", "v"),)))


def prepared(
    transactions: Transactions,
    transaction_id: str,
    group: str = "g",
    now: float = 0.0,
    delay: int | None = None,
) -> HalfMessage:
    half = transactions.prepare(transaction_id, group, half_message(), delay, now)
    assert half is not None
    return half


# -- prepare ------------------------------------------------------------------------------


def test_prepare_makes_a_pending_half_message_counted_per_group() -> None:
    transactions = Transactions(policy())
    first = prepared(transactions, "t1", "g1")
    prepared(transactions, "t2", "g1")
    prepared(transactions, "t3", "g2")
    assert set(transactions.pending) == {"t1", "t2", "t3"}
    assert transactions.pending["t1"] is first
    assert transactions.per_group == {"g1": 2, "g2": 1}
    assert first.checks == 0
    assert first.group == "g1"
    assert first.transaction_id == "t1"


def test_resend_of_a_pending_id_returns_none_and_changes_nothing() -> None:
    transactions = Transactions(policy())
    original = prepared(transactions, "t1", "g")
    assert transactions.prepare("t1", "g", half_message("other"), None, 5.0) is None
    assert transactions.pending["t1"] is original
    assert transactions.per_group == {"g": 1}


@pytest.mark.parametrize("outcome", list(Settled))
def test_prepare_of_a_settled_id_is_refused(outcome: Settled) -> None:
    transactions = Transactions(policy())
    transactions.settle(prepared(transactions, "t1"), outcome)
    with pytest.raises(TransactionRefused) as info:
        transactions.prepare("t1", "g", half_message(), None, 0.0)
    assert info.value.reason_code == 0x83
    assert info.value.reason_code is ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
    assert outcome.value in str(info.value)
    assert "t1" not in transactions.pending


def test_max_pending_limit_is_quota_exceeded_naming_the_setting() -> None:
    transactions = Transactions(policy(max_pending=2, max_pending_per_group=10))
    prepared(transactions, "t1", "a")
    prepared(transactions, "t2", "b")
    with pytest.raises(TransactionRefused) as info:
        transactions.prepare("t3", "c", half_message(), None, 0.0)
    assert info.value.reason_code == 0x97
    assert "max_pending_transactions" in str(info.value)
    assert "t3" not in transactions.pending
    assert "c" not in transactions.per_group


def test_per_group_limit_is_quota_exceeded_naming_the_setting() -> None:
    transactions = Transactions(policy(max_pending=100, max_pending_per_group=2))
    prepared(transactions, "t1", "a")
    prepared(transactions, "t2", "a")
    with pytest.raises(TransactionRefused) as info:
        transactions.prepare("t3", "a", half_message(), None, 0.0)
    assert info.value.reason_code is ReasonCode.QUOTA_EXCEEDED
    assert "max_pending_transactions_per_group" in str(info.value)
    assert "'a'" in str(info.value)
    prepared(transactions, "t4", "b")  # another group still has room
    assert transactions.per_group == {"a": 2, "b": 1}


def test_settling_frees_room_under_the_limits() -> None:
    transactions = Transactions(policy(max_pending=1))
    transactions.settle(prepared(transactions, "t1"), Settled.COMMITTED)
    prepared(transactions, "t2")
    assert transactions.per_group == {"g": 1}


def test_resend_at_the_limit_is_still_answered_with_none() -> None:
    transactions = Transactions(policy(max_pending=1))
    prepared(transactions, "t1")
    assert transactions.prepare("t1", "g", half_message(), None, 0.0) is None


# -- decide and settle --------------------------------------------------------------------


def test_decide_unknown_id_is_refused() -> None:
    transactions = Transactions(policy())
    for decision in Decision:
        with pytest.raises(TransactionRefused) as info:
            transactions.decide("nope", decision)
        assert info.value.reason_code == 0x83
        assert "unknown" in str(info.value)


def test_decide_after_settling_says_so() -> None:
    transactions = Transactions(policy())
    transactions.settle(prepared(transactions, "t1"), Settled.ROLLED_BACK)
    with pytest.raises(TransactionRefused) as info:
        transactions.decide("t1", Decision.COMMIT)
    assert info.value.reason_code == 0x83
    assert "already rolled back" in str(info.value)


@pytest.mark.parametrize("decision", [Decision.COMMIT, Decision.ROLLBACK])
def test_decide_commit_or_rollback_returns_the_half_message(decision: Decision) -> None:
    transactions = Transactions(policy())
    half = prepared(transactions, "t1")
    assert transactions.decide("t1", decision) is half
    assert "t1" in transactions.pending  # settling is a separate step


def test_decide_unknown_leaves_it_pending() -> None:
    transactions = Transactions(policy())
    prepared(transactions, "t1")
    assert transactions.decide("t1", Decision.UNKNOWN) is None
    assert "t1" in transactions.pending
    assert transactions.per_group == {"g": 1}
    assert [h.transaction_id for h in transactions.due(6.0)] == ["t1"]


def test_settle_updates_counts_memory_and_counters() -> None:
    transactions = Transactions(policy())
    transactions.settle(prepared(transactions, "t1", "g"), Settled.COMMITTED)
    transactions.settle(prepared(transactions, "t2", "g"), Settled.ROLLED_BACK)
    transactions.settle(prepared(transactions, "t3", "h"), Settled.ROLLED_BACK)
    assert transactions.pending == {}
    assert transactions.per_group == {}
    assert transactions.settled == {
        "t1": Settled.COMMITTED,
        "t2": Settled.ROLLED_BACK,
        "t3": Settled.ROLLED_BACK,
    }
    assert (transactions.counters.commits, transactions.counters.rollbacks) == (1, 2)


def test_settled_half_message_is_not_checked() -> None:
    transactions = Transactions(policy())
    transactions.settle(prepared(transactions, "t1"), Settled.COMMITTED)
    assert transactions.due(1000.0) == []


# -- the check schedule -------------------------------------------------------------------


def run_checks(
    transactions: Transactions, until: float, step: float = 1.0
) -> list[tuple[float, str, object]]:
    """Tick every ``step`` seconds; log (time, id, None for a check / the final action)."""
    log: list[tuple[float, str, object]] = []
    now = 0.0
    while now <= until:
        for half in transactions.due(now):
            log.append((now, half.transaction_id, transactions.next_step(half, now)))
        now += step
    return log


@pytest.mark.parametrize("final", list(FinalAction))
def test_exactly_check_max_checks_then_the_final_action(final: FinalAction) -> None:
    transactions = Transactions(
        policy(timeout=6, check_interval=30, check_max=3, final_action=final)
    )
    half = prepared(transactions, "t1")
    log = run_checks(transactions, until=1000)
    assert log == [
        (6.0, "t1", None),
        (36.0, "t1", None),
        (66.0, "t1", None),
        (96.0, "t1", final),
    ]
    assert half.checks == 3
    assert half.next_check is None
    assert transactions.counters.checks_exhausted == 1


def test_check_max_zero_applies_the_final_action_at_the_timeout() -> None:
    transactions = Transactions(policy(timeout=5, check_max=0))
    half = prepared(transactions, "t1")
    assert run_checks(transactions, until=500) == [(5.0, "t1", FinalAction.ROLLBACK)]
    assert half.checks == 0
    assert transactions.counters.checks_exhausted == 1


def test_no_check_before_the_timeout() -> None:
    transactions = Transactions(policy(timeout=6))
    prepared(transactions, "t1", now=100.0)
    assert transactions.due(105.999) == []
    assert [h.transaction_id for h in transactions.due(106.0)] == ["t1"]
    assert transactions.due(106.0) == []  # returned once per scheduled time


def test_check_delay_overrides_the_first_check_only() -> None:
    transactions = Transactions(policy(timeout=6, check_interval=30, check_max=2))
    prepared(transactions, "t1", delay=60)
    prepared(transactions, "t2", delay=0)
    log = run_checks(transactions, until=500)
    assert log == [
        (0.0, "t2", None),
        (30.0, "t2", None),
        (60.0, "t1", None),
        (60.0, "t2", FinalAction.ROLLBACK),
        (90.0, "t1", None),
        (120.0, "t1", FinalAction.ROLLBACK),
    ]


def test_late_tick_schedules_from_the_time_of_the_check() -> None:
    transactions = Transactions(policy(timeout=6, check_interval=30))
    half = prepared(transactions, "t1")
    (due,) = transactions.due(50.0)
    assert transactions.next_step(due, 50.0) is None
    assert half.next_check == 80.0
    assert transactions.due(79.9) == []
    assert transactions.due(80.0) == [half]


def test_kept_transaction_is_not_checked_again_but_stays_decidable() -> None:
    transactions = Transactions(policy(check_max=1, final_action=FinalAction.KEEP))
    half = prepared(transactions, "t1")
    run_checks(transactions, until=200)
    assert half.next_check is None
    assert transactions.due(10**9) == []
    assert transactions.decide("t1", Decision.COMMIT) is half


def test_restore_reschedules_pending_checks() -> None:
    transactions = Transactions(policy())
    half = HalfMessage("t1", "g", half_message(), 42.0)
    half.checks = 2
    transactions.restore(half)
    kept = HalfMessage("t2", "g", half_message(), None)
    transactions.restore(kept)
    assert transactions.per_group == {"g": 2}
    assert transactions.due(41.0) == []
    assert transactions.due(1000.0) == [half]


def test_check_request_carries_topic_payload_and_check_number() -> None:
    transactions = Transactions(policy())
    half = prepared(transactions, "t1", "grp")
    transactions.next_step(half, 6.0)
    request = half.check_request()
    assert request.topic == CHECK_TOPIC_PREFIX + "grp"
    assert request.payload == b"body"
    assert request.qos == 1
    assert not request.retain
    assert request.properties.user_properties == (
        ("k", "v"),
        (TOPIC_PROPERTY, "orders/1"),
        (CHECK_NUMBER_PROPERTY, "1"),
    )


@given(
    timeout=st.integers(0, 50),
    interval=st.integers(1, 50),
    check_max=st.integers(0, 6),
    step=st.sampled_from([0.5, 1.0, 3.0, 7.0]),
)
def test_schedule_property(timeout: int, interval: int, check_max: int, step: float) -> None:
    transactions = Transactions(
        policy(timeout=timeout, check_interval=interval, check_max=check_max)
    )
    prepared(transactions, "t1")
    log = run_checks(transactions, until=timeout + (check_max + 2) * (interval + step), step=step)
    actions = [entry[2] for entry in log]
    assert actions == [None] * check_max + [FinalAction.ROLLBACK]
    times = [entry[0] for entry in log]
    assert times[0] >= timeout
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= interval


# -- settled memory -----------------------------------------------------------------------


def test_settled_memory_is_bounded_oldest_forgotten_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tx, "SETTLED_MEMORY", 3)
    transactions = Transactions(policy())
    for index in range(5):
        transactions.settle(prepared(transactions, f"t{index}"), Settled.COMMITTED)
    assert list(transactions.settled) == ["t2", "t3", "t4"]
    # Forgotten ids can be prepared again; remembered ones cannot.
    assert transactions.prepare("t0", "g", half_message(), None, 0.0) is not None
    with pytest.raises(TransactionRefused):
        transactions.prepare("t4", "g", half_message(), None, 0.0)


def test_restore_settled_respects_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tx, "SETTLED_MEMORY", 2)
    transactions = Transactions(policy())
    for index in range(4):
        transactions.restore_settled(f"t{index}", Settled.ROLLED_BACK)
    assert list(transactions.settled) == ["t2", "t3"]


# -- transaction_fields -------------------------------------------------------------------


def fields(*pairs: tuple[str, str]) -> tuple[str, str, int | None] | None:
    return transaction_fields(Properties(user_properties=pairs))


def test_fields_of_a_half_message() -> None:
    assert fields(("roost-tx-id", "abc"), ("roost-tx-group", "g1")) == ("abc", "g1", None)
    assert fields(
        ("x", "y"), ("roost-tx-group", "g1"), ("roost-tx-id", "abc"), ("roost-tx-check-delay", "15")
    ) == ("abc", "g1", 15)
    assert fields(("roost-tx-id", "a"), ("roost-tx-group", "g"), ("roost-tx-check-delay", "0")) == (
        "a",
        "g",
        0,
    )


def test_no_id_means_not_a_half_message() -> None:
    assert transaction_fields(Properties()) is None
    assert fields(("other", "x")) is None
    assert fields(("roost-tx-group", "g")) is None


@pytest.mark.parametrize("group", [None, "", "a/b", "a+", "#", "+"])
def test_bad_group_is_refused(group: str | None) -> None:
    pairs = [("roost-tx-id", "t1")]
    if group is not None:
        pairs.append(("roost-tx-group", group))
    with pytest.raises(TransactionRefused) as info:
        fields(*pairs)
    assert info.value.reason_code == 0x83
    assert "roost-tx-group" in str(info.value)


@pytest.mark.parametrize(
    "delay", ["-1", "abc", "1.5", "", "ten", " 5", "+5", "1_000", "٣", "9" * 10]
)
def test_bad_check_delay_is_refused(delay: str) -> None:
    with pytest.raises(TransactionRefused) as info:
        fields(("roost-tx-id", "t"), ("roost-tx-group", "g"), ("roost-tx-check-delay", delay))
    assert info.value.reason_code == 0x83
    assert "roost-tx-check-delay" in str(info.value)


def test_id_length_limits() -> None:
    assert fields(("roost-tx-id", "x" * 256), ("roost-tx-group", "g")) == ("x" * 256, "g", None)
    for bad in ["x" * 257, ""]:
        with pytest.raises(TransactionRefused) as info:
            fields(("roost-tx-id", bad), ("roost-tx-group", "g"))
        assert info.value.reason_code == 0x83
        assert "roost-tx-id" in str(info.value)


def test_reused_id_after_settled_memory_eviction_is_checked_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tx, "SETTLED_MEMORY", 1)
    transactions = Transactions(policy())
    transactions.settle(prepared(transactions, "t1", delay=10), Settled.COMMITTED)
    transactions.settle(prepared(transactions, "t2"), Settled.COMMITTED)  # forgets t1
    again = prepared(transactions, "t1", now=5.0, delay=5)
    assert transactions.due(10.0) == [again]
