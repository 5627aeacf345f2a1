"""direction: both with delete_detection: change_tracking: real pymssql against SQL Server (the TDS emulator; a real
server with BERQENAS_TEST_MSSQL_DSN where the test needs no fault injection), real PostgreSQL with the capture
trigger. SQL Server's deletes come from CHANGETABLE(CHANGES ..); the reverse direction's own writes carry the job's
WITH CHANGE_TRACKING_CONTEXT and are never read back; a delete on one side and an update on the other is one
conflict, decided by the table's policy."""

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from ansible_collections.berqenas.platform.plugins.module_utils.sync_reverse import ct_context
from psycopg import sql

from .emu import engine, source_kwargs, sync
from .test_sync_bidir import _log_size, _pg_exec

pytestmark = pytest.mark.sync

DDL = "CREATE TABLE dbo.%s (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, qty int NULL, " \
      "changed_at datetime2(3) NULL, rv rowversion NOT NULL)"


def _tables(policy="source_wins", table="Items"):
    t = {"source": "[dbo].[%s]" % table, "direction": "both", "conflict_policy": policy,
         "delete_detection": "change_tracking"}
    if policy == "latest_wins":
        t["conflict_timestamp_column"] = "changed_at"
    return [t]


def _seed(db, n, table="Items"):
    db.execute(DDL % table)
    db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)")
    db.execute("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    db.execute("ALTER TABLE dbo.%s ENABLE CHANGE_TRACKING" % table)
    db.execute("INSERT INTO dbo.%s (id, name, qty, changed_at) VALUES " % table + ", ".join(
        "(%d, N'n%d', %d, '2026-01-01 00:00:00')" % (i, i, i) for i in range(1, n + 1)))


def _ms(db, table="Items"):
    rows = db.execute("SELECT id, name, qty, rv FROM dbo.%s ORDER BY id" % table)
    return [tuple(r[:3]) + (bytes(r[3]),) for r in rows]


def _pg(tenant, table="Items"):
    with tenant.connect() as c:
        return [tuple(r[:3]) + (bytes(r[3]) if r[3] is not None else None,) for r in c.execute(sql.SQL(
            "SELECT id, name, qty, rv FROM {} ORDER BY id").format(sql.Identifier(tenant.name, table))).fetchall()]


def _conflicts(tenant):
    with tenant.connect() as c:
        return sorted((r[0]["id"], r[1]) for r in c.execute(
            "SELECT key, winner FROM berqenas.sync_conflict WHERE table_schema = %s", (tenant.name,)).fetchall())


def _ct_version(db):
    return db.execute("SELECT CHANGE_TRACKING_CURRENT_VERSION()")[0][0]


def _contexts(db, since, table="Items"):
    return dict((r[0], (r[1], None if r[2] is None else bytes(r[2]))) for r in db.execute(
        "SELECT CT.id, CT.SYS_CHANGE_OPERATION, CT.SYS_CHANGE_CONTEXT FROM CHANGETABLE(CHANGES dbo.%s, %d) AS CT"
        % (table, since)))


# key 5: deleted on SQL Server, updated in PostgreSQL; key 6: deleted in PostgreSQL, updated on SQL Server (latest_wins:
# its time is later than the delete); key 7: updated on both (PostgreSQL's time is later); key 8: deleted on both
WINNERS = {"source_wins": {5: "sqlserver", 6: "sqlserver", 7: "sqlserver"},
           "target_wins": {5: "postgresql", 6: "postgresql", 7: "postgresql"},
           "latest_wins": {5: "postgresql", 6: "sqlserver", 7: "postgresql"}}


@pytest.mark.parametrize("policy", sorted(WINNERS))
def test_edits_and_deletes_on_both_sides_converge_per_policy(mssql_db, pg_cluster, tenant, policy):
    db = mssql_db
    _seed(db, 8)
    first = sync(db, pg_cluster, tenant, _tables(policy))["tables"][0]
    assert first["inserted"] == 8 and first["ct_version_to"] == _ct_version(db)
    v0 = _ct_version(db)
    # no conflicts: PostgreSQL updates 1, deletes 2, inserts 20; SQL Server updates 3, deletes 4, inserts 30
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg one' WHERE id = 1")
    _pg_exec(tenant, "DELETE FROM {t} WHERE id = 2")
    _pg_exec(tenant, "INSERT INTO {t} (id, name, qty) VALUES (20, 'pg new', 20)")
    db.execute("UPDATE dbo.Items SET name = N'ms three' WHERE id = 3")
    db.execute("DELETE FROM dbo.Items WHERE id = 4")
    db.execute("INSERT INTO dbo.Items (id, name, qty) VALUES (30, N'ms new', 30)")
    # conflicts
    db.execute("DELETE FROM dbo.Items WHERE id IN (5, 8)")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg five', changed_at = '2026-03-01' WHERE id = 5")
    _pg_exec(tenant, "DELETE FROM {t} WHERE id IN (6, 8)")
    db.execute("UPDATE dbo.Items SET name = N'ms six', changed_at = '2099-01-01' WHERE id = 6")
    db.execute("UPDATE dbo.Items SET name = N'ms seven', changed_at = '2026-02-01' WHERE id = 7")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg seven', changed_at = '2026-03-01' WHERE id = 7")
    r = sync(db, pg_cluster, tenant, _tables(policy))["tables"][0]
    want = WINNERS[policy]
    rev = r["reverse"]
    assert rev["conflicts"] == {w: sum(1 for x in want.values() if x == w) for w in ("sqlserver", "postgresql")}
    assert _conflicts(tenant) == sorted(want.items())  # each conflict recorded once; none for key 8
    assert r["deleted"] == 1  # key 4 (5 and 8 were gone from PostgreSQL already, 2 is the sync's own delete)
    ms, pg = _ms(db), _pg(tenant)
    assert ms == pg  # same keys, values and rowversions on both sides
    keys = {1, 3, 7, 20, 30} | ({5} if want[5] == "postgresql" else set()) | ({6} if want[6] == "sqlserver" else set())
    assert [x[0] for x in ms] == sorted(keys)
    names = dict((x[0], x[1]) for x in ms)
    assert names[1] == "pg one" and names[3] == "ms three" and names[7] == (
        "pg seven" if want[7] == "postgresql" else "ms seven")
    assert names.get(5, "pg five") == "pg five" and names.get(6, "ms six") == "ms six"
    # the sync's own deletes on SQL Server carry the job's context (what the forward read skips)
    ctx = ct_context("job-" + tenant.name)
    seen = _contexts(db, v0)
    assert seen[2] == ("D", ctx) and seen[4] == ("D", None)
    if want[6] == "postgresql":
        assert seen[6] == ("D", ctx)
    # converged: the next run changes nothing on either side and records no further conflict
    again = sync(db, pg_cluster, tenant, _tables(policy))["tables"][0]
    assert (again["inserted"], again["updated"], again["deleted"], again["reverse"]["applied"]) == (0, 0, 0, 0)
    assert _ms(db) == ms and len(_conflicts(tenant)) == 3


def test_no_echo_after_ten_idle_cycles(mssql_db, pg_cluster, tenant):
    db = mssql_db
    _seed(db, 6)
    sync(db, pg_cluster, tenant, _tables())
    _pg_exec(tenant, "UPDATE {t} SET qty = 99 WHERE id = 1")
    _pg_exec(tenant, "DELETE FROM {t} WHERE id = 2")
    _pg_exec(tenant, "INSERT INTO {t} (id, name, qty) VALUES (7, 'pg', 7)")
    db.execute("DELETE FROM dbo.Items WHERE id = 3")
    db.execute("UPDATE dbo.Items SET qty = 77 WHERE id = 4")
    before = _ct_version(db), _ms(db), _log_size(tenant)
    check = sync(db, pg_cluster, tenant, _tables(), check_mode=True)["tables"][0]  # predicts, writes nothing
    assert check["changed"] and check["reverse"]["pending"] == 3 and check["pending"] == 1
    assert (_ct_version(db), _ms(db), _log_size(tenant)) == before
    r = sync(db, pg_cluster, tenant, _tables())["tables"][0]
    assert r["reverse"]["applied"] == 3 and r["deleted"] == 1
    version, dbts, rows, log = _ct_version(db), bytes(db.execute("SELECT @@DBTS")[0][0]), _ms(db), _log_size(tenant)
    assert rows == _pg(tenant) and [x[0] for x in rows] == [1, 4, 5, 6, 7]
    for _ in range(10):
        t = sync(db, pg_cluster, tenant, _tables())["tables"][0]
        assert (t["inserted"], t["updated"], t["deleted"], t["reverse"]["applied"]) == (0, 0, 0, 0), t
        assert t["ct_version_to"] == version and not t["changed"]
    assert _ct_version(db) == version  # no change tracked on SQL Server: the sync wrote nothing there
    assert bytes(db.execute("SELECT @@DBTS")[0][0]) == dbts
    assert _ms(db) == rows == _pg(tenant)
    assert _log_size(tenant) == log == (0, log[1])  # nothing captured in PostgreSQL either


def test_own_deletes_not_read_back_and_a_concurrent_edit_becomes_one_conflict(mssql_db, pg_cluster, tenant):
    """While a run is between its two directions (after the reverse batch committed on SQL Server), PostgreSQL
    inserts again the key the batch deleted and edits a key SQL Server deleted: neither is deleted by the forward
    change tracking step; the next run applies the insert and finds the edit in conflict with SQL Server's delete."""
    db = mssql_db
    _seed(db, 4)
    sync(db, pg_cluster, tenant, _tables())
    v0 = _ct_version(db)
    _pg_exec(tenant, "DELETE FROM {t} WHERE id = 1")
    db.execute("DELETE FROM dbo.Items WHERE id = 2")

    def meanwhile(point):
        assert point == "after_sqlserver_commit"
        _pg_exec(tenant, "INSERT INTO {t} (id, name, qty) VALUES (1, 'again', 1)")
        _pg_exec(tenant, "UPDATE {t} SET name = 'edited' WHERE id = 2")

    logged = []
    eng, conn = engine(db, pg_cluster, tenant, log=logged.append)
    eng.reverse_fault = meanwhile
    try:
        r = eng.run(S.table_specs(_tables(), tenant.name))["tables"][0]
    finally:
        conn.close()
    assert r["reverse"]["deleted"] == 1 and r["deleted"] == 0
    # only key 2 came back from CHANGETABLE (the sync's own delete of key 1 is skipped), and it was kept
    assert [m for m in logged if "kept" in m] == [
        "table [dbo].[Items]: 1 key(s) deleted on SQL Server were changed in PostgreSQL meanwhile: kept for the next "
        "run's conflict check"]
    assert [x[:2] for x in _pg(tenant)] == [(1, "again"), (2, "edited"), (3, "n3"), (4, "n4")]
    assert [x[0] for x in _ms(db)] == [3, 4]
    # the forward read itself: the sync's delete of key 1 is left out with the job's context, and only then
    src = M.PymssqlSource(**source_kwargs(db))
    try:
        plain = src.ct_deleted_keys("dbo", "Items", ["id"], v0)[2]
        own = src.ct_deleted_keys("dbo", "Items", ["id"], v0, context=ct_context("job-" + tenant.name))[2]
        other = src.ct_deleted_keys("dbo", "Items", ["id"], v0, context=ct_context("another job"))[2]
    finally:
        src.close()
    assert sorted(plain) == sorted(other) == [(1,), (2,)] and own == [(2,)]
    r = sync(db, pg_cluster, tenant, _tables())["tables"][0]
    assert r["reverse"]["inserted"] == 1 and r["reverse"]["conflicts"] == {"sqlserver": 1, "postgresql": 0}
    assert r["reverse"]["conflict_rows"] == [{"table": "%s.Items" % tenant.name, "key": {"id": 2},
                                              "winner": "sqlserver"}]
    assert _ms(db) == _pg(tenant) and [x[0] for x in _ms(db)] == [1, 3, 4]
    again = sync(db, pg_cluster, tenant, _tables())["tables"][0]
    assert again["reverse"]["applied"] == 0 and again["deleted"] == 0 and _conflicts(tenant) == [(2, "sqlserver")]


def test_hostile_names_quoted_on_both_sides(mssql_db, pg_cluster, tenant):
    name = "we]ird'; DROP \"x\" %; ünï"
    col = "c]ol;'\" %x -- "
    q = "[" + name.replace("]", "]]") + "]"
    qc = "[" + col.replace("]", "]]") + "]"
    db = mssql_db
    db.execute("CREATE TABLE dbo.%s (%s int NOT NULL PRIMARY KEY, [na'me%%x] nvarchar(20) NULL, rv rowversion)"
               % (q, qc))
    db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON")
    db.execute("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    db.execute("ALTER TABLE dbo.%s ENABLE CHANGE_TRACKING" % q)
    db.execute("INSERT INTO dbo.%s (%s, [na'me%%x]) VALUES (1, N'a'), (2, N'b'), (3, N'c')" % (q, qc))
    tables = [{"source": "[dbo].%s" % q, "direction": "both", "delete_detection": "change_tracking"}]
    sync(db, pg_cluster, tenant, tables)
    tgt = sql.Identifier(tenant.name, name)
    with tenant.connect() as c:
        c.execute(sql.SQL("DELETE FROM {} WHERE {} = 1").format(tgt, sql.Identifier(col)))
        c.execute(sql.SQL("UPDATE {} SET {} = 'pg' WHERE {} = 3").format(tgt, sql.Identifier("na'me%x"),
                                                                         sql.Identifier(col)))
    db.execute("DELETE FROM dbo.%s WHERE %s = 2" % (q, qc))
    r = sync(db, pg_cluster, tenant, tables)["tables"][0]
    assert (r["reverse"]["deleted"], r["reverse"]["updated"], r["deleted"]) == (1, 1, 1)
    assert [tuple(x) for x in db.execute("SELECT %s, [na'me%%x] FROM dbo.%s" % (qc, q))] == [(3, "pg")]
    with tenant.connect() as c:
        assert c.execute(sql.SQL("SELECT {}, {} FROM {}").format(sql.Identifier(col), sql.Identifier("na'me%x"),
                                                                 tgt)).fetchall() == [(3, "pg")]


def test_kill_at_seeded_points_over_two_way_traffic_with_change_tracking_then_resume(emulated_mssql_db, pg_cluster,
                                                                                    tenant):
    """test_sync_bidir_crash's machinery with delete_detection change_tracking: SQL Server's deletes come from
    CHANGETABLE; a few seeded kill points (the N-th PostgreSQL statement of a run, up to the change tracking step
    at its end), then resume: both sides equal the model, nothing lost or doubled, no conflict."""
    from .test_sync_bidir_crash import kill_over_two_way_traffic

    def prepare(db):
        db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON")
        db.execute("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
        db.execute("ALTER TABLE dbo.B ENABLE CHANGE_TRACKING")

    # about 39 statements a run: 14-19 the reverse step (17, 18: its PostgreSQL half, after SQL Server committed),
    # 20-33 the forward load, 34-38 the change tracking step; this seed kills at 37, 17, 30 and 26
    kill_over_two_way_traffic(emulated_mssql_db, pg_cluster, tenant, "change_tracking", 16_2026_120, 4, 600,
                              kill_range=(14, 40), prepare=prepare)
