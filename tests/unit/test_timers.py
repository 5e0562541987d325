"""TimingWheel and Deadlines: items come out when due, never early, each exactly once."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from roost.timers import Deadlines, TimingWheel
from wheelitems import Items

# -- TimingWheel ----------------------------------------------------------------------------


def test_item_is_not_returned_before_its_deadline() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=100.0)
    items = Items()
    wheel.schedule(items["x"], 101.1)
    assert wheel.due(100.5) == []
    assert wheel.due(101.0) == []
    assert wheel.due(101.09) == []
    assert len(wheel) == 1
    assert wheel.due(101.25) == ["x"]  # the end of its 0.25 s bucket
    assert wheel.due(101.25) == []
    assert wheel.due(200.0) == []
    assert len(wheel) == 0


def test_deadline_on_a_bucket_boundary_is_due_exactly_then() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    wheel.schedule(items["x"], 1.5)
    assert wheel.due(1.4999) == []
    assert wheel.due(1.5) == ["x"]


def test_items_come_out_in_deadline_order_across_buckets() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    for item, deadline in [(3, 3.0), (1, 1.0), (2, 2.0), (4, 2.1)]:
        wheel.schedule(items[item], deadline)
    assert wheel.due(10.0) == [1, 2, 4, 3]


def test_items_in_one_bucket_keep_scheduling_order() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    for item in "abc":
        wheel.schedule(items[item], 5.0)
    assert wheel.due(5.0) == ["a", "b", "c"]


def test_item_scheduled_in_the_past_comes_out_on_the_next_due() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=50.0)
    items = Items()
    wheel.due(60.0)
    wheel.schedule(items["late"], 10.0)
    wheel.schedule(items["now"], 60.0)
    assert sorted(wheel.due(60.25)) == ["late", "now"]
    assert len(wheel) == 0


def test_item_scheduled_in_the_past_is_not_lost_between_calls() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    assert wheel.due(7.3) == []
    wheel.schedule(items["late"], 1.0)
    assert wheel.due(1000.0) == ["late"]


def test_long_pause_returns_everything_due_and_keeps_the_rest() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=0.0)
    items = Items()
    for index in range(10):
        wheel.schedule(items[index], index * 1000.0 + 1)
    wheel.schedule(items[99], 10**7)
    assert wheel.due(5000.0) == [0, 1, 2, 3, 4]
    assert wheel.due(10**6) == [5, 6, 7, 8, 9]
    assert len(wheel) == 1
    assert wheel.due(10**7 - 1) == []
    assert wheel.due(10**7) == [99]


def test_going_back_in_time_returns_nothing_new() -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=10.0)
    items = Items()
    wheel.schedule(items["x"], 12.0)
    assert wheel.due(20.0) == ["x"]
    wheel.schedule(items["y"], 15.0)  # before the cursor: next slot
    assert wheel.due(5.0) == []
    assert wheel.due(20.25) == ["y"]


@given(
    # Powers of two: with 0.1 a deadline can come out one float ULP early (0.9 vs
    # 0.9000000000000001), harmless for callers that re-check their deadline.
    resolution=st.sampled_from([0.25, 0.5, 1.0, 0.125, 2.0]),
    start=st.floats(0, 1e6),
    deadlines=st.lists(st.floats(-10, 500), max_size=25),
    steps=st.lists(st.floats(0, 60), min_size=1, max_size=40),
)
def test_wheel_never_early_never_twice_never_lost(
    resolution: float, start: float, deadlines: list[float], steps: list[float]
) -> None:
    wheel: TimingWheel[Any] = TimingWheel(now=start, resolution=resolution)
    items = Items()
    absolute = {index: start + offset for index, offset in enumerate(deadlines)}
    for index, deadline in absolute.items():
        wheel.schedule(items[index], deadline)
    seen: set[int] = set()
    now = start
    for step in steps:
        now += step
        for item in wheel.due(now):
            assert item not in seen, "returned twice"
            seen.add(item)
            assert now >= absolute[item], "returned before its deadline"
    final = now + 600 + resolution
    for item in wheel.due(final):
        assert item not in seen
        seen.add(item)
    assert seen == set(absolute)
    assert len(wheel) == 0


@given(
    start=st.integers(0, 10**6),
    offsets=st.lists(st.integers(1, 4000), max_size=25),
    steps=st.lists(st.integers(1, 400), min_size=1, max_size=40),
)
def test_wheel_with_quarter_second_times_is_exact(
    start: int, offsets: list[int], steps: list[int]
) -> None:
    """With times on the wheel's grid an item comes out on the first call at or after
    its deadline."""
    wheel: TimingWheel[Any] = TimingWheel(now=start / 4)
    items = Items()
    deadlines = {index: (start + offset) / 4 for index, offset in enumerate(offsets)}
    for index, deadline in deadlines.items():
        wheel.schedule(items[index], deadline)
    now = start / 4
    pending = dict(deadlines)
    for step in steps:
        now += step / 4
        expected = {item for item, deadline in pending.items() if deadline <= now}
        assert set(wheel.due(now)) == expected
        for item in expected:
            del pending[item]
    assert len(wheel) == len(pending)


# -- Deadlines ------------------------------------------------------------------------------


def test_deadlines_come_out_in_time_order() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("c", 30.0)
    deadlines.schedule("a", 10.0)
    deadlines.schedule("b", 20.0)
    assert deadlines.due(9.99) == []
    assert deadlines.due(20.0) == ["a", "b"]
    assert len(deadlines) == 1
    assert deadlines.due(100.0) == ["c"]
    assert deadlines.due(100.0) == []
    assert len(deadlines) == 0


def test_equal_deadlines_keep_scheduling_order() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for item in ["z", "m", "a", "q"]:
        deadlines.schedule(item, 5.0)
    assert deadlines.due(5.0) == ["z", "m", "a", "q"]


def test_deadlines_do_not_compare_items() -> None:
    """Keys that cannot be ordered (plain objects) are fine: ties break on insertion
    order."""
    deadlines: Deadlines[object] = Deadlines()
    first, second = object(), object()
    deadlines.schedule(first, 1.0)
    deadlines.schedule(second, 1.0)
    assert deadlines.due(1.0) == [first, second]


def test_rescheduling_a_key_replaces_its_deadline() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.schedule("x", 1.0)
    deadlines.schedule("x", 2.0)
    assert deadlines.due(1.5) == []
    assert deadlines.due(2.5) == ["x"]


@given(
    entries=st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=40),
    cut=st.integers(-1, 21),
)
def test_deadlines_match_a_stable_sort(entries: list[tuple[int, int]], cut: int) -> None:
    deadlines: Deadlines[int] = Deadlines()
    for index, (when, _) in enumerate(entries):
        deadlines.schedule(index, when)
    expected = [i for i, _ in sorted(enumerate(entries), key=lambda e: e[1][0])]
    due_first = deadlines.due(cut)
    assert due_first == [i for i in expected if entries[i][0] <= cut]
    assert deadlines.due(10**9) == [i for i in expected if entries[i][0] > cut]
