"""Benchmark of the reverse direction (direction: both): changed PostgreSQL rows applied to SQL Server through the
TDS emulator and the real pymssql.

Figures, each beside the baseline measured in the same run:

- baseline: the emulator's own write ceiling, a plain batched insert of the same N rows (multi-row INSERT of
  1000 rows per statement, one transaction per statement) into an empty table of the same shape (primary key and
  the unique rowversion index dbo.T has; the same insert into a table without that index is printed too);
- reverse apply of N changed rows (every row of the table updated in PostgreSQL, captured by the trigger):
  the engine's run of the table (reverse batches: conflict check read, updates, new rowversions read back,
  applied position, then the PostgreSQL half), rows/s and the ratio to the baseline (issue target >= 0.5x);
- reverse apply of N new rows (inserted in PostgreSQL): the multi-row insert path;
- reverse apply of N deleted rows (those N new rows deleted in PostgreSQL): tombstones, DELETE ... IN per 500 keys;
- capture cost: the PostgreSQL UPDATE of N rows with the trigger beside the same UPDATE without it.

The emulator runs in its own process, as SQL Server does (bench_sync_parallel.start_emulator): in the bench's
own process its Python threads would share one interpreter lock with the engine's, so every step of the engine's
own work would also stall the "server" (measured 2026-12-07, before the reverse batches overlapped: updates
0.40x in process, 0.46x out of it).

Run: .venv/bin/python bench/bench_sync_bidir.py [--rows 100000]
Starts its own throwaway PostgreSQL (tests/support/pg.py) and the emulator. Not part of CI.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.env import setup_import_path  # noqa: E402

setup_import_path()

import psycopg  # noqa: E402
import pymssql  # noqa: E402
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M  # noqa: E402
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S  # noqa: E402

from bench.bench_sync_e2e import seed  # noqa: E402
from bench.bench_sync_parallel import start_emulator  # noqa: E402

TABLES = [{"source": "[dbo].[T]", "direction": "both", "conflict_policy": "target_wins"}]


def run(cluster, db, p):
    src = M.PymssqlSource(host=p["host"], port=p["port"], user=p["user"], password=p["password"],
                          database=p["database"], batch_size=5000)
    conn = psycopg.connect(**cluster.conninfo(db))
    try:
        eng = S.SyncEngine(src, conn, job="bench-reverse", owner_role="bench_owner", commit_rows=100000)
        t0 = time.perf_counter()
        res = eng.run(S.table_specs(TABLES, "bench"))
        return res["tables"][0], time.perf_counter() - t0
    finally:
        conn.close()


def insert_ceiling(cur, n, table, rv_index):
    cur.execute("CREATE TABLE dbo.%s (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion NOT NULL)"
                % table)
    if rv_index:  # as dbo.T (bench_sync_e2e.seed)
        cur.execute("CREATE UNIQUE NONCLUSTERED INDEX ix_%s_rv ON dbo.%s (rv)" % (table, table))
    t0 = time.perf_counter()
    for k in range(0, n, 1000):
        ids = range(k, min(n, k + 1000))
        cur.execute("BEGIN TRAN")
        values = ", ".join(["(%s, %s)"] * len(ids))
        cur.execute("INSERT INTO dbo.%s (id, name) VALUES %s" % (table, values),  # noqa: S608 (placeholders only)
                    tuple(v for i in ids for v in (i, "pg name %08d" % i)))
        cur.execute("COMMIT TRAN")
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100000)
    args = ap.parse_args()
    n = args.rows
    from tests.support.pg import TestCluster

    cluster = TestCluster()
    tmp = tempfile.mkdtemp(prefix="bq-bench-bidir-")
    emu = None
    try:
        password_file = os.path.join(tmp, "sa.pw")
        with open(os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("Bench-pw-1")
        emu, p = start_emulator(cluster, "Src", password_file, "Bench-pw-1")
        db = cluster.create_database("bench_rev")
        with cluster.connect(db) as c:
            c.execute("CREATE ROLE bench_owner NOLOGIN")
            c.execute("CREATE SCHEMA bench AUTHORIZATION bench_owner")
        mc = pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"], password=p["password"],
                             database=p["database"], tds_version="7.4", autocommit=True)
        cur = mc.cursor()
        seed(cur, n)
        t, dt = run(cluster, db, p)  # initial forward load, installs the capture trigger
        assert t["inserted"] == n, t
        ceiling = insert_ceiling(cur, n, "B", rv_index=True)
        ceiling_noindex = insert_ceiling(cur, n, "B2", rv_index=False)

        with cluster.connect(db) as c:
            c.execute('CREATE TABLE bench.plain AS SELECT * FROM bench."T"')
            t0 = time.perf_counter()
            c.execute("UPDATE bench.plain SET name = 'pg name ' || id")
            plain_upd = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.execute('UPDATE bench."T" SET name = \'pg name \' || id')
            trig_upd = n / (time.perf_counter() - t0)
        t, dt = run(cluster, db, p)
        rev = t["reverse"]
        assert rev["updated"] == n and rev["applied"] == n, rev
        upd_rate = n / dt

        with cluster.connect(db) as c:
            c.execute("INSERT INTO bench.\"T\" (id, name) SELECT g, 'new ' || g"
                      " FROM generate_series(%s::int, %s::int) g", (n, 2 * n - 1))
        t, dt = run(cluster, db, p)
        assert t["reverse"]["inserted"] == n, t["reverse"]
        ins_rate = n / dt

        with cluster.connect(db) as c:
            c.execute('DELETE FROM bench."T" WHERE id >= %s', (n,))
        t, dt = run(cluster, db, p)
        assert t["reverse"]["deleted"] == n, t["reverse"]
        del_rate = n / dt

        # an idle run afterwards: nothing written on either side
        t, dt = run(cluster, db, p)
        idle = (t["reverse"]["applied"], t["updated"], t["inserted"])

        print("reverse sync (PostgreSQL -> SQL Server) through the TDS emulator, %d rows" % n)
        print("  emulator write ceiling: batched INSERT (baseline) %9.0f rows/s  1.00x" % ceiling)
        print("  (the same INSERT into a table without the rowversion index: %.0f rows/s)" % ceiling_noindex)
        print("  reverse apply, %d updated rows              %9.0f rows/s  %.2fx  (target >= 0.50x)"
              % (n, upd_rate, upd_rate / ceiling))
        print("  reverse apply, %d inserted rows             %9.0f rows/s  %.2fx" % (n, ins_rate, ins_rate / ceiling))
        print("  reverse apply, %d deleted rows              %9.0f rows/s  %.2fx" % (n, del_rate, del_rate / ceiling))
        print("  capture: UPDATE of %d rows with the trigger %9.0f rows/s  %.2fx of the same UPDATE without it "
              "(%.0f rows/s)" % (n, trig_upd, trig_upd / plain_upd, plain_upd))
        print("  idle run afterwards: reverse applied %d, forward updated %d, inserted %d" % idle)
        mc.close()
    finally:
        if emu is not None:
            emu.terminate()
            emu.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        cluster.stop()


if __name__ == "__main__":
    main()
