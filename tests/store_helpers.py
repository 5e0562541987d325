"""Helpers for the SQLite store tests: a real SqliteStore driven by a real event loop, and
what its database file holds, read through a second connection."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roost.errors import StoreError
from roost.session import SubscriptionOptions
from roost.store.base import Store
from roost.store.deferred import decode_recipients
from roost.store.sqlite import DATABASE_NAME, DEFER_SECONDS, SqliteStore

TIMEOUT = 5.0


def unexpected_failure(error: StoreError) -> None:
    raise AssertionError(f"the store failed: {error}")


def open_store(
    data_dir: Path,
    loop: asyncio.AbstractEventLoop,
    durability: str = "full",
    commit_interval_ms: int = 50,
    max_pending_writes: int = 100_000,
    on_failure: Callable[[StoreError], None] = unexpected_failure,
    defer_seconds: float = DEFER_SECONDS,
) -> SqliteStore:
    """A SqliteStore on ``data_dir``, loaded at broker time 0 as the broker would."""
    store = SqliteStore(
        str(data_dir),
        durability,
        commit_interval_ms,
        loop,
        max_pending_writes=max_pending_writes,
        on_failure=on_failure,
        defer_seconds=defer_seconds,
    )
    store.load(0.0)
    return store


def query(data_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read from the database file by a connection of its own."""
    with sqlite3.connect(data_dir / DATABASE_NAME) as db:
        return db.execute(sql, args).fetchall()


def count(data_dir: Path, table: str) -> int:
    rows: int = query(data_dir, f"SELECT count(*) FROM {table}")[0][0]
    return rows


def orphan_messages(data_dir: Path) -> int:
    """Message rows no delivery references (neither a delivery row nor their own list)."""
    rows: int = query(
        data_dir,
        "SELECT count(*) FROM messages WHERE recipients IS NULL"
        " AND id NOT IN (SELECT message_id FROM deliveries)",
    )[0][0]
    return rows


def stored_deliveries(data_dir: Path) -> list[tuple[str, int]]:
    """(client id, seq) of every delivery the file holds, sorted: those with a row of their
    own and those listed in their message's row (roost.store.deferred)."""
    with sqlite3.connect(data_dir / DATABASE_NAME) as db:
        # One snapshot for both reads: the writer may move a delivery from its message's
        # list to a row of its own between two.
        db.execute("BEGIN")
        stored = set(db.execute("SELECT client_id, seq FROM deliveries").fetchall())
        lists = db.execute("SELECT recipients FROM messages WHERE recipients > ''").fetchall()
        db.rollback()
    for (text,) in lists:
        stored.update((client_id, seq) for client_id, seq, _, _ in decode_recipients(text))
    return sorted(stored)


def subscribe_many(store: Store, how_many: int, first: int = 0) -> None:
    """Record ``how_many`` changes, one subscription each (one statement or command)."""
    for index in range(first, first + how_many):
        store.save_subscription("c", f"t/{index}", SubscriptionOptions(1))


def commit(store: Store, loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop until everything recorded so far is committed (durability "full")."""
    done = loop.create_future()
    store.after_commit(lambda: done.set_result(None))
    loop.run_until_complete(asyncio.wait_for(done, TIMEOUT))


def run_until(
    loop: asyncio.AbstractEventLoop,
    predicate: Callable[[], bool],
    timeout: float = TIMEOUT,
    what: str = "condition",
) -> float:
    """Run the loop until ``predicate`` holds; returns the seconds it took. Fails after
    ``timeout``."""
    start = time.monotonic()

    async def watch() -> None:
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.001)

    loop.run_until_complete(watch())
    return time.monotonic() - start
