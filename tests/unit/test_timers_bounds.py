"""TimingWheel.discard and Deadlines.cancel: one live entry per item, and memory given
back as soon as an item goes away (a closed connection, a resumed session)."""

from __future__ import annotations

import weakref
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from roost.timers import Deadlines, TimingWheel
from wheelitems import Items


class Connection:
    """Stands for a connection object: hashable by identity, weakly referenceable, with the
    two attributes a wheel links it through."""

    wheel_prev: Any = None
    wheel_next: Any = None


# -- TimingWheel ----------------------------------------------------------------------------


def test_discarded_item_is_released_at_once() -> None:
    """A client with keep alive 65535 that disconnects is not held for 27 hours."""
    wheel: TimingWheel[Connection] = TimingWheel(now=0.0)
    connection = Connection()
    gone = weakref.ref(connection)
    wheel.schedule(connection, 1.5 * 65535)
    wheel.discard(connection)
    del connection
    assert gone() is None
    assert len(wheel) == 0
    assert wheel.occupied_slots == 0


def test_discarded_item_never_comes_due() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    wheel.schedule(items["gone"], 1.0)
    wheel.schedule(items["kept"], 1.0)
    wheel.discard(items["gone"])
    assert wheel.due(10.0) == ["kept"]


def test_discarding_an_unscheduled_item_does_nothing() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    wheel.discard(items["never"])
    wheel.schedule(items["x"], 1.0)
    assert wheel.due(1.0) == ["x"]
    wheel.discard(items["x"])  # already handed out
    assert len(wheel) == 0


def test_rescheduling_replaces_the_entry() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    for deadline in (5.0, 1.0, 3.0):
        wheel.schedule(items["x"], deadline)
    assert len(wheel) == 1
    assert wheel.occupied_slots == 1
    assert wheel.due(2.0) == []
    assert wheel.due(3.0) == ["x"]
    assert wheel.due(100.0) == []


def test_a_hundred_thousand_items_scheduled_and_discarded_leave_nothing() -> None:
    wheel: TimingWheel[Connection] = TimingWheel(now=0.0)
    connections = [Connection() for _ in range(100_000)]
    refs = [weakref.ref(connection) for connection in connections]
    for index, connection in enumerate(connections):
        wheel.schedule(connection, 1.0 + index % 5000)
    assert len(wheel) == 100_000
    assert wheel.occupied_slots == 5000
    for connection in connections:
        wheel.discard(connection)
    assert len(wheel) == 0
    assert wheel.occupied_slots == 0
    del connections, connection
    assert all(ref() is None for ref in refs)
    assert wheel.due(10_000.0) == []


def test_items_handed_out_are_not_kept() -> None:
    wheel: TimingWheel[Connection] = TimingWheel(now=0.0)
    connection = Connection()
    gone = weakref.ref(connection)
    wheel.schedule(connection, 1.0)
    assert wheel.due(1.0) == [connection]
    del connection
    assert gone() is None
    assert len(wheel) == 0


operation = st.one_of(
    st.tuples(st.just("schedule"), st.integers(0, 5), st.integers(1, 400)),
    st.tuples(st.just("discard"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("advance"), st.just(0), st.integers(0, 100)),
)


@given(start=st.integers(0, 10**6), operations=st.lists(operation, max_size=60))
def test_wheel_follows_a_model_of_live_entries(
    start: int, operations: list[tuple[str, int, int]]
) -> None:
    """Times on the wheel's quarter-second grid, deadlines in the future: ``due`` returns
    exactly the items whose latest deadline has come, never a discarded one."""
    now = start / 4
    wheel: TimingWheel[Any] = TimingWheel(now=now)
    items = Items()
    model: dict[int, float] = {}
    for kind, item, amount in operations:
        if kind == "schedule":
            model[item] = now + amount / 4
            wheel.schedule(items[item], model[item])
        elif kind == "discard":
            model.pop(item, None)
            wheel.discard(items[item])
        else:
            now += amount / 4
            expected = {item for item, deadline in model.items() if deadline <= now}
            found = wheel.due(now)
            assert len(found) == len(set(found))
            assert set(found) == expected
            for item in expected:
                del model[item]
        assert len(wheel) == len(model)
        assert wheel.occupied_slots <= len(model)


# -- Deadlines ------------------------------------------------------------------------------


def test_cancelled_key_never_comes_due() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("gone", 1.0)
    deadlines.schedule("kept", 2.0)
    deadlines.cancel("gone")
    deadlines.cancel("never scheduled")
    assert len(deadlines) == 1
    assert deadlines.due(10.0) == ["kept"]


def test_rescheduled_key_comes_due_once_at_its_latest_deadline() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("x", 10.0)
    deadlines.schedule("x", 1.0)
    deadlines.schedule("x", 5.0)
    assert len(deadlines) == 1
    assert deadlines.due(4.0) == []
    assert deadlines.due(5.0) == ["x"]
    assert deadlines.due(100.0) == []


def test_reconnecting_sessions_leave_no_stale_entries() -> None:
    """Each disconnect re-schedules its session's expiry: the heap stays within twice the
    live keys however often that happens."""
    deadlines: Deadlines[tuple[str, str]] = Deadlines()
    for round_number in range(1000):
        for client in range(100):
            deadlines.schedule(("expiry", f"c{client}"), 3600.0 + round_number)
            assert deadlines.heap_size <= 2 * len(deadlines)
    assert len(deadlines) == 100
    assert deadlines.due(10_000.0) == [("expiry", f"c{client}") for client in range(100)]
    assert deadlines.heap_size == 0


def test_a_hundred_thousand_keys_scheduled_and_cancelled_leave_nothing() -> None:
    deadlines: Deadlines[Connection] = Deadlines()
    keys = [Connection() for _ in range(100_000)]
    refs = [weakref.ref(key) for key in keys]
    for index, key in enumerate(keys):
        deadlines.schedule(key, float(index % 977))
    for key in keys:
        deadlines.cancel(key)
        assert deadlines.heap_size <= 2 * len(deadlines)
    assert len(deadlines) == 0
    assert deadlines.heap_size == 0
    del keys, key
    assert all(ref() is None for ref in refs)


def test_due_gives_back_the_space_of_stale_entries() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for key in "abc":
        deadlines.schedule(key, 1.0)
    for key in "abc":
        deadlines.schedule(key, 1000.0)  # three stale entries, due long before
    for key in "de":
        deadlines.schedule(key, 2.0)
    assert deadlines.due(2.0) == ["d", "e"]
    assert deadlines.heap_size <= 2 * len(deadlines)


deadline_operation = st.one_of(
    st.tuples(st.just("schedule"), st.integers(0, 6), st.integers(0, 50)),
    st.tuples(st.just("cancel"), st.integers(0, 6), st.just(0)),
    st.tuples(st.just("due"), st.just(0), st.integers(0, 50)),
)


@given(operations=st.lists(deadline_operation, max_size=80))
def test_deadlines_follow_a_model_of_one_deadline_per_key(
    operations: list[tuple[str, int, int]],
) -> None:
    deadlines: Deadlines[int] = Deadlines()
    model: dict[int, tuple[int, int]] = {}  # key -> (when, order of its latest schedule)
    for order, (kind, key, time) in enumerate(operations):
        if kind == "schedule":
            model[key] = (time, order)
            deadlines.schedule(key, time)
        elif kind == "cancel":
            model.pop(key, None)
            deadlines.cancel(key)
        else:
            expected = sorted((entry, key) for key, entry in model.items() if entry[0] <= time)
            assert deadlines.due(time) == [key for _, key in expected]
            for _, key in expected:
                del model[key]
        assert len(deadlines) == len(model)
        assert deadlines.heap_size <= 2 * len(model)
