"""Helpers of the sync tests that run against SQL Server (the TDS emulator, or a real server)."""

import json
import os
import subprocess
import sys

import psycopg
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def source_kwargs(db, **over):
    p = db.params()
    kw = dict(host=p["server"], port=int(p["port"]), user=p["user"], password=p["password"], database=p["database"],
              tds_version=p.get("tds_version") or "7.4", login_timeout=5, batch_size=500)
    kw.update(over)
    return kw


def engine(db, pg_cluster, tenant, source_over=None, **kw):
    kw.setdefault("retry_delay", 0.05)
    kw.setdefault("commit_rows", 1000)
    kw.setdefault("lock_timeout", 10)
    conn = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=False)
    src = M.PymssqlSource(**source_kwargs(db, **(source_over or {})))
    return S.SyncEngine(src, conn, job="job-" + tenant.name, owner_role=tenant.owner, **kw), conn


def sync(db, pg_cluster, tenant, tables, source_over=None, **kw):
    eng, conn = engine(db, pg_cluster, tenant, source_over, **kw)
    try:
        return eng.run(S.table_specs(tables, tenant.name))
    finally:
        conn.close()


def child_config(db, pg_cluster, tenant, tables, **engine_kw):
    engine_kw.setdefault("retry_delay", 0.05)
    return {"source": source_kwargs(db), "pg": pg_cluster.conninfo(tenant.db), "job": "job-" + tenant.name,
            "tenant": tenant.name, "tables": tables, "engine": engine_kw}


def spawn(cfg):
    """Start run_engine.py in its own process group; the config (with passwords) goes through stdin."""
    p = subprocess.Popen([sys.executable, "-m", "tests.integration.sync.run_engine"], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    p.stdin.write(json.dumps(cfg))
    p.stdin.close()
    p.stdin = None  # so communicate() does not flush it again
    return p


def source_rows(db, table, cols, order="1"):
    return db.execute("SELECT %s FROM %s ORDER BY %s" % (cols, table, order))


def target_rows(tenant, table, cols, order="1"):
    with tenant.connect() as c:
        return c.execute('SELECT %s FROM "%s"."%s" ORDER BY %s' % (cols, tenant.name, table, order)).fetchall()


def seed_rows(db, table, ids, chunk=500):
    """Insert rows (id, N'n<id>') into ``table`` (id int, name nvarchar) in multi-row statements."""
    ids = list(ids)
    for k in range(0, len(ids), chunk):
        db.execute("INSERT INTO %s (id, name) VALUES " % table + ", ".join(
            "(%d, N'n%d')" % (i, i) for i in ids[k:k + chunk]))
