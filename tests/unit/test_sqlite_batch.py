"""The SQLite writer's multi-row statements stay within the SQLite library's parameter
limit: 999 before SQLite 3.32, which some systems still ship."""

from __future__ import annotations

import sqlite3

from roost.store.sqlite_batch import BatchPlan, Kind, values

INSERT = "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def test_many_wide_rows_are_written_under_a_999_parameter_limit() -> None:
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    db.execute("CREATE TABLE t (a, b, c, d, e, f, g, h, i)")
    plan = BatchPlan([Kind(INSERT, 0, values("INSERT INTO t VALUES", 9))])
    rows = [tuple(range(n, n + 9)) for n in range(300)]  # 300 x 9 = 2,700 parameters
    plan.run(db, [(INSERT, row) for row in rows])
    assert db.execute("SELECT * FROM t ORDER BY a").fetchall() == rows


def test_columns_given_as_sql_literals_are_written_in_every_row() -> None:
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    db.execute("CREATE TABLE t (a, b, c, d)")
    rows_of = values("INSERT INTO t VALUES", 2, literals=("X'00'", "NULL"))
    one_row = rows_of(1)
    assert one_row == "INSERT INTO t VALUES (?, ?, X'00', NULL)"
    plan = BatchPlan([Kind(one_row, 0, rows_of)])
    rows = [(n, bytearray(b"p%d" % n)) for n in range(600)]  # 600 x 2 = 1,200 parameters
    plan.run(db, [(one_row, row) for row in rows])
    written = db.execute("SELECT * FROM t ORDER BY a").fetchall()
    assert written == [(n, b"p%d" % n, b"\x00", None) for n in range(600)]
