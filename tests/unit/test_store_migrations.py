"""Schema versions: an older database file is upgraded in place with its data intact; a
newer one is refused with a StoreError naming the file, and left as it was."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from roost.errors import StoreError
from roost.store.sqlite import DATABASE_NAME, MIGRATIONS, SCHEMA_VERSION
from store_helpers import open_store, query


def database_at_version_1(data_dir: Path) -> None:
    """A file as the first release of the schema wrote it, with a session that has a
    subscription and a queued message, and a retained message."""
    data_dir.mkdir()
    with sqlite3.connect(data_dir / DATABASE_NAME) as db:
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO sessions VALUES ('old', 3600, NULL, NULL, NULL, NULL, 0, NULL, NULL)"
        )
        db.execute("INSERT INTO subscriptions VALUES ('old', 'a/#', 1, 0, 0, 0, NULL)")
        db.execute("INSERT INTO messages VALUES (1, 'a/b', x'6b657074', 1, 0, x'00', 'p', NULL)")
        db.execute("INSERT INTO deliveries VALUES ('old', 1, 1, 1, 0, '', 0, 0)")
        db.execute("INSERT INTO retained VALUES ('r', x'6f6e', 1, x'00', 'p', NULL)")


def test_version_1_is_upgraded_with_its_data(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    data_dir = tmp_path / "data"
    database_at_version_1(data_dir)

    store = open_store(data_dir, loop)
    state = store.load(0.0)
    [session] = state.sessions
    assert session.client_id == "old"
    assert list(session.subscriptions) == ["a/#"]
    assert [(d.message.topic, d.message.payload) for d in session.queue] == [("a/b", b"kept")]
    assert [(m.topic, m.payload) for m in state.retained] == [("r", b"on")]
    assert state.transactions == []  # the table of a later version exists, empty
    store.close()
    assert query(data_dir, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(data_dir, "SELECT count(*) FROM transaction_ops") == [(0,)]


def test_a_newer_schema_is_refused_naming_the_file(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    data_dir = tmp_path / "data"
    open_store(data_dir, loop).close()
    query(data_dir, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match="newer") as refused:
        open_store(data_dir, loop)
    assert str(data_dir / DATABASE_NAME) in str(refused.value)
    assert query(data_dir, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
