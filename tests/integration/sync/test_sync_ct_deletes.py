"""delete_detection: change_tracking end to end: real pymssql against SQL Server (the TDS emulator; a real server
with BERQENAS_TEST_MSSQL_DSN where the test needs no fault injection), real PostgreSQL. Deletes reported by
CHANGETABLE(CHANGES ..) are applied exactly once; an expired sync point (min valid version past the stored
version) is refused as a rewind is, and on_rewind: full_resync reloads; hostile names stay quoted."""

import json
import signal

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

from .emu import child_config, engine, seed_rows, source_rows, spawn, sync, target_rows

pytestmark = pytest.mark.sync

CT = [{"source": "[dbo].[T]", "delete_detection": "change_tracking"}]


def ct_table(db, q="[T]", key="[id]"):
    db.execute("CREATE TABLE dbo.%s (%s int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)" % (q, key))
    db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)")
    db.execute("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    db.execute("ALTER TABLE dbo.%s ENABLE CHANGE_TRACKING" % q)


def stored_ct(tenant, table="T"):
    with tenant.connect() as c:
        return c.execute("SELECT ct_version, rows_total FROM berqenas.sync_state WHERE target_schema = %s"
                         " AND target_table = %s", (tenant.name, table)).fetchone()


def current_version(db):
    return db.execute("SELECT CHANGE_TRACKING_CURRENT_VERSION()")[0][0]


def test_deletes_via_change_tracking_applied_exactly_once(mssql_db, pg_cluster, tenant):
    db = mssql_db
    ct_table(db)
    seed_rows(db, "dbo.T", range(1, 11))
    r = sync(db, pg_cluster, tenant, CT)["tables"][0]
    assert r["inserted"] == 10 and r["deleted"] == 0
    v1 = current_version(db)
    assert r["ct_version_to"] == v1 and stored_ct(tenant) == (v1, 10)
    # deletes in two transactions, an update, and a key deleted then inserted again (net: not a delete)
    db.execute("DELETE FROM dbo.T WHERE id IN (2, 3)")
    db.execute("DELETE FROM dbo.T WHERE id = 7")
    db.execute("UPDATE dbo.T SET name = N'five' WHERE id = 5")
    db.execute("SET XACT_ABORT ON; BEGIN TRAN; DELETE FROM dbo.T WHERE id = 9;"
               " INSERT INTO dbo.T (id, name) VALUES (9, N'nine again'); COMMIT TRAN")
    v2 = current_version(db)
    assert v2 > v1
    r = sync(db, pg_cluster, tenant, CT)["tables"][0]
    assert r["deleted"] == 3, r
    assert (r["ct_version_from"], r["ct_version_to"]) == (v1, v2)
    assert target_rows(tenant, "T", "id, name") == [tuple(x) for x in source_rows(db, "dbo.T", "id, name")]
    assert (9, "nine again") in target_rows(tenant, "T", "id, name")
    assert stored_ct(tenant) == (v2, 7)
    # once: the next run reads nothing new and deletes nothing
    r = sync(db, pg_cluster, tenant, CT)["tables"][0]
    assert r["deleted"] == 0 and not r["changed"] and r["ct_version_from"] == v2
    # a delete in PostgreSQL's past that is re-reported (the state rewound by hand to v1) deletes nothing twice
    with tenant.connect() as c:
        c.execute("UPDATE berqenas.sync_state SET ct_version = %s WHERE target_schema = %s AND target_table = 'T'",
                  (v1, tenant.name))
    r = sync(db, pg_cluster, tenant, CT)["tables"][0]
    assert r["deleted"] == 0 and stored_ct(tenant) == (v2, 7)


def test_expired_change_tracking_version_is_refused_then_full_resync(emulated_mssql_db, pg_cluster, tenant):
    db = emulated_mssql_db
    ct_table(db)
    seed_rows(db, "dbo.T", range(1, 6))
    sync(db, pg_cluster, tenant, CT)
    v1 = current_version(db)
    db.execute("DELETE FROM dbo.T WHERE id = 1")
    db.execute("DELETE FROM dbo.T WHERE id = 2")
    v3 = current_version(db)
    assert db.change_tracking_cleanup(v3) == v3  # the deletes' records are gone; v1 is too old now
    with pytest.raises(S.RewindError, match=r"\[dbo\]\.\[T\].*min valid version %d is above the stored version %d"
                       ".*full resync.*on_rewind: full_resync" % (v3, v1)):
        sync(db, pg_cluster, tenant, CT)
    assert len(target_rows(tenant, "T", "id")) == 5 and stored_ct(tenant) == (v1, 5)  # nothing touched
    r = sync(db, pg_cluster, tenant, CT, on_rewind="full_resync")["tables"][0]
    assert "min valid version" in r["resync"]
    assert target_rows(tenant, "T", "id") == [(3,), (4,), (5,)]
    assert stored_ct(tenant) == (v3, 3)
    db.execute("DELETE FROM dbo.T WHERE id = 4")
    r = sync(db, pg_cluster, tenant, CT)["tables"][0]  # an ordinary run again
    assert r["resync"] is None and r["deleted"] == 1 and target_rows(tenant, "T", "id") == [(3,), (5,)]


def test_change_tracking_options_and_prerequisites(mssql_db, pg_cluster, tenant):
    for bad, msg in (({"mode": "full"}, "needs mode delta"), ({"direction": "both", "mode": "full"}, "mode delta")):
        with pytest.raises(S.SyncError, match=msg):
            S.table_specs([dict(CT[0], **bad)], tenant.name)
    mssql_db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    with pytest.raises(S.SyncError, match=r"not enabled on the source database"):
        sync(mssql_db, pg_cluster, tenant, CT)
    mssql_db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON")
    with pytest.raises(S.SyncError, match=r"not enabled on the table \(ALTER TABLE \[dbo\]\.\[T\] ENABLE"):
        sync(mssql_db, pg_cluster, tenant, CT)
    # a table synced without it, then switched: deletes before the switch are unknown -> refused as a rewind
    seed_rows(mssql_db, "dbo.T", [1, 2])
    sync(mssql_db, pg_cluster, tenant, ["[dbo].[T]"])
    mssql_db.execute("ALTER TABLE dbo.T ENABLE CHANGE_TRACKING")
    with pytest.raises(S.RewindError, match="no change tracking version is stored"):
        sync(mssql_db, pg_cluster, tenant, CT)
    r = sync(mssql_db, pg_cluster, tenant, CT, full=True)["tables"][0]
    assert r["inserted"] == 2 and stored_ct(tenant)[0] == current_version(mssql_db)


def test_change_tracking_hostile_names(mssql_db, pg_cluster, tenant):
    name = "we]ird'; DROP \"x\" ünï"
    col = "c]ol;'\" -- "
    q = "[" + name.replace("]", "]]") + "]"
    qc = "[" + col.replace("]", "]]") + "]"
    ct_table(mssql_db, q, qc)
    mssql_db.execute("INSERT INTO dbo.%s (%s, name) VALUES (1, N'a'), (2, N'b')" % (q, qc))
    tables = [{"source": "[dbo].%s" % q, "delete_detection": "change_tracking"}]
    sync(mssql_db, pg_cluster, tenant, tables)
    mssql_db.execute("DELETE FROM dbo.%s WHERE %s = 1" % (q, qc))
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert r["deleted"] == 1
    with tenant.connect() as c:
        assert c.execute('SELECT "%s", name FROM "%s"."%s"' % (col.replace('"', '""'), tenant.name,
                                                              name.replace('"', '""'))).fetchall() == [(2, "b")]



class CountingCursor(psycopg.Cursor):
    count = 0

    def execute(self, *a, **kw):
        CountingCursor.count += 1
        return super().execute(*a, **kw)

    def copy(self, *a, **kw):
        CountingCursor.count += 1
        return super().copy(*a, **kw)


def test_kill_at_every_point_of_the_change_tracking_step_then_resume(emulated_mssql_db, pg_cluster, tenant):
    """SIGKILL the run's process group before each of the last PostgreSQL statements of a run (the change
    tracking step: key staging, COPY, DELETE, version), with deletes, updates and inserts before each run; after
    a clean run both sides hold the same rows and the state the right version and row count."""
    db = emulated_mssql_db
    ct_table(db)
    seed_rows(db, "dbo.T", range(300))
    sync(db, pg_cluster, tenant, CT)
    state = {"next": 0}

    def change():
        d = state["next"] = state["next"] + 10
        db.execute("DELETE FROM dbo.T WHERE id >= %d AND id < %d" % (d, d + 3))
        db.execute("UPDATE dbo.T SET name = N'u%d' WHERE id = %d" % (d, d + 5))
        db.execute("INSERT INTO dbo.T (id, name) VALUES (%d, N'new')" % (1000 + d))

    change()  # one clean run of this shape, its PostgreSQL statements counted
    eng, conn = engine(db, pg_cluster, tenant)
    conn.close()
    conn = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=False, cursor_factory=CountingCursor)
    eng.conn = conn
    try:
        CountingCursor.count = 0
        assert eng.run(S.table_specs(CT, tenant.name))["tables"][0]["deleted"] == 3
        n = CountingCursor.count
    finally:
        conn.close()
    cfg = child_config(db, pg_cluster, tenant, CT, lock_timeout=30)
    kills = 0
    for kill_at in range(n, max(2, n - 8), -1):  # the last kill comes first in the run: it leaves work
        change()
        p = spawn(dict(cfg, kill_at=kill_at))
        out, err = p.communicate(timeout=120)
        if p.returncode == -signal.SIGKILL:
            kills += 1
        else:  # a run of another length (it should not happen): it completed
            assert p.returncode == 0, (kill_at, n, out, err)
    assert kills >= 6, (kills, n)
    final = spawn(cfg)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, (out, err)
    # some kills came before the change tracking step committed: their deletes were left to this run
    assert 0 < json.loads(out)["tables"][0]["deleted"] < 3 * kills
    src = [tuple(r) for r in source_rows(db, "dbo.T", "id, name")]
    assert target_rows(tenant, "T", "id, name") == src
    assert stored_ct(tenant) == (current_version(db), len(src))
