"""direction: both end to end: real pymssql against SQL Server (the TDS emulator; a real server with
BERQENAS_TEST_MSSQL_DSN), real PostgreSQL with the capture trigger."""

import datetime
import decimal
import uuid

import pytest
from psycopg import sql

from .emu import engine, sync

D = decimal.Decimal

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


def test_a_batch_commits_on_sqlserver_while_the_one_before_finishes_in_postgresql(mssql_db, pg_cluster, tenant):
    """Batch N's SQL Server half runs in a thread of its own beside batch N-1's PostgreSQL half: with batch 1's
    PostgreSQL half held at a row lock (its purge of the change log), batch 2 still commits on SQL Server. Run one
    after the other, batch 2 would reach SQL Server only once batch 1 had committed in PostgreSQL (the lock is
    let go by a timer then, and the count of entries seen at batch 2's commit would be 4, not 6)."""
    import threading

    from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

    _seed(mssql_db, 6)
    sync(mssql_db, pg_cluster, tenant, _tables())
    for i in range(1, 7):  # six transactions in key order: batches of two keys, (1, 2), (3, 4), (5, 6)
        _pg_exec(tenant, "UPDATE {t} SET name = %s WHERE id = %s", "pg %d" % i, i)
    locker = pg_cluster.connect(tenant.db, autocommit=False)
    locker.execute("SELECT 1 FROM berqenas.sync_change WHERE table_schema = %s FOR UPDATE", (tenant.name,))
    release = threading.Lock()

    def let_go():
        with release:
            if not locker.closed:
                locker.rollback()
                locker.close()

    timer = threading.Timer(8, let_go)
    timer.start()
    seen = []

    def fault(point):
        seen.append((threading.current_thread().name, _log_size(tenant)[0]))
        if len(seen) == 2:
            let_go()

    eng, conn = engine(mssql_db, pg_cluster, tenant)
    eng.reverse_batch = 2
    eng.reverse_fault = fault
    try:
        rev = eng.run(S.table_specs(_tables(), tenant.name))["tables"][0]["reverse"]
    finally:
        conn.close()
        timer.cancel()
        let_go()
    assert [name for name, _n in seen] == ["berqenas-sync-reverse"] * 3
    assert seen[1][1] == 6  # batch 2 committed on SQL Server while batch 1's PostgreSQL half still waited
    assert rev["updated"] == 6 and rev["position_to"] != rev["position_from"]
    assert _ms(mssql_db) == _pg(tenant) and [x[1] for x in _ms(mssql_db)] == ["pg %d" % i for i in range(1, 7)]
    assert _log_size(tenant)[0] == 0 and _conflicts(tenant) == []


def test_a_key_in_two_consecutive_batches_waits_for_the_first(mssql_db, pg_cluster, tenant):
    """Key 1 changed on both sides, then again in PostgreSQL after key 2: batches (1, 2) and (1). SQL Server wins
    key 1 in batch 1, whose PostgreSQL half writes SQL Server's row into PostgreSQL; batch 2 is read only after
    that (read beside batch 1's SQL Server half, it would carry the older PostgreSQL row and count a second
    conflict for the same change)."""
    _seed(mssql_db, 3)
    sync(mssql_db, pg_cluster, tenant, _tables())
    mssql_db.execute("UPDATE dbo.Items SET name = N'ms one' WHERE id = 1")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg one' WHERE id = 1")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg two' WHERE id = 2")
    _pg_exec(tenant, "UPDATE {t} SET qty = 100 WHERE id = 1")
    from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

    eng, conn = engine(mssql_db, pg_cluster, tenant)
    eng.reverse_batch = 2
    try:
        rev = eng.run(S.table_specs(_tables(), tenant.name))["tables"][0]["reverse"]
    finally:
        conn.close()
    assert rev["conflicts"] == {"sqlserver": 1, "postgresql": 0} and len(_conflicts(tenant)) == 1
    ms = _ms(mssql_db)
    assert [x[:3] for x in ms] == [(1, "ms one", 1), (2, "pg two", 2), (3, "n3", 3)]
    assert ms == _pg(tenant) and _log_size(tenant)[0] == 0


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


TYPED = ("CREATE TABLE dbo.Typed (code varchar(10) NOT NULL, n int NOT NULL, b bit NULL, ti tinyint NULL,"
         " si smallint NULL, bi bigint NULL, d decimal(9,2) NULL, m money NULL, f float NULL, r real NULL,"
         " dt date NULL, tm time(3) NULL, dtm datetime NULL, dt2 datetime2(3) NULL, ch char(4) NULL,"
         " nv nvarchar(max) NULL, vb varbinary(8) NULL, bn binary(4) NULL, u uniqueidentifier NULL,"
         " rv rowversion NOT NULL, PRIMARY KEY (code, n))")
TYPED_COLS = "code, n, b, ti, si, bi, d, m, f, r, dt, tm, dtm, dt2, ch, nv, vb, bn, u"


def test_updates_of_every_type_go_back_in_one_statement(mssql_db, pg_cluster, tenant):
    """The reverse UPDATE is one UPDATE ... FROM (VALUES ...) whose first row casts to the columns' types: a batch
    whose first row is all NULL, a composite string key and every 1:1 type arrive as PostgreSQL holds them."""
    mssql_db.execute(TYPED)
    mssql_db.execute("INSERT INTO dbo.Typed (code, n, nv) VALUES ('a', 1, N'x'), ('a', 2, N'y'), ('B', 1, N'z')")
    tables = [{"source": "[dbo].[Typed]", "direction": "both"}]
    sync(mssql_db, pg_cluster, tenant, tables)
    t = sql.Identifier(tenant.name, "Typed")
    with tenant.connect() as c:
        c.execute(sql.SQL("UPDATE {} SET nv = NULL WHERE code = 'a' AND n = 1").format(t))
        c.execute(sql.SQL(
            "UPDATE {} SET b = true, ti = 255, si = -32768, bi = 9223372036854775807, d = 1234567.89,"
            " m = 922337203685477.5807, f = 3.141592653589793, r = 1.5, dt = '9999-12-31', tm = '23:59:59.123',"
            " dtm = '2020-02-29 13:14:15.997', dt2 = '2024-06-30 23:59:59.123', ch = 'ab  ', nv = 'h\u00e9 \U0001F600',"
            " vb = '\\x00ff'::bytea, bn = '\\x01020304'::bytea, u = '6f9619ff-8b86-d011-b42d-00c04fc964ff'"
            " WHERE code = 'a' AND n = 2").format(t))
        c.execute(sql.SQL("UPDATE {} SET d = -0.01, f = -1e-05, nv = 'it''s' WHERE code = 'B'").format(t))
    rows_before = mssql_db.execute("SELECT COUNT(*) FROM dbo.Typed")
    r = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert r["reverse"]["updated"] == 3 and r["reverse"]["conflicts"] == {"sqlserver": 0, "postgresql": 0}
    ms = mssql_db.execute("SELECT %s FROM dbo.Typed ORDER BY code, n" % TYPED_COLS)
    assert mssql_db.execute("SELECT COUNT(*) FROM dbo.Typed") == rows_before
    assert ms[0][:2] == ("a", 1) and ms[0][15] is None
    assert ms[1] == ("a", 2, True, 255, -32768, 9223372036854775807, D("1234567.89"), D("922337203685477.5807"),
                     3.141592653589793, 1.5, datetime.date(9999, 12, 31), datetime.time(23, 59, 59, 123000),
                     datetime.datetime(2020, 2, 29, 13, 14, 15, 997000),
                     datetime.datetime(2024, 6, 30, 23, 59, 59, 123000), "ab  ", "h\u00e9 \U0001F600", b"\x00\xff",
                     b"\x01\x02\x03\x04", uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"))
    assert (ms[2][0], ms[2][6], ms[2][8], ms[2][15]) == ("B", D("-0.01"), -1e-05, "it's")
    with tenant.connect() as c:  # the new rowversions came back: nothing to load or apply again
        pg_rv = c.execute(sql.SQL("SELECT code, n, rv FROM {} ORDER BY code, n").format(t)).fetchall()
    assert {(a, b): bytes(v) for a, b, v in pg_rv} == {
        (a, b): bytes(v) for a, b, v in mssql_db.execute("SELECT code, n, rv FROM dbo.Typed")}
    again = sync(mssql_db, pg_cluster, tenant, tables)["tables"][0]
    assert again["reverse"]["applied"] == 0 and again["updated"] == 0


@pytest.mark.parametrize("checked_only", [False, True], ids=["guarded_writes", "checked_path_only"])
def test_guarded_writes_and_the_checked_path_decide_alike(mssql_db, pg_cluster, tenant, monkeypatch, checked_only):
    """The guarded first statements (UPDATE where the rowversion is unchanged, INSERT where the key is absent, with
    OUTPUT) write only what cannot conflict; a key updated on both sides and a key inserted on both sides fall
    through to the checked path and its policy. With checked_only, every key takes the checked path and the new
    rowversions are read back (as for a table with an enabled trigger, where SQL Server refuses OUTPUT): the
    same result."""
    from ansible_collections.berqenas.platform.plugins.module_utils import sync_reverse

    if checked_only:
        monkeypatch.setattr(sync_reverse, "_has_triggers", lambda w, spec: True)
    _seed(mssql_db, 4)
    sync(mssql_db, pg_cluster, tenant, _tables())
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg one' WHERE id = 1")
    _pg_exec(tenant, "DELETE FROM {t} WHERE id = 2")
    _pg_exec(tenant, "UPDATE {t} SET name = 'pg three' WHERE id = 3")
    _pg_exec(tenant, "INSERT INTO {t} (id, name, qty) VALUES (5, 'pg five', 5), (6, 'pg six', 6)")
    mssql_db.execute("UPDATE dbo.Items SET name = N'ms three' WHERE id = 3")
    mssql_db.execute("INSERT INTO dbo.Items (id, name, qty) VALUES (6, N'ms six', 60)")
    r = sync(mssql_db, pg_cluster, tenant, _tables())["tables"][0]
    rev = r["reverse"]
    assert (rev["updated"], rev["deleted"], rev["inserted"]) == (1, 1, 1)
    assert rev["conflicts"] == {"sqlserver": 2, "postgresql": 0}
    assert sorted(c["key"]["id"] for c in rev["conflict_rows"]) == [3, 6]
    ms = _ms(mssql_db)
    assert [x[:3] for x in ms] == [(1, "pg one", 1), (3, "ms three", 3), (4, "n4", 4), (5, "pg five", 5),
                                   (6, "ms six", 60)]
    assert ms == _pg(tenant)
    again = sync(mssql_db, pg_cluster, tenant, _tables())["tables"][0]
    assert (again["reverse"]["applied"], again["updated"], again["inserted"]) == (0, 0, 0)
    assert _ms(mssql_db) == ms == _pg(tenant)
