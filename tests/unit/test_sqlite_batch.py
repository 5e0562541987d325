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
