"""SqliteStore batching: what is saved and completed within one batch never reaches the disk,
and what is still pending is written by close()."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.message import Message
from roost.session import Delivery, OutboundState
from roost.store.sqlite import DATABASE_NAME, SqliteStore


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path / DATABASE_NAME) as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count


def delivery(seq: int, message: Message) -> Delivery:
    item = Delivery(message, 1, False)
    item.seq = seq
    return item


def test_delivery_acknowledged_before_the_batch_is_never_written(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = SqliteStore(str(tmp_path), "full", 50, loop)
    store.load(0.0)
    message = Message("t", b"payload", 1, False)
    done, pending = delivery(1, message), delivery(2, message)
    store.save_delivery("c", done)
    store.update_delivery("c", done, OutboundState.AWAITING_PUBACK, 7)
    store.save_delivery("c", pending)
    store.delete_delivery("c", done)
    assert sum(op is not None for op in store._ops) == 2  # the message and ``pending``
    store.close()
    assert rows(tmp_path, "deliveries") == 1
    assert rows(tmp_path, "messages") == 1


def test_message_row_goes_with_its_last_delivery(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = SqliteStore(str(tmp_path), "full", 50, loop)
    store.load(0.0)
    message = Message("t", b"payload", 1, False)
    first = delivery(1, message)
    store.save_delivery("c", first)
    store.update_delivery("c", first, OutboundState.AWAITING_PUBACK, 3)
    store.close()
    assert rows(tmp_path, "messages") == 1

    store = SqliteStore(str(tmp_path), "full", 50, loop)
    state = store.load(0.0)
    assert state.sessions == []  # no session row: the delivery is an orphan for load
    store.delete_delivery("c", first)
    store.close()
    assert rows(tmp_path, "deliveries") == 0
    assert rows(tmp_path, "messages") == 0
