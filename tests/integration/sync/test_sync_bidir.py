"""direction: both end to end: real pymssql against SQL Server (the TDS emulator; a real server with
BERQENAS_TEST_MSSQL_DSN), real PostgreSQL with the capture trigger."""

import pytest
from psycopg import sql

from .emu import engine, sync

pytestmark = pytest.mark.sync

DDL = "CREATE TABLE dbo.Items (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, qty int NULL, " \
      "changed_at datetime2(3) NULL, rv rowversion NOT NULL)"


def _tables(policy="source_wins", **kw):
    t = {"source": "[dbo].[Items]", "direction": "both", "conflict_policy": policy}
    if policy == "latest_wins":
        t["conflict_timestamp_column"] = "changed_at"
    t.update(kw)
    return [t]


def _seed(db, n=3):
    db.execute(DDL)
    db.execute("INSERT INTO dbo.Items (id, name, qty, changed_at) VALUES " + ", ".join(
        "(%d, N'n%d', %d, '2026-01-01 00:00:00')" % (i, i, i) for i in range(1, n + 1)))


def _ms(db):
    return [tuple(r[:3]) + (bytes(r[3]),) for r in db.execute("SELECT id, name, qty, rv FROM dbo.Items ORDER BY id")]


def _pg(tenant, table="Items"):
    with tenant.connect() as c:
        return [tuple(r[:3]) + (bytes(r[3]),) for r in c.execute(sql.SQL(
            "SELECT id, name, qty, rv FROM {} ORDER BY id").format(sql.Identifier(tenant.name, table))).fetchall()]


def _pg_exec(tenant, text, *params):
    with tenant.connect() as c:
        c.execute(sql.SQL(text).format(t=sql.Identifier(tenant.name, "Items")), params or None)


def _log_size(tenant):
    with tenant.connect() as c:
        return c.execute("SELECT count(*), coalesce(max(id), 0) FROM berqenas.sync_change"
                         " WHERE table_schema = %s", (tenant.name,)).fetchone()


def _conflicts(tenant):
    with tenant.connect() as c:
        return c.execute("SELECT key, winner, policy, loser_values, winner_values FROM berqenas.sync_conflict"
                         " WHERE table_schema = %s ORDER BY id", (tenant.name,)).fetchall()


def _dbts(db):
    return bytes(db.execute("SELECT @@DBTS")[0][0])


def test_changes_on_both_sides_converge_with_deletes_both_ways(mssql_db, pg_cluster, tenant):
    _seed(mssql_db, 4)
    first = sync(mssql_db, pg_cluster, tenant, _tables(delete_detection="pk_diff"))
    assert first["tables"][0]["inserted"] == 4
    assert first["tables"][0]["reverse"]["applied"] == 0
    # PostgreSQL: update 1, delete 2, insert 5; SQL Server: update 3, delete 4
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg one', qty = 10 WHERE id = 1")
    _pg_exec(tenant, "DELETE FROM {t} WHERE id = 2")
    _pg_exec(tenant, "INSERT INTO {t} (id, name, qty) VALUES (5, 'pg five', 50)")
    mssql_db.execute("UPDATE dbo.Items SET name = N'ms three' WHERE id = 3")
    mssql_db.execute("DELETE FROM dbo.Items WHERE id = 4")
    r = sync(mssql_db, pg_cluster, tenant, _tables(delete_detection="pk_diff"))["tables"][0]
    rev = r["reverse"]
    assert (rev["inserted"], rev["updated"], rev["deleted"], rev["applied"]) == (1, 1, 1, 3)
    assert rev["conflicts"] == {"sqlserver": 0, "postgresql": 0}
    assert (r["updated"], r["deleted"]) == (1, 1)  # forward: row 3 and the delete of 4
    ms, pg = _ms(mssql_db), _pg(tenant)
    assert [x[:3] for x in ms] == [(1, "pg one", 10), (3, "ms three", 3), (5, "pg five", 50)]
    assert ms == pg  # same rows, values AND rowversions on both sides
    assert _log_size(tenant)[0] == 0  # applied entries are purged


@pytest.mark.parametrize("policy,winner", [("source_wins", "sqlserver"), ("target_wins", "postgresql"),
                                           ("latest_wins", "postgresql")])
def test_one_conflict_per_key_resolved_by_policy(mssql_db, pg_cluster, tenant, policy, winner):
    _seed(mssql_db)
    sync(mssql_db, pg_cluster, tenant, _tables(policy))
    # the same key on both sides; latest_wins: PostgreSQL's change carries the later time
    mssql_db.execute("UPDATE dbo.Items SET name = N'ms', changed_at = '2026-02-01 00:00:00' WHERE id = 2")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg', changed_at = '2026-03-01 00:00:00' WHERE id = 2")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg twice' WHERE id = 2")  # two entries, still one conflict
    r = sync(mssql_db, pg_cluster, tenant, _tables(policy))["tables"][0]
    rev = r["reverse"]
    assert rev["conflicts"][winner] == 1 and sum(rev["conflicts"].values()) == 1
    assert rev["conflict_rows"] == [{"table": "%s.Items" % tenant.name, "key": {"id": 2}, "winner": winner}]
    got = _conflicts(tenant)
    assert len(got) == 1
    key, w, pol, loser, won = got[0]
    assert (key, w, pol) == ({"id": 2}, winner, policy)
    want = "pg twice" if winner == "postgresql" else "ms"
    assert won["name"] == want and loser["name"] == ("ms" if winner == "postgresql" else "pg twice")
    ms, pg = _ms(mssql_db), _pg(tenant)
    assert ms == pg and dict((x[0], x[1]) for x in ms)[2] == want
    # a further run changes nothing and records no second conflict
    again = sync(mssql_db, pg_cluster, tenant, _tables(policy))["tables"][0]
    assert again["reverse"]["applied"] == 0 and again["updated"] == 0 and len(_conflicts(tenant)) == 1


def test_latest_wins_lets_the_later_sqlserver_change_win(mssql_db, pg_cluster, tenant):
    _seed(mssql_db)
    sync(mssql_db, pg_cluster, tenant, _tables("latest_wins"))
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg', changed_at = '2026-02-01 00:00:00' WHERE id = 1")
    mssql_db.execute("UPDATE dbo.Items SET name = N'ms', changed_at = '2026-03-01 00:00:00' WHERE id = 1")
    rev = sync(mssql_db, pg_cluster, tenant, _tables("latest_wins"))["tables"][0]["reverse"]
    assert rev["conflicts"] == {"sqlserver": 1, "postgresql": 0}
    assert _ms(mssql_db) == _pg(tenant) and _ms(mssql_db)[0][1] == "ms"


def test_no_echo_after_ten_idle_cycles(mssql_db, pg_cluster, tenant):
    _seed(mssql_db)
    sync(mssql_db, pg_cluster, tenant, _tables())
    _pg_exec(tenant, "UPDATE {t} SET qty = 99 WHERE id = 1")
    mssql_db.execute("UPDATE dbo.Items SET qty = 77 WHERE id = 3")
    sync(mssql_db, pg_cluster, tenant, _tables())
    dbts, rows, log = _dbts(mssql_db), _ms(mssql_db), _log_size(tenant)
    assert rows == _pg(tenant)
    for _ in range(10):
        t = sync(mssql_db, pg_cluster, tenant, _tables())["tables"][0]
        assert (t["inserted"], t["updated"], t["deleted"], t["reverse"]["applied"]) == (0, 0, 0, 0)
    assert _dbts(mssql_db) == dbts  # no write reached SQL Server
    assert _ms(mssql_db) == rows == _pg(tenant)  # rowversions on both sides unchanged
    assert _log_size(tenant) == log == (0, log[1])  # nothing captured: the log did not move


def test_a_crash_after_sqlserver_committed_loses_nothing_and_applies_nothing_twice(mssql_db, pg_cluster, tenant):
    _seed(mssql_db)
    sync(mssql_db, pg_cluster, tenant, _tables())
    _pg_exec(tenant, "UPDATE {t} SET name = 'once' WHERE id = 1")
    _pg_exec(tenant, "DELETE FROM {t} WHERE id = 3")

    class Crash(Exception):
        pass

    def fault(point):
        raise Crash(point)

    eng, conn = engine(mssql_db, pg_cluster, tenant)
    eng.reverse_fault = fault
    from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
    try:
        with pytest.raises(Crash):
            eng.run(S.table_specs(_tables(), tenant.name))
    finally:
        conn.close()
    after_crash = _ms(mssql_db)
    assert [x[:2] for x in after_crash] == [(1, "once"), (2, "n2")]  # SQL Server committed the batch
    assert _log_size(tenant)[0] == 2  # PostgreSQL did not: the entries are still pending
    r = sync(mssql_db, pg_cluster, tenant, _tables())["tables"][0]
    assert r["reverse"]["resumed"] is True and r["reverse"]["applied"] == 0
    assert _ms(mssql_db) == after_crash  # not written again: the rowversions did not move
    assert _log_size(tenant)[0] == 0
    assert _pg(tenant) == _ms(mssql_db)  # the forward pass brought the new rowversion of row 1


def test_check_mode_predicts_the_reverse_without_writing(mssql_db, pg_cluster, tenant):
    _seed(mssql_db)
    sync(mssql_db, pg_cluster, tenant, _tables())
    _pg_exec(tenant, "UPDATE {t} SET qty = 5 WHERE id = 1")
    dbts = _dbts(mssql_db)
    t = sync(mssql_db, pg_cluster, tenant, _tables(), check_mode=True)["tables"][0]
    assert t["reverse"]["pending"] == 1 and t["changed"] is True
    assert _dbts(mssql_db) == dbts and _log_size(tenant)[0] == 1


def test_hostile_names_quoted_on_both_sides(mssql_db, pg_cluster, tenant):
    mssql_db.execute("CREATE TABLE dbo.[we]]ird%; x] (id int NOT NULL PRIMARY KEY, [na'me%x] nvarchar(20) NULL,"
                     " rv rowversion NOT NULL)")
    mssql_db.execute("INSERT INTO dbo.[we]]ird%; x] (id, [na'me%x]) VALUES (1, N'a')")
    tables = [{"source": "[dbo].[we]]ird%; x]", "direction": "both"}]
    sync(mssql_db, pg_cluster, tenant, tables)
    with tenant.connect() as c:
        c.execute(sql.SQL("UPDATE {} SET {} = 'from pg'").format(sql.Identifier(tenant.name, "we]ird%; x"),
                                                              sql.Identifier("na'me%x")))
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert r["reverse"]["updated"] == 1
    assert mssql_db.execute("SELECT [na'me%x] FROM dbo.[we]]ird%; x]")[0][0] == "from pg"
