"""The every-row delta's MERGE reads only the page's key range of the target (issue 10, speed): without the bound
the planner hashes the whole target per page (small tables) or merge-joins from the key index's first entry up to
the page's last key (large ones), so a window of k pages reads the target k times or about k*k/2 pages' worth. The
bounds are constants, so that a page of scattered keys (a range as wide as the table) keeps its plan."""

import time

import pytest
from psycopg import sql

from .fake_source import COLS, FakeDb, FakeSource, run, source_rows, target_rows

pytestmark = pytest.mark.sync


def tuples_read(conn, tenant):
    """Target rows read by sequential scans and fetched through indexes, as far as the statistics have them."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.commit()
    with tenant.connect() as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        return c.execute("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_all_tables"
                         " WHERE relid = %s::regclass", (sql.Identifier(tenant.name, "T").as_string(c),)).fetchone()[0]


def test_every_row_delta_reads_each_pages_key_range_only(tenant, pg_conn):
    n, page = 8000, 1000
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(n):
        db.write("dbo", "T", id=i, name="n%05d" % i)
    run(FakeSource(db, batch_size=500), pg_conn, tenant, commit_rows=page)
    for i in range(n):
        db.write("dbo", "T", id=i, name="r%05d" % i)
    before = tuples_read(pg_conn, tenant)
    t = run(FakeSource(db, batch_size=500), pg_conn, tenant, commit_rows=page)["tables"][0]
    assert (t["inserted"], t["updated"]) == (0, n), t
    deadline = time.monotonic() + 30
    while True:
        reads = tuples_read(pg_conn, tenant) - before
        if reads >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reads < 2 * n, reads  # the page's rows, not the table per page
    assert target_rows(tenant) == source_rows(db)


@pytest.mark.parametrize("dtype, extra, make", [
    ("uniqueidentifier", None, lambda i: __import__("uuid").UUID(int=i * 7919)),
    ("varbinary", {"CHARACTER_MAXIMUM_LENGTH": 16}, lambda i: bytes([255 - i, i])),
    ("bit", None, lambda i: bool(i)),
    ("nvarchar", {"CHARACTER_MAXIMUM_LENGTH": 20}, lambda i: "Ü%d b" % (9 - i)),
    ("datetimeoffset", {"DATETIME_PRECISION": 7}, lambda i: __import__("datetime").datetime(
        2026, 1, 1, 12, i, tzinfo=__import__("datetime").timezone.utc)),
])
def test_the_range_bound_works_for_every_first_key_type(tenant, pg_conn, dtype, extra, make):
    """The bound orders the page's first key column (no min()/max() exists for uuid, bytea or boolean)."""
    db = FakeDb()
    db.create("dbo", "K", [("k1", dtype, extra), ("k2", "int", None), ("v", "int", None),
                           ("rv", "timestamp", None)], ["k1", "k2"])
    keys = [(make(i % 2 if dtype == "bit" else i), i) for i in range(6)]
    for i, (k1, k2) in enumerate(keys):
        db.write("dbo", "K", k1=k1, k2=k2, v=i)
    run(FakeSource(db), pg_conn, tenant, tables=["[dbo].[K]"])
    for i, (k1, k2) in enumerate(keys):
        db.write("dbo", "K", k1=k1, k2=k2, v=100 + i)
    db.write("dbo", "K", k1=keys[0][0], k2=99, v=7)
    t = run(FakeSource(db), pg_conn, tenant, tables=["[dbo].[K]"])["tables"][0]
    assert (t["inserted"], t["updated"]) == (1, 6), t
    assert target_rows(tenant, "K", "k2, v") == sorted([(k2, 100 + i) for i, (_k1, k2) in enumerate(keys)] + [(99, 7)])
