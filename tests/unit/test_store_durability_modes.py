"""When acknowledgements go out in each durability mode, and when the data reaches the file:
``full`` acknowledges after the commit; ``batch`` at once, committing every
``commit_interval_ms``; ``none`` at once, writing on the next turn of the loop. What was
committed is there for a store opened after it, with or without ``close``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.message import Message
from roost.session import Delivery, Session
from roost.store.sqlite import SqliteStore
from store_helpers import open_store, run_until, stored_deliveries

INTERVAL_MS = 300


def queue_one(store: SqliteStore, client_id: str = "c") -> None:
    """A persistent session with one queued QoS 1 message."""
    session = Session(client_id, 3600)
    session.attach_store(store)
    session.enqueue(Delivery(Message("t", b"kept", 1, False), 1, False), 10, now=0.0)


def stored_payloads(store: SqliteStore) -> list[bytes]:
    return [
        delivery.message.payload
        for session in store.load(0.0).sessions
        for delivery in session.queue
    ]


def test_full_acknowledges_after_the_commit(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, "full")
    queue_one(store)
    stored_at_ack: list[int] = []
    store.after_commit(lambda: stored_at_ack.append(len(stored_deliveries(tmp_path))))
    assert stored_at_ack == []
    run_until(loop, lambda: bool(stored_at_ack), what="the acknowledgement")
    assert stored_at_ack == [1]
    store.close()


def test_batch_acknowledges_at_once_and_commits_after_the_interval(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, "batch", commit_interval_ms=INTERVAL_MS)
    queue_one(store)
    stored_at_ack: list[int] = []
    store.after_commit(lambda: stored_at_ack.append(len(stored_deliveries(tmp_path))))
    assert stored_at_ack == [0]  # acknowledged before anything was written
    waited = run_until(loop, lambda: len(stored_deliveries(tmp_path)) == 1, what="the commit")
    assert INTERVAL_MS / 1000 * 0.8 <= waited < INTERVAL_MS / 1000 + 2.0

    # A second store on the file, the first never closed (as after a crash), finds it.
    reader = open_store(tmp_path, loop, "batch")
    assert stored_payloads(reader) == [b"kept"]
    reader.close()
    store.close()


def test_batch_close_writes_what_the_interval_still_holds(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, "batch", commit_interval_ms=60_000)
    queue_one(store)
    acknowledged: list[bool] = []
    store.after_commit(lambda: acknowledged.append(True))
    assert acknowledged == [True]
    store.close()
    assert len(stored_deliveries(tmp_path)) == 1


def test_none_acknowledges_at_once_and_writes_on_the_next_turn(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, "none")
    queue_one(store)
    stored_at_ack: list[int] = []
    store.after_commit(lambda: stored_at_ack.append(len(stored_deliveries(tmp_path))))
    assert stored_at_ack == [0]
    waited = run_until(loop, lambda: len(stored_deliveries(tmp_path)) == 1, what="the write")
    assert waited < INTERVAL_MS / 1000  # no commit interval to wait for
    store.close()

    reopened = open_store(tmp_path, loop, "none")
    assert stored_payloads(reopened) == [b"kept"]
    reopened.close()


@pytest.mark.parametrize("durability", ["full", "batch", "none"])
def test_what_is_committed_survives_close_and_reopen(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, durability: str
) -> None:
    store = open_store(tmp_path, loop, durability, commit_interval_ms=INTERVAL_MS)
    queue_one(store, "first")
    run_until(loop, lambda: len(stored_deliveries(tmp_path)) == 1, what="the commit")
    queue_one(store, "second")  # still pending at close: close writes it
    store.close()

    reopened = open_store(tmp_path, loop, durability)
    assert sorted(s.client_id for s in reopened.load(0.0).sessions) == ["first", "second"]
    assert stored_payloads(reopened) == [b"kept", b"kept"]
    reopened.close()
