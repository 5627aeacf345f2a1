"""The TDS emulator's ceiling: rows/s streamed to the real pymssql for a narrow table.

Table ``dbo.narrow (id int PRIMARY KEY, name nvarchar(50), rv rowversion)`` with N rows. Figures from the
same run:

- baseline: the same SELECT read straight from the backing PostgreSQL by psycopg (what the emulator itself
  has to fetch before encoding TDS);
- emulator: ``SELECT id, name, rv FROM dbo.narrow ORDER BY rv`` through pymssql (fetchmany, arraysize 5000),
  i.e. T-SQL translation + PostgreSQL + TDS encoding + FreeTDS decoding + pymssql objects;
- the emulator with 4 concurrent clients (aggregate rows/s);
- the emulator in its own process (``python -m tests.support.tds_emulator``), as when a benchmark must not
  share the GIL between the server and the client.

Run: .venv/bin/python bench/bench_tds.py [--rows 200000]
Starts its own throwaway PostgreSQL (tests/support/pg.py). Not part of CI.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pymssql  # noqa: E402

from tests.support.pg import TestCluster  # noqa: E402
from tests.support.tds_emulator import TdsEmulator  # noqa: E402

QUERY = "SELECT id, name, rv FROM dbo.narrow ORDER BY rv"


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return n, min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cluster = TestCluster()
    emu = TdsEmulator(user="sa", password="Bench-Pa55")
    try:
        cluster.create_database("bench_tds")
        emu.add_database("Bench", cluster.conninfo("bench_tds"))
        emu.start()
        params = emu.connect_params("Bench")
        with contextlib.closing(pymssql.connect(**params)) as conn:
            conn.cursor().execute("CREATE TABLE dbo.narrow (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL,"
                                  " rv rowversion)")
        with emu.database("Bench").connect() as pg:
            pg.execute("INSERT INTO dbo.narrow (id, name) SELECT g, 'name ' || g FROM generate_series(1, %s) g",
                       (args.rows,))
            pg.execute("VACUUM ANALYZE dbo.narrow")

        def psycopg_read():
            with emu.database("Bench").connect() as pg:
                cur = pg.cursor()
                cur.execute("SELECT id, name, rv FROM dbo.narrow ORDER BY rv")
                n = 0
                while True:
                    rows = cur.fetchmany(5000)
                    if not rows:
                        return n
                    n += len(rows)

        def pymssql_read(p=params):
            with contextlib.closing(pymssql.connect(**p, arraysize=5000)) as conn:
                cur = conn.cursor()
                cur.execute(QUERY)
                n = 0
                while True:
                    rows = cur.fetchmany()
                    if not rows:
                        return n
                    n += len(rows)

        def concurrent(k):
            def run():
                counts = []
                threads = [threading.Thread(target=lambda: counts.append(pymssql_read())) for _ in range(k)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return sum(counts)
            return run

        n_pg, t_pg = best(psycopg_read, args.repeat)
        n_em, t_em = best(pymssql_read, args.repeat)
        n_c4, t_c4 = best(concurrent(4), 1)
        with tempfile.NamedTemporaryFile("w", prefix="bench-tds-pw-") as pw:
            os.chmod(pw.name, 0o600)
            pw.write("Bench-Pa55\n")
            pw.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.tds_emulator", "--pg-dsn", cluster.dsn("bench_tds"), "--port",
                 "0", "--user", "sa", "--password-file", pw.name, "--database", "Bench"],
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.PIPE, text=True)
            try:
                addr = json.loads(proc.stdout.readline())
                sub = dict(params, server=addr["host"], port=str(addr["port"]))
                n_sp, t_sp = best(lambda: pymssql_read(sub), args.repeat)
            finally:
                proc.terminate()
                proc.wait(10)
                proc.stdout.close()
        assert n_pg == n_em == n_sp == args.rows and n_c4 == 4 * args.rows
        print("rows: %d narrow (int, nvarchar(50), rowversion); best of %d" % (args.rows, args.repeat))
        print("baseline  psycopg straight from PostgreSQL : %9.0f rows/s (%.2f s)" % (n_pg / t_pg, t_pg))
        print("emulator  pymssql through TDS, 1 client    : %9.0f rows/s (%.2f s)  = %.2fx baseline"
              % (n_em / t_em, t_em, (n_em / t_em) / (n_pg / t_pg)))
        print("emulator  pymssql through TDS, 4 clients   : %9.0f rows/s aggregate (%.2f s)" % (n_c4 / t_c4, t_c4))
        print("emulator  in its own process, 1 client     : %9.0f rows/s (%.2f s)  = %.2fx baseline"
              % (n_sp / t_sp, t_sp, (n_sp / t_sp) / (n_pg / t_pg)))
    finally:
        emu.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
