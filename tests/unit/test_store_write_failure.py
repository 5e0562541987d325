"""A write that fails stops the store: its batch's acknowledgements are never sent, it takes
no more work, nothing waits on it, and the broker is told once, on the loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.errors import StoreError
from roost.message import Message
from roost.session import Delivery, Session, SubscriptionOptions
from roost.store.sqlite import DATABASE_NAME, SqliteStore
from store_helpers import count, open_store, query, run_until


def failing_store(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, failures: list[StoreError]
) -> SqliteStore:
    """A store whose database file refuses every message row."""
    open_store(tmp_path, loop).close()
    query(
        tmp_path,
        "CREATE TRIGGER refuse BEFORE INSERT ON messages"
        " BEGIN SELECT RAISE(FAIL, 'disk says no'); END",
    )
    return open_store(tmp_path, loop, on_failure=failures.append)


def test_failed_batch_is_never_acknowledged_and_stops_the_store(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    failures: list[StoreError] = []
    store = failing_store(tmp_path, loop, failures)
    session = Session("c", 3600)
    session.attach_store(store)
    session.subscribe("t", SubscriptionOptions(1))
    session.enqueue(Delivery(Message("t", b"x", 1, False), 1, False), 10, now=0.0)
    acknowledged: list[str] = []
    store.after_commit(lambda: acknowledged.append("batch"))

    run_until(loop, lambda: bool(failures), what="the failure report")
    assert len(failures) == 1
    assert str(tmp_path / DATABASE_NAME) in str(failures[0])
    assert "disk says no" in str(failures[0])
    assert acknowledged == []
    assert count(tmp_path, "subscriptions") == 0  # the batch was rolled back as a whole

    # Stopped: new work is dropped and nothing is left waiting.
    session.subscribe("u", SubscriptionOptions(1))
    store.after_commit(lambda: acknowledged.append("later"))
    store.when_drained(lambda: acknowledged.append("drained"))
    assert store.backlogged
    loop.run_until_complete(asyncio.sleep(0))  # one turn: a flush would be scheduled now
    assert acknowledged == []
    with pytest.raises(StoreError, match="disk says no"):
        store.close()
    assert count(tmp_path, "subscriptions") == 0
    assert len(failures) == 1


def test_an_unexpected_exception_in_the_writer_is_a_failure_too(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    failures: list[StoreError] = []
    store = open_store(tmp_path, loop, on_failure=failures.append)
    # sqlite3 raises OverflowError (not a sqlite3.Error) binding an integer this large.
    store.save_subscription("c", "t", SubscriptionOptions(1, identifier=2**70))
    acknowledged: list[bool] = []
    store.after_commit(lambda: acknowledged.append(True))

    run_until(loop, lambda: bool(failures), what="the failure report")
    assert "OverflowError" in str(failures[0])
    assert isinstance(failures[0].__cause__, OverflowError)
    assert acknowledged == []
    with pytest.raises(StoreError):
        store.close()


def test_close_reports_a_failure_of_its_last_write(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    failures: list[StoreError] = []
    store = failing_store(tmp_path, loop, failures)
    store.save_delivery("c", Delivery(Message("t", b"x", 1, False), 1, False))
    with pytest.raises(StoreError, match="disk says no"):
        store.close()  # the loop never ran: close writes the batch itself
