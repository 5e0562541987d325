"""The store's bounded backlog: ``backlogged`` above ``max_pending_writes`` statements, and
``when_drained`` callbacks once at most half are left, in every durability mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.session import SubscriptionOptions
from roost.store.memory import MemoryStore
from store_helpers import count, open_store, run_until, subscribe_many

BOUND = 10


@pytest.mark.parametrize("durability", ["full", "batch", "none"])
def test_backlogged_above_the_bound_until_drained_under_half(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, durability: str
) -> None:
    store = open_store(tmp_path, loop, durability, max_pending_writes=BOUND)
    subscribe_many(store, BOUND)
    assert not store.backlogged
    subscribe_many(store, 2, first=BOUND)
    assert store.backlogged

    acknowledged: list[bool] = []
    store.after_commit(lambda: acknowledged.append(True))
    assert acknowledged == ([] if durability == "full" else [True])  # acks wait only in full
    subscriptions_when_drained: list[int] = []
    store.when_drained(lambda: subscriptions_when_drained.append(count(tmp_path, "subscriptions")))
    assert subscriptions_when_drained == []
    run_until(loop, lambda: bool(subscriptions_when_drained), what="the drained callback")
    assert subscriptions_when_drained == [BOUND + 2]  # ran after the commit
    assert not store.backlogged
    assert acknowledged == [True]
    store.close()


def test_when_drained_runs_at_once_under_the_low_water_mark(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, max_pending_writes=BOUND)
    subscribe_many(store, BOUND // 2)
    called: list[bool] = []
    store.when_drained(lambda: called.append(True))
    assert called == [True]
    store.close()


def test_between_the_marks_a_waiting_callback_runs_only_under_half(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, max_pending_writes=BOUND)
    subscribe_many(store, BOUND // 2 + 1)
    assert not store.backlogged
    called: list[int] = []
    store.when_drained(lambda: called.append(count(tmp_path, "subscriptions")))
    assert called == []
    run_until(loop, lambda: bool(called), what="the drained callback")
    assert called == [BOUND // 2 + 1]
    store.close()


def test_batch_mode_drains_after_its_commit_interval(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, "batch", commit_interval_ms=200, max_pending_writes=BOUND)
    subscribe_many(store, BOUND + 1)
    called: list[bool] = []
    store.when_drained(lambda: called.append(True))
    waited = run_until(loop, lambda: bool(called), what="the drained callback")
    assert waited >= 0.15  # nothing is written before the interval is over
    store.close()


def test_memory_store_is_never_backlogged() -> None:
    store = MemoryStore()
    for index in range(1000):
        store.save_subscription("c", f"t/{index}", SubscriptionOptions(1))
    assert not store.backlogged
    called: list[bool] = []
    store.when_drained(lambda: called.append(True))
    assert called == [True]
