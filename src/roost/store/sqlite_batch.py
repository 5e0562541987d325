"""How the SQLite writer runs one batch: the hot statements grouped by kind, many rows each.

Run one row at a time, a batch costs a round trip through Python per row, and each one
hands the GIL back and forth with the event loop, which shares the core. Instead the rows
of the statements the publish path records (message and delivery rows) are gathered per
kind and written with as few multi-row statements as possible; any other statement runs
alone, in its place, after what was gathered before it.

Gathering reorders statements between two others, in an order that leaves the same rows:
inserts, then updates, then deletes, and the delivery rows before the message rows whose
deletion they guard. A batch never holds two changes of one row that this order would
swap: a row inserted and completed within one batch is never written at all, and an
update of a row still to be inserted amends the insert (see :mod:`roost.store.sqlite`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from itertools import chain
from typing import Any

# Rows per multi-row statement, largest first: a run of n rows takes at most
# 3 statements per size below the first (n // 256 of the first).
CHUNKS = (256, 64, 16, 4, 1)

Row = tuple[Any, ...]


class Kind:
    """A statement whose rows may be gathered: ``sql`` writes one row, ``many(n)`` n rows
    (None: no multi-row form; the rows go through ``executemany``)."""

    __slots__ = ("many", "rank", "sql")

    def __init__(self, sql: str, rank: int, many: Callable[[int], str] | None) -> None:
        self.sql = sql
        self.rank = rank
        self.many = cache(many) if many is not None else None


def values(
    insert: str, width: int, tail: str = "", literals: Sequence[str] = ()
) -> Callable[[int], str]:
    """``insert`` ("INSERT ... VALUES"), n tuples of ``width`` parameters followed by the
    SQL ``literals`` (columns every row of the kind has the same value in), ``tail``."""
    one = "(" + ", ".join(["?"] * width + list(literals)) + ")"
    return lambda n: insert + " " + ", ".join([one] * n) + tail


class BatchPlan:
    """The gathered kinds of one store, and the batch runner."""

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._kinds = {kind.sql: kind for kind in kinds}
        self._order = sorted(self._kinds.values(), key=lambda kind: kind.rank)

    def run(self, db: sqlite3.Connection, ops: Iterable[Sequence[Any]]) -> None:
        """Execute ``ops`` inside the caller's transaction."""
        kinds = self._kinds
        gathered: dict[str, list[Row]] = {}
        for sql, params in ops:  # each a [statement, parameters] pair
            if sql in kinds:
                rows = gathered.get(sql)
                if rows is None:
                    rows = gathered[sql] = []
                rows.append(params)
                continue
            if gathered:
                self._write(db, gathered)
                gathered = {}
            db.execute(sql, params)
        if gathered:
            self._write(db, gathered)

    def _write(self, db: sqlite3.Connection, gathered: dict[str, list[Row]]) -> None:
        for kind in self._order:
            rows = gathered.get(kind.sql)
            if rows:
                _execute(db, kind, rows)


def _execute(db: sqlite3.Connection, kind: Kind, rows: list[Row]) -> None:
    many = kind.many
    if many is None or len(rows) == 1:
        db.executemany(kind.sql, rows)
        return
    # SQLite before 3.32 takes at most 999 parameters per statement (32,766 since).
    most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0])
    start = 0
    for size in CHUNKS:
        if size > most:
            continue
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            start += size
            if size == 1:
                db.execute(kind.sql, chunk[0])
            else:
                db.execute(many(size), list(chain.from_iterable(chunk)))
