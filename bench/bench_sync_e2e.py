"""End-to-end part of bench_sync.py: real pymssql through the TDS emulator into real PostgreSQL."""

import time

import psycopg
import pymssql
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as T

from tests.support.tds_emulator import TdsEmulator


def seed(cur, n):
    """n rows by doubling (INSERT .. SELECT), then the rest."""
    cur.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion NOT NULL)")
    cur.execute("CREATE UNIQUE NONCLUSTERED INDEX ix_t_rv ON dbo.T (rv)")
    cur.execute("INSERT INTO dbo.T (id, name) VALUES (%s, %s)", (0, "customer name 00000000"))
    have = 1
    while have * 2 <= n:
        cur.execute("INSERT INTO dbo.T (id, name) SELECT id + %s, name FROM dbo.T", (have,))
        have *= 2
    if have < n:
        cur.execute("INSERT INTO dbo.T (id, name) SELECT id + %s, name FROM dbo.T WHERE id < %s", (have, n - have))


def run_sync(cluster, db, emu, srcdb, tables, job_suffix="", **kw):
    p = emu.connect_params(srcdb)
    src = M.PymssqlSource(host=p["server"], port=p["port"], user=p["user"], password=p["password"],
                          database=p["database"], batch_size=5000)
    conn = psycopg.connect(**cluster.conninfo(db))
    try:
        eng = S.SyncEngine(src, conn, job="e2e-" + srcdb + job_suffix, owner_role="bench_owner", commit_rows=100000,
                           **kw)
        t0 = time.perf_counter()
        res = eng.run(S.table_specs(tables, "bench"))
        return res["tables"][0], time.perf_counter() - t0
    finally:
        conn.close()


def bench_e2e(cluster, rows, delta_sizes=(100000, 1000000)):
    db = cluster.create_database("bench_e2e")
    with cluster.connect(db) as c:
        c.execute("CREATE ROLE bench_owner NOLOGIN")
        c.execute("CREATE SCHEMA bench AUTHORIZATION bench_owner")
    emu = TdsEmulator(user="sa", password="Bench-pw-1")
    emu.start()
    try:
        # 1. initial load of `rows` rows: the emulator's ceiling (bare pymssql fetch) beside the sync
        cluster.create_database("bench_src")
        emu.add_database("Src", cluster.conninfo("bench_src"))
        mc = pymssql.connect(**emu.connect_params("Src"))
        cur = mc.cursor()
        t0 = time.perf_counter()
        seed(cur, rows)
        seed_s = time.perf_counter() - t0
        cur.execute(T.WATERMARKS)
        hi = T.rv_int(cur.fetchall()[0][0])
        t0 = time.perf_counter()
        cur.execute(T.window_select("dbo", "T", ["id", "name", "rv"], "rv"), (T.rv_param(0), T.rv_param(hi)))
        n = 0
        while True:
            b = cur.fetchmany(5000)
            if not b:
                break
            n += len(b)
        ceiling = n / (time.perf_counter() - t0)
        mc.close()
        loads = {}
        for rep in range(3):  # alternating, best of 3 each: the machine is shared
            for ahead in (0, 2):
                t, dt = run_sync(cluster, db, emu, "Src", [{"source": "[dbo].[T]", "target_table": "L%d_%d" % (
                    ahead, rep)}], job_suffix="-%d-%d" % (ahead, rep), read_ahead=ahead)
                assert t["inserted"] == rows, t
                loads[ahead] = max(loads.get(ahead, 0.0), rows / dt)
        print("end to end, %d narrow rows through the TDS emulator (seeded in %.0fs)" % (rows, seed_s))
        print("  emulator ceiling (bare pymssql fetch)  %10.0f rows/s  1.00x" % ceiling)
        print("  sync initial load, no read-ahead       %10.0f rows/s  %.2fx" % (loads[0], loads[0] / ceiling))
        print("  sync initial load, 2 batches ahead     %10.0f rows/s  %.2fx  (%.2fx the load without)"
              % (loads[2], loads[2] / ceiling, loads[2] / loads[0]))
        # 2. delta of 1,000 changed rows on sources of each size
        times = {}
        for size in delta_sizes:
            name = "D%d" % size
            cluster.create_database(name.lower())
            emu.add_database(name, cluster.conninfo(name.lower()))
            mc = pymssql.connect(**emu.connect_params(name))
            cur = mc.cursor()
            seed(cur, size)
            tname = "T%d" % size
            run_sync(cluster, db, emu, name, [{"source": "[dbo].[T]", "target_table": tname}])
            cur.execute("UPDATE dbo.T SET name = N'changed' WHERE id >= %s AND id < %s", (size // 2, size // 2 + 1000))
            mc.close()
            t, dt = run_sync(cluster, db, emu, name, [{"source": "[dbo].[T]", "target_table": tname}])
            assert t["updated"] == 1000, t
            times[size] = dt
            print("  delta, 1,000 changed rows of %8d: %.3fs" % (size, dt))
        a, b = delta_sizes
        print("  delta ratio %d/%d rows: %.2fx (target <= 1.5x)" % (b, a, times[b] / times[a]))
    finally:
        emu.stop()
