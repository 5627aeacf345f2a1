"""Change tracking on SQL Server (the TDS emulator; a real server with BERQENAS_TEST_MSSQL_DSN): the functions
delete_detection: change_tracking reads, as SQL Server documents them (CHANGE_TRACKING_CURRENT_VERSION,
CHANGE_TRACKING_MIN_VALID_VERSION, CHANGETABLE(CHANGES ...), one version per committed transaction)."""

import pytest

pytestmark = pytest.mark.sync


def _ct(db, last):
    q = "SELECT CT.id, CT.SYS_CHANGE_OPERATION, CT.SYS_CHANGE_VERSION FROM CHANGETABLE(CHANGES dbo.T, %s) AS CT" \
        " ORDER BY CT.id" % ("NULL" if last is None else int(last))
    return [(r[0], r[1], r[2]) for r in db.execute(q)]


def _versions(db):
    (cur, mv), = db.execute("SELECT CHANGE_TRACKING_CURRENT_VERSION(), "
                            "CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(N'dbo.T'))")
    return cur, mv


def _enable(db):
    db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(20) NULL)")
    assert _versions(db) == (None, None)  # not enabled on the database nor the table
    db.execute("ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)")
    db.execute("ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON")
    cur, mv = _versions(db)
    assert cur is not None and mv is None  # the database tracks, the table not yet
    db.execute("ALTER TABLE dbo.T ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF)")
    return _versions(db)


def test_changetable_reports_net_changes_per_key_since_a_version(mssql_db):
    v0, mv = _enable(mssql_db)
    assert mv is not None and mv <= v0 and _ct(mssql_db, v0) == []
    mssql_db.execute("INSERT INTO dbo.T (id, name) VALUES (1, N'a'), (2, N'b'), (3, N'c')")
    v1, _ = _versions(mssql_db)
    assert v1 > v0
    assert _ct(mssql_db, v0) == [(1, "I", v1), (2, "I", v1), (3, "I", v1)]  # one version per transaction
    mssql_db.execute("SET XACT_ABORT ON; BEGIN TRAN; UPDATE dbo.T SET name = N'bb' WHERE id = 2;"
                     " DELETE FROM dbo.T WHERE id = 3; COMMIT TRAN")
    v2, _ = _versions(mssql_db)
    assert v2 > v1
    assert _ct(mssql_db, v1) == [(2, "U", v2), (3, "D", v2)]
    # since before the insert: a key inserted then updated is an insert, inserted then deleted a delete
    assert _ct(mssql_db, v0) == [(1, "I", v1), (2, "I", v2), (3, "D", v2)]
    assert [r[0] for r in _ct(mssql_db, None)] == [1, 2, 3]
    assert _ct(mssql_db, v2) == []
    mssql_db.execute("BEGIN TRAN; UPDATE dbo.T SET name = N'x' WHERE id = 1; ROLLBACK TRAN")
    assert _versions(mssql_db)[0] == v2 and _ct(mssql_db, v2) == []  # a rolled back change is not tracked


def test_truncate_moves_the_min_valid_version_past_older_sync_points(mssql_db):
    v0, mv0 = _enable(mssql_db)
    mssql_db.execute("INSERT INTO dbo.T (id, name) VALUES (1, N'a')")
    v1, mv1 = _versions(mssql_db)
    assert mv1 == mv0 and mv1 <= v0  # changes alone do not expire anything
    mssql_db.execute("TRUNCATE TABLE dbo.T")
    cur, mv = _versions(mssql_db)
    assert mv > v0  # a client at v0 must reinitialise: its changes are gone
    assert _ct(mssql_db, mv) == []


def test_changetable_refuses_what_sql_server_refuses(mssql_db):
    _enable(mssql_db)
    mssql_db.execute("CREATE TABLE dbo.NoPk (id int NOT NULL, name nvarchar(20) NULL)")
    import pymssql
    with pytest.raises(pymssql.Error):
        mssql_db.execute("ALTER TABLE dbo.NoPk ENABLE CHANGE_TRACKING")  # a primary key is required
    with pytest.raises(pymssql.Error):
        mssql_db.execute("ALTER TABLE dbo.T ENABLE CHANGE_TRACKING")  # already enabled
    with pytest.raises(pymssql.Error):
        mssql_db.execute("SELECT * FROM CHANGETABLE(CHANGES dbo.T, 1 + 1) AS CT")  # an expression
    mssql_db.execute("ALTER TABLE dbo.T DISABLE CHANGE_TRACKING")
    assert _versions(mssql_db)[1] is None


def test_retention_cleanup_expires_older_sync_points(emulated_mssql_db):
    db = emulated_mssql_db
    v0, mv0 = _enable(db)
    db.execute("INSERT INTO dbo.T (id, name) VALUES (1, N'a')")
    db.execute("INSERT INTO dbo.T (id, name) VALUES (2, N'b')")
    v2, _ = _versions(db)
    v1 = _ct(db, v0)[0][2]
    assert db.change_tracking_cleanup(v1) == v1
    cur, mv = _versions(db)
    assert (cur, mv) == (v2, v1) and mv > v0  # a client at v0 is too old, one at v1 still valid
    assert _ct(db, v1) == [(2, "I", v2)]


def _ctx(db, last):
    q = "SELECT CT.id, CT.SYS_CHANGE_OPERATION, CT.SYS_CHANGE_CONTEXT FROM CHANGETABLE(CHANGES dbo.T, %d) AS CT" \
        " ORDER BY CT.id" % int(last)
    return [(r[0], r[1], None if r[2] is None else bytes(r[2])) for r in db.execute(q)]


def test_change_tracking_context_tags_a_change_and_the_last_change_decides(mssql_db):
    """WITH CHANGE_TRACKING_CONTEXT (c) tags the changes of its one statement; SYS_CHANGE_CONTEXT is the context of
    each key's last change; a reader filters its own changes out with SYS_CHANGE_CONTEXT <> c (the documented
    two-way sync pattern)."""
    db = mssql_db
    v0, _ = _enable(db)
    db.execute("INSERT INTO dbo.T (id, name) VALUES (1, N'a'), (2, N'b'), (3, N'c'), (4, N'd')")
    v1, _ = _versions(db)
    assert _ctx(db, v0) == [(1, "I", None), (2, "I", None), (3, "I", None), (4, "I", None)]
    # one batch, as a sync sends it: the context covers its statement only, not the next one
    db.execute("SET XACT_ABORT ON; BEGIN TRAN;"
               " WITH CHANGE_TRACKING_CONTEXT (0x62710102) DELETE FROM dbo.T WHERE id = 1;"
               " UPDATE dbo.T SET name = N'bb' WHERE id = 2;"
               " WITH CHANGE_TRACKING_CONTEXT (0x62710102) UPDATE dbo.T SET name = N'cc' WHERE id = 3;"
               " WITH CHANGE_TRACKING_CONTEXT (0x62710102) INSERT INTO dbo.T (id, name) VALUES (5, N'e');"
               " COMMIT TRAN")
    assert _ctx(db, v1) == [(1, "D", b"bq\x01\x02"), (2, "U", None), (3, "U", b"bq\x01\x02"), (5, "I", b"bq\x01\x02")]
    assert [r[1] for r in db.execute("SELECT id, name FROM dbo.T ORDER BY id")] == ["bb", "cc", "d", "e"]
    # the last change of a key decides: a tagged change then a plain one (same transaction or a later one) is
    # untagged; a plain change then a tagged one is tagged
    db.execute("SET XACT_ABORT ON; BEGIN TRAN; WITH CHANGE_TRACKING_CONTEXT (0x62710102) UPDATE dbo.T SET name = N'x'"
               " WHERE id = 4; UPDATE dbo.T SET name = N'y' WHERE id = 4; COMMIT TRAN")
    db.execute("UPDATE dbo.T SET name = N'z' WHERE id = 5")
    db.execute("UPDATE dbo.T SET name = N'w' WHERE id = 2")
    db.execute("WITH CHANGE_TRACKING_CONTEXT (0x0a0b) UPDATE dbo.T SET name = N'v' WHERE id = 2")
    assert _ctx(db, v1) == [(1, "D", b"bq\x01\x02"), (2, "U", b"\x0a\x0b"), (3, "U", b"bq\x01\x02"),
                            (4, "U", None), (5, "I", None)]
    # the reverse sync's batch update form (UPDATE .. FROM (VALUES ..)) takes the clause too: matched rows only
    db.execute("WITH CHANGE_TRACKING_CONTEXT (0x62710102) UPDATE t SET name = v.name FROM dbo.T AS t INNER JOIN"
               " (VALUES (CAST(3 AS int), CAST(N'c3' AS nvarchar(max))), (9, N'none')) AS v (id, name) ON t.id = v.id")
    assert _ctx(db, v1)[2] == (3, "U", b"bq\x01\x02") and len(_ctx(db, v1)) == 5
    mine = db.execute("SELECT CT.id FROM CHANGETABLE(CHANGES dbo.T, %d) AS CT WHERE CT.SYS_CHANGE_CONTEXT IS NULL OR"
                      " CT.SYS_CHANGE_CONTEXT <> 0x62710102 ORDER BY CT.id" % v1)
    assert [r[0] for r in mine] == [2, 4, 5]
    # a statement that fails leaves no change and no context behind
    import pymssql
    with pytest.raises(pymssql.Error):
        db.execute("WITH CHANGE_TRACKING_CONTEXT (0x62710102) INSERT INTO dbo.T (id, name) VALUES (2, N'dup')")
    assert _ctx(db, v1)[1] == (2, "U", b"\x0a\x0b")
    with pytest.raises(pymssql.Error):
        db.execute("WITH CHANGE_TRACKING_CONTEXT (NULL) UPDATE dbo.T SET name = N'n' WHERE id = 2")  # never NULL
