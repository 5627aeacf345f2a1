"""Benchmark: N sync jobs (N remote databases) run concurrently vs one after another, as AWX job slices or
several runner hosts would run them.

Each remote database is its own TDS emulator process (its own "SQL Server") on its own backing database; each
job is its own process (tests/integration/sync/run_engine.py, the engine the mssql_sync module runs) syncing one
table of ROWS narrow rows into its own target table of one tenant, in one shared platform PostgreSQL.

Figures, from the same run:
- baseline: the N jobs one after another (wall time, rows/s);
- the N jobs at once (wall time, rows/s) and the ratio serial / concurrent;
- safety: two runs of the SAME job started together: one syncs, the other reports locked (exit 3), and the
  target holds each row once.

Run: .venv/bin/python bench/bench_sync_parallel.py [--jobs 4] [--rows 50000]
Starts its own throwaway PostgreSQL (tests/support/pg.py). Not part of CI.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.env import PYTHON, REPO, setup_import_path  # noqa: E402

setup_import_path()

import psycopg  # noqa: E402
import pymssql  # noqa: E402
from psycopg import sql  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sync_e2e import seed  # noqa: E402


def start_emulator(cluster, name, password_file, password):
    cluster.create_database("bp_" + name.lower())
    dsn = psycopg.conninfo.make_conninfo(**cluster.conninfo("bp_" + name.lower()))
    p = subprocess.Popen([PYTHON, "-m", "tests.support.tds_emulator", "--pg-dsn", dsn, "--port", "0", "--user", "sa",
                          "--password-file", password_file, "--database", name],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line:
        raise SystemExit("emulator %s: %s" % (name, p.stderr.read()))
    port = json.loads(line)["port"]
    return p, {"host": "127.0.0.1", "port": port, "user": "sa", "password": password, "database": name,
               "tds_version": "7.4", "login_timeout": 10, "batch_size": 5000}


def spawn(cfg):
    p = subprocess.Popen([PYTHON, "-m", "tests.integration.sync.run_engine"], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write(json.dumps(cfg))
    p.stdin.close()
    p.stdin = None
    return p


def finish(p):
    out, err = p.communicate(timeout=3600)
    return p.returncode, (json.loads(out) if out.strip() else {"error": err[-500:]})


def job_cfg(cluster, db, src, job, target, lock_timeout=0.5):
    return {"source": src, "pg": cluster.conninfo(db), "job": job, "tenant": "bench",
            "tables": [{"source": "[dbo].[T]", "target_table": target}],
            "engine": {"commit_rows": 50000, "lock_timeout": lock_timeout, "retry_delay": 0.05}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--rows", type=int, default=50000)
    args = ap.parse_args()

    from tests.support.pg import TestCluster

    cluster = TestCluster()
    emus = []
    tmp = tempfile.mkdtemp(prefix="bq-bench-par-")
    try:
        db = cluster.create_database("bench_parallel")
        with cluster.connect(db) as c:
            c.execute("CREATE ROLE bench_owner NOLOGIN")
            c.execute("CREATE SCHEMA bench AUTHORIZATION bench_owner")
        password = "Bench-" + secrets.token_urlsafe(12)
        pwfile = os.path.join(tmp, "pw")
        with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(password)
        sources = []
        t0 = time.perf_counter()
        for i in range(args.jobs):
            p, src = start_emulator(cluster, "Src%d" % i, pwfile, password)
            emus.append(p)
            conn = pymssql.connect(server=src["host"], port=str(src["port"]), user="sa", password=password,
                                   database=src["database"], autocommit=True, tds_version="7.4")
            seed(conn.cursor(), args.rows)
            conn.close()
            sources.append(src)
        print("%d remote databases (one TDS emulator process each) of %d narrow rows, seeded in %.0fs"
              % (args.jobs, args.rows, time.perf_counter() - t0))
        total = args.jobs * args.rows

        def run(mode):
            cfgs = [job_cfg(cluster, db, src, "%s-%d" % (mode, i), "t_%s_%d" % (mode, i))
                    for i, src in enumerate(sources)]
            t0 = time.perf_counter()
            if mode == "serial":
                results = [finish(spawn(c)) for c in cfgs]
            else:
                procs = [spawn(c) for c in cfgs]
                results = [finish(p) for p in procs]
            wall = time.perf_counter() - t0
            for rc, res in results:
                assert rc == 0 and res["tables"][0]["inserted"] == args.rows, (rc, res)
            return wall

        serial = run("serial")
        concurrent = run("concurrent")
        print("  baseline: %d jobs one after another  %7.2fs  %9.0f rows/s  1.00x"
              % (args.jobs, serial, total / serial))
        print("  %d jobs at once                      %7.2fs  %9.0f rows/s  %.2fx (serial / concurrent)"
              % (args.jobs, concurrent, total / concurrent, serial / concurrent))
        print("  (on %d CPU cores; the platform PostgreSQL, the emulators and the jobs share them)" % os.cpu_count())

        # safety: two runs of one job at once -> one syncs, one is refused by the job's lock
        with pymssql.connect(server=sources[0]["host"], port=str(sources[0]["port"]), user="sa", password=password,
                             database=sources[0]["database"], autocommit=True, tds_version="7.4") as mc:
            mc.cursor().execute("UPDATE dbo.T SET name = N'changed' WHERE id < 20000")
        cfg = job_cfg(cluster, db, sources[0], "concurrent-0", "t_concurrent_0", lock_timeout=0)
        pair = [spawn(cfg), spawn(cfg)]
        rcs = sorted(finish(p)[0] for p in pair)
        with cluster.connect(db) as c:
            n, distinct = c.execute(sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(
                sql.Identifier("bench", "t_concurrent_0"))).fetchone()
        print("  same job twice at once: exit codes %s (0 synced, 3 locked); target rows %d, distinct ids %d"
              % (rcs, n, distinct))
        assert n == distinct == args.rows and 0 in rcs, (rcs, n, distinct)
    finally:
        for p in emus:
            p.terminate()
            p.wait(10)
        cluster.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
