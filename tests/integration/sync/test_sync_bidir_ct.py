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
