"""Benchmark: tracking an N-table tenant schema in Hasura, our mirror vs per-table track calls, same run.

Both go through the same client (ansible's open_url, as the modules' fetch_url) to the metadata double on
127.0.0.1, whose catalog checks run against a real PostgreSQL through the tenant's own login role.
- baseline: one ``pg_track_table`` request per table (what users script today, hasura/graphql-engine#6543);
- ours: ``run_reconcile`` with mirror (export + inconsistencies + ONE write), then a second mirror (no write).

    .venv/bin/python bench/bench_hasura.py [--tables 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.env import setup_import_path  # noqa: E402

setup_import_path()
from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H  # noqa: E402
from ansible_collections.berqenas.platform.plugins.module_utils import tenants as T  # noqa: E402

from tests.support.hasura_double import HasuraDoubleServer  # noqa: E402
from tests.support.pg import TestCluster  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cluster = TestCluster()
    srv = HasuraDoubleServer(admin_secret="bench-secret")
    creds = tempfile.mkdtemp(prefix="bq-bench-hx-")
    try:
        db = cluster.create_database("bench_hasura")
        store = T.CredentialStore(os.path.join(creds, "c"))
        with cluster.connect(db) as conn:
            T.reconcile(conn, [T.TenantSpec("bh")], db, store)
        doc = store.load("bh")
        dsn = "postgresql://%s:%s@127.0.0.1:%d/%s" % (doc["app"]["user"], doc["app"]["password"], cluster.port, db)
        srv.double.environment["BH_DATABASE_URL"] = dsn
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as c:
            for i in range(a.tables):
                c.execute("CREATE TABLE bh.t%04d (id int PRIMARY KEY, v text)" % i)
            catalog = set(c.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'bh'"))
        client = H.Client(srv.url, "bench-secret", H.open_url_transport())
        add = {"type": "pg_add_source", "args": {"name": "bh", "configuration": H.source_configuration(
            "BH_DATABASE_URL")}}
        client.metadata(add, write=True)

        # baseline: per-table track calls
        n0 = len(srv.double.requests)
        t = time.perf_counter()
        for qt in sorted(catalog):
            client.metadata({"type": "pg_track_table", "args": {"source": "bh", "table": H.table_json(qt)}},
                            write=True)
        base_s = time.perf_counter() - t
        base_req = len(srv.double.requests) - n0
        base_writes = sum(1 for r in srv.double.requests[n0:] if r["wrote"])

        # ours: same schema from scratch, mirrored
        client.metadata({"type": "pg_drop_source", "args": {"name": "bh"}}, write=True)
        client.metadata(add, write=True)
        n0 = len(srv.double.requests)
        t = time.perf_counter()
        res = H.run_reconcile(client, "bh", [], mirror_schema="bh", catalog=catalog,
                              server_version=client.server_version())
        ours_s = time.perf_counter() - t
        ours_req = len(srv.double.requests) - n0
        ours_writes = sum(1 for r in srv.double.requests[n0:] if r["wrote"])
        assert len(res["tracked"]) == a.tables, res["tracked"][:3]
        n0 = len(srv.double.requests)
        t = time.perf_counter()
        again = H.run_reconcile(client, "bh", [], mirror_schema="bh", catalog=catalog,
                                server_version=client.server_version())
        noop_s = time.perf_counter() - t
        noop_writes = sum(1 for r in srv.double.requests[n0:] if r["wrote"])
        assert not again["changed"]
        out = {"tables": a.tables,
               "baseline_per_table": {"requests": base_req, "writes": base_writes, "seconds": round(base_s, 3)},
               "mirror": {"requests": ours_req, "writes": ours_writes, "seconds": round(ours_s, 3)},
               "mirror_again": {"writes": noop_writes, "seconds": round(noop_s, 3)},
               "speedup": round(base_s / ours_s, 1) if ours_s else None,
               "request_ratio": round(base_req / ours_req, 1)}
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print("%d tables: per-table track %d requests (%d writes) %.2f s | mirror %d requests (%d write) %.2f s"
                  " | x%.1f faster, %.0fx fewer requests | second mirror: %d writes, %.2f s"
                  % (a.tables, base_req, base_writes, base_s, ours_req, ours_writes, ours_s, out["speedup"],
                     out["request_ratio"], noop_writes, noop_s))
    finally:
        srv.stop()
        with cluster.connect() as c:
            for r in T.role_names("bh").values():
                c.execute("DROP DATABASE IF EXISTS bench_hasura WITH (FORCE)")
                c.execute('DROP ROLE IF EXISTS "%s"' % r)
        cluster.stop()
        shutil.rmtree(creds, ignore_errors=True)


if __name__ == "__main__":
    main()
