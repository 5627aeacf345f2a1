"""Benchmark of the SQL Server -> PostgreSQL sync.

Figures, each beside its baseline from the same run:

1. sink: the PostgreSQL side alone on N narrow rows (int key, nvarchar(50), rowversion) handed over by an
   in-memory source adapter (no SQL Server cost):
   - baseline: raw binary COPY of the same rows into an identical table;
   - initial load through the engine (direct COPY path + watermark per page, then the engine's VACUUM (ANALYZE)
     of the loaded table);
   - staged upsert through the engine (every row an update: COPY to a temp table, one guarded MERGE
     (INSERT .. ON CONFLICT before PostgreSQL 15), watermark) -- the path every delta takes: right after the
     initial load, with the default target fill factor (50: every update HOT) and with 75 (the default before
     issue 10), and the same without the engine's VACUUM after the load (vacuum_after_load=False: the engine
     before, hint bits not yet set when the delta runs).
   Target: sink >= 0.5x raw COPY.
   Then the same PostgreSQL work variant by variant (bench_sync_sink.py: fillfactor/HOT, staging kept
   per window, bigger pages, asynchronous commit, UPDATE .. FROM, unnest), each paired with a raw COPY.
   Then the ideas of issue 10's "Speed" (bench_sync_sink.bench_speed: parallel COPY over two connections,
   the IS DISTINCT FROM guard, wider pages, ON CONFLICT / MERGE from TEMP vs UNLOGGED staging, ANALYZE,
   work_mem, synchronous_commit off, fill factors, DELETE + COPY), every row of the target updated, each
   between two raw COPYs of the same rows: the median of 3 wall ratios and of 3 CPU ratios, with the load.
   The server runs durable (fsync, synchronous_commit, full_page_writes on) unless --fast.
2. end to end through the TDS emulator and the real pymssql (when --emulator): the emulator's ceiling
   (a bare pymssql fetch of the same SELECT) beside the sync's rows/s; then a delta of 1,000 changed rows
   on a 100k-row and on a 1M-row source (target: the 1M-row delta within 1.5x of the 100k-row one).

Run: .venv/bin/python bench/bench_sync.py [--rows 1000000] [--no-variants] [--variants-only] [--speed-only]
     [--fast] [--emulator] [--e2e-rows 1000000] [--delta-sizes 100000,1000000]
Starts its own throwaway PostgreSQL (tests/support/pg.py). Not part of CI.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.env import setup_import_path  # noqa: E402

setup_import_path()

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S  # noqa: E402
from psycopg import sql  # noqa: E402

COLS = [
    {"COLUMN_NAME": "id", "DATA_TYPE": "int", "IS_NULLABLE": "NO"},
    {"COLUMN_NAME": "name", "DATA_TYPE": "nvarchar", "CHARACTER_MAXIMUM_LENGTH": 50, "IS_NULLABLE": "YES"},
    {"COLUMN_NAME": "rv", "DATA_TYPE": "timestamp", "IS_NULLABLE": "NO"},
]


class MemorySource:
    """Adapter handing out pre-built rows (as pymssql returns them) in batches."""

    def __init__(self, rows, batch=5000):
        self.rows = rows
        self.batch = batch
        self.hi = int.from_bytes(rows[-1][2], "big") + 1

    def connect(self):
        return self

    def close(self):
        pass

    def identity(self):
        return ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002")

    def watermarks(self):
        return self.hi, self.hi - 1

    def table_type(self, s, t):
        return "BASE TABLE"

    def columns(self, s, t):
        return [dict(c) for c in COLS]

    def primary_key(self, s, t):
        return ["id"]

    def count(self, *a, **k):
        return len(self.rows)

    def batches(self, schema, table, columns, rv_column=None, lo=None, hi=None):
        for i in range(0, len(self.rows), self.batch):
            yield self.rows[i:i + self.batch]

    def key_batches(self, *a):
        for i in range(0, len(self.rows), self.batch):
            yield [(r[0],) for r in self.rows[i:i + self.batch]]


REPEATS = 3
COMMIT_ROWS = int(os.environ.get("BENCH_COMMIT_ROWS", "50000"))


def make_rows(n, rv0):
    return [(i, "customer name %08d" % i, (rv0 + i).to_bytes(8, "big")) for i in range(n)]


def setup_tenant(conn, name):
    ident = sql.Identifier
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(name + "_owner")))
    conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(name), ident(name + "_owner")))


SINK_RUNS = (  # key, engine keywords
    ("default", {}), ("ff75", {"fillfactor": 75}),
    ("default_novacuum", {"vacuum_after_load": False}),
    ("ff75_novacuum", {"fillfactor": 75, "vacuum_after_load": False}))


def bench_sink(cluster, n):
    """{figure: (median rows/s, median ratio to the same repeat's raw COPY)}: raw_copy, load_<key> (the engine's
    initial load, direct COPY path) and update_<key> (every row updated: the staged MERGE path) per SINK_RUNS."""
    import statistics

    import psycopg

    db = cluster.create_database("bench_sync")
    with cluster.connect(db) as c:
        setup_tenant(c, "bench")
    rows = make_rows(n, 2001)
    got = {}
    for rep in range(REPEATS):  # median of REPEATS: the machine is shared, single runs are noisy
        # baseline: raw binary COPY in one transaction, into a fresh table of the same shape
        with psycopg.connect(**cluster.conninfo(db)) as c:
            c.execute("DROP TABLE IF EXISTS public.raw")
            c.execute("CREATE TABLE public.raw (id integer NOT NULL PRIMARY KEY, name character varying(50),"
                      " rv bytea)")
            c.commit()
            t0 = time.perf_counter()
            with c.cursor() as cur, cur.copy("COPY public.raw (id, name, rv) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "text", "bytea"])
                for r in rows:
                    cp.write_row(r)
            c.commit()
            base = n / (time.perf_counter() - t0)
            got.setdefault("raw_copy", []).append((base, 1.0))

        def run_engine(src, key, rep=rep, **kw):
            conn = psycopg.connect(**cluster.conninfo(db))
            eng = S.SyncEngine(src, conn, job="bench%d_%s" % (rep, key), owner_role="bench_owner",
                               commit_rows=COMMIT_ROWS, **kw)
            t0 = time.perf_counter()
            res = eng.run(S.table_specs([{"source": "[dbo].[T]", "target_table": "T%d_%s" % (rep, key)}], "bench"))
            dt = time.perf_counter() - t0
            conn.close()
            return res["tables"][0], dt

        rows2 = [(i, "renamed %08d" % i, (2001 + n + i).to_bytes(8, "big")) for i in range(n)]
        for key, kw in SINK_RUNS:
            t, dt = run_engine(MemorySource(rows), key, **kw)
            assert t["inserted"] == n, t
            assert t["vacuumed"] is kw.get("vacuum_after_load", True), t
            got.setdefault("load_" + key, []).append((n / dt, n / dt / base))
            t, dt = run_engine(MemorySource(rows2), key, **kw)
            assert t["updated"] == n and t["vacuumed"] is False, t
            got.setdefault("update_" + key, []).append((n / dt, n / dt / base))
    with cluster.connect() as c:
        c.execute("DROP DATABASE bench_sync WITH (FORCE)")
        c.execute("DROP ROLE bench_owner")
    med = statistics.median
    return {k: (med(r[0] for r in v), med(r[1] for r in v)) for k, v in got.items()}


def speed(cluster, n):
    """Issue 10's speed ideas beside raw COPY (bench_sync_sink.bench_speed), with the machine's load."""
    from bench_sync_sink import bench_speed

    db = cluster.create_database("bench_sync_speed")
    load0 = os.getloadavg()[0]
    v = bench_speed(cluster, db, n, COMMIT_ROWS, REPEATS)
    print("speed ideas (issue 10) on %d rows, every row updated, pages of %d, temp_buffers 64MB; median of %d, each "
          "run between two raw COPYs of the same rows (load %.1f -> %.1f on %d cores)"
          % (n, COMMIT_ROWS, REPEATS, load0, os.getloadavg()[0], os.cpu_count()))
    print("  %-44s %10s  %5s  %5s  %4s  %5s  %s" % ("variant", "rows/s", "wall", "CPU", "HOT", "size", "wall ratios"))
    for name, (ratio, ratios, cpu, rate, hot, size) in v.items():
        print("  %-44s %10.0f  %.2fx  %.2fx  %3.0f%%  %.2fx  %s" % (
            name, rate, ratio, cpu, 100 * hot, size, " ".join("%.2f" % r for r in ratios)))
    print("  (wall and CPU: raw COPY's over the variant's; CPU counts this process and every backend it used, so it"
          " shows the idle-machine ratio of one connection; size: the target after the update over the raw table)")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--emulator", action="store_true")
    ap.add_argument("--no-variants", action="store_true", help="skip the variant-by-variant sink figures")
    ap.add_argument("--variants-only", action="store_true", help="only the variant-by-variant sink figures")
    ap.add_argument("--speed-only", action="store_true", help="only issue 10's speed ideas (bench_speed)")
    ap.add_argument("--fast", action="store_true", help="keep the harness's fsync=off server")
    ap.add_argument("--e2e-rows", type=int, default=1000000)
    ap.add_argument("--delta-sizes", default="100000,1000000", help="source sizes for the 1,000-row delta")
    args = ap.parse_args()
    from tests.support.pg import TestCluster

    cluster = TestCluster()
    try:
        if not args.fast:  # as a production server: commits wait for the disk
            with cluster.connect() as c:
                for k in ("fsync", "synchronous_commit", "full_page_writes"):
                    c.execute(sql.SQL("ALTER SYSTEM SET {} = on").format(sql.Identifier(k)))
                c.execute("SELECT pg_reload_conf()")
        if not (args.variants_only or args.speed_only):
            r = bench_sink(cluster, args.rows)
            print("sink, %d narrow rows (PostgreSQL side only, median of %d, each ratio against the raw COPY of its "
                  "repeat, %s server, load %.1f)" % (args.rows, REPEATS, "fsync=off" if args.fast else "durable",
                                                     os.getloadavg()[0]))
            rows = [("raw binary COPY (baseline)", "raw_copy", ""),
                    ("engine initial load (direct)", "load_default",
                     "fill factor %d, with its VACUUM (ANALYZE)" % S.TARGET_FILLFACTOR),
                    ("  the same, fill factor 75", "load_ff75", ""),
                    ("  without the VACUUM", "load_default_novacuum", "the engine before"),
                    ("  without the VACUUM, fill factor 75", "load_ff75_novacuum", ""),
                    ("engine staged upsert (updates)", "update_default",
                     "every row, right after the initial load; fill factor %d; target >= 0.50x; first measured "
                     "0.19x" % S.TARGET_FILLFACTOR),
                    ("  the same, fill factor 75", "update_ff75", ""),
                    ("  no VACUUM after the load", "update_default_novacuum", "the engine before"),
                    ("  no VACUUM after the load, ff 75", "update_ff75_novacuum", "")]
            for label, key, note in rows:
                rate, ratio = r[key]
                print("  %-34s %10.0f rows/s  %.2fx  %s" % (label, rate, ratio, note))
            sys.stdout.flush()
        if not (args.no_variants or args.speed_only):
            from bench_sync_sink import SCATTERED_VARIANTS, bench_variants

            db = cluster.create_database("bench_sync_lab")
            for title, changed, variants in (
                    ("every row updated, in key order", None, None),
                    ("a delta: %d random rows updated" % (args.rows // 10), args.rows // 10, SCATTERED_VARIANTS)):
                v = bench_variants(cluster, db, args.rows, COMMIT_ROWS, REPEATS, changed,
                                   **({"variants": variants} if variants else {}))
                print("sink variants on %d rows, %s, pages of %d; each beside a raw COPY of as many rows just "
                      "before it (median of %d)" % (args.rows, title, COMMIT_ROWS, REPEATS))
                for name, (rate, ratio, raw, hot) in v.items():
                    print("  %-40s %10.0f rows/s  %.2fx  (raw COPY %.0f rows/s)  HOT %3.0f%%"
                          % (name, rate, ratio, raw, 100 * hot))
                sys.stdout.flush()
        if not args.no_variants or args.speed_only:
            speed(cluster, args.rows)
        if args.emulator and not args.speed_only:
            from bench_sync_e2e import bench_e2e  # needs the TDS emulator

            bench_e2e(cluster, args.e2e_rows, tuple(int(x) for x in args.delta_sizes.split(",")))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
