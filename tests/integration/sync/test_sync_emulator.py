"""mssql_sync end to end: real pymssql against SQL Server (the TDS emulator; a real server with
BERQENAS_TEST_MSSQL_DSN), real PostgreSQL."""

import datetime as dt
import decimal
import time
import uuid

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

from .emu import child_config, engine, seed_rows, source_rows, spawn, sync, target_rows

pytestmark = pytest.mark.sync

ALL_TYPES = """
CREATE TABLE dbo.AllTypes (
  id int NOT NULL PRIMARY KEY,
  b bit NULL, ti tinyint NULL, si smallint NULL, bi bigint NULL,
  d38 decimal(38,10) NULL, n18 numeric(18,4) NULL, m money NULL, sm smallmoney NULL,
  f float NULL, r real NULL,
  dtm datetime NULL, sdt smalldatetime NULL, d27 datetime2(7) NULL, d23 datetime2(3) NULL, da date NULL,
  t7 time(7) NULL, dto datetimeoffset(7) NULL,
  c char(10) NULL, vc varchar(100) NULL, nc nchar(5) NULL, nv nvarchar(4000) NULL, nvmax nvarchar(max) NULL,
  bin binary(4) NULL, vb varbinary(max) NULL, g uniqueidentifier NULL,
  rv rowversion NOT NULL
)"""

INSERT = ("INSERT INTO dbo.AllTypes (id, b, ti, si, bi, d38, n18, m, sm, f, r, dtm, sdt, d27, d23, da, t7, dto, c, vc,"
          " nc, nv, nvmax, bin, vb, g) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
          " CAST(%s AS datetime), CAST(%s AS smalldatetime), CAST(%s AS datetime2(7)), CAST(%s AS datetime2(3)),"
          " CAST(%s AS date), CAST(%s AS time(7)), %s, %s, %s, %s, %s,"
          " %s + NCHAR(0) + %s, %s, %s,"
          " CAST(%s AS uniqueidentifier))")

D38 = decimal.Decimal("1234567890123456789012345678.0123456789")
G = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
LONG_NV = "x" * 3998 + "\U0001d11e"  # 4000 UTF-16 units, the column's maximum
BIG_VB = bytes(range(256)) * 400


def seed_all_types(db):
    db.execute(ALL_TYPES)
    db.execute(INSERT, (1, True, 255, -32768, -9223372036854775808, D38, decimal.Decimal("-99999999999999.9999"),
                        decimal.Decimal("-922337203685477.5808"), decimal.Decimal("214748.3647"),
                        1.7976931348623157e308, -3.4e38, "2024-02-29 23:59:59.997", "2079-06-06 23:59:00",
                        "9999-12-31 23:59:59.9999999", "0001-01-01 00:00:00.123", "0001-01-01", "23:59:59.9999999",
                        "2024-02-29 12:00:00.1234567 -03:30", "abc", "Grüße; DROP TABLE x;--", "ab",
                        LONG_NV, "nul", "inside \U0001f600 ünï", bytearray(b"\x00\x01\x02\x03"),
                        bytearray(BIG_VB), str(G)))
    db.execute("INSERT INTO dbo.AllTypes (id) VALUES (2)")  # NULL in every nullable column


def test_initial_load_types_nulls_and_precision(mssql_db, pg_cluster, tenant):
    seed_all_types(mssql_db)
    r = sync(mssql_db, pg_cluster, tenant, ["[dbo].[AllTypes]"])
    t = r["tables"][0]
    assert (t["inserted"], t["updated"], t["deleted"]) == (2, 0, 0)
    notes = " | ".join(t["precision_notes"])
    for col in ("d27: datetime2(7)", "t7: time(7)", "dto: datetimeoffset(7)", "dto_offset_min",
                "nvmax: U+0000 removed in 1 value"):
        assert col in notes
    with tenant.connect() as c:
        row = c.execute('SELECT * FROM "%s"."AllTypes" WHERE id = 1' % tenant.name).fetchone()
        names = [d.name for d in c.execute('SELECT * FROM "%s"."AllTypes" LIMIT 0' % tenant.name).description]
        nulls = c.execute('SELECT * FROM "%s"."AllTypes" WHERE id = 2' % tenant.name).fetchone()
    v = dict(zip(names, row, strict=True))
    utc = dt.UTC
    assert v["b"] is True and v["ti"] == 255 and v["si"] == -32768 and v["bi"] == -9223372036854775808
    assert v["d38"] == D38 and v["n18"] == decimal.Decimal("-99999999999999.9999")
    assert v["m"] == decimal.Decimal("-922337203685477.5808") and v["sm"] == decimal.Decimal("214748.3647")
    assert v["f"] == 1.7976931348623157e308 and v["r"] == pytest.approx(-3.4e38, rel=1e-6)
    assert v["dtm"] == dt.datetime(2024, 2, 29, 23, 59, 59, 997000)
    assert v["sdt"] == dt.datetime(2079, 6, 6, 23, 59)
    assert v["d27"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999)  # 100-ns digit dropped
    assert v["d23"] == dt.datetime(1, 1, 1, 0, 0, 0, 123000) and v["da"] == dt.date(1, 1, 1)
    assert v["t7"] == dt.time(23, 59, 59, 999999)
    assert v["dto"] == dt.datetime(2024, 2, 29, 15, 30, 0, 123456, tzinfo=utc) and v["dto_offset_min"] == -210
    assert v["c"] == "abc       " and v["vc"] == "Grüße; DROP TABLE x;--" and v["nc"] == "ab   "
    assert v["nv"] == LONG_NV and v["nvmax"] == "nulinside \U0001f600 ünï"
    assert v["bin"] == b"\x00\x01\x02\x03" and v["vb"] == BIG_VB and v["g"] == G and len(v["rv"]) == 8
    assert all(x is None for k, x in zip(names, nulls, strict=True) if k not in ("id", "rv"))
    # the source, read back through pymssql, agrees with the target under the stated rules
    src = mssql_db.execute("SELECT id, d38, nv, vb, g, rv FROM dbo.AllTypes ORDER BY id")
    assert [tuple(x) for x in src] == target_rows(tenant, "AllTypes", "id, d38, nv, vb, g, rv")


def test_deltas_and_delete_detection(mssql_db, pg_cluster, tenant):
    db = mssql_db
    db.execute("CREATE TABLE dbo.P (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    db.execute("CREATE TABLE dbo.SD (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, "
               "is_deleted bit NOT NULL DEFAULT 0, rv rowversion)")
    db.execute("CREATE TABLE dbo.N (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    for t in ("P", "SD", "N"):
        db.execute("INSERT INTO dbo.%s (id, name) VALUES (1, N'a'), (2, N'b'), (3, N'c'), (4, N'd')" % t)
    tables = [{"source": "[dbo].[P]", "delete_detection": "pk_diff"},
              {"source": "[dbo].[SD]", "delete_detection": "soft_delete", "soft_delete_column": "is_deleted"},
              "[dbo].[N]"]
    r = sync(db, pg_cluster, tenant, tables)
    assert [t["inserted"] for t in r["tables"]] == [4, 4, 4]
    for t in ("P", "SD", "N"):
        db.execute("UPDATE dbo.%s SET name = N'changed' WHERE id = 2" % t)
        db.execute("INSERT INTO dbo.%s (id, name) VALUES (5, N'e')" % t)
        db.execute("DELETE FROM dbo.%s WHERE id = 3" % t)
    db.execute("UPDATE dbo.SD SET is_deleted = 1 WHERE id = 4")
    r = sync(db, pg_cluster, tenant, tables)
    got = [(t["inserted"], t["updated"], t["deleted"]) for t in r["tables"]]
    assert got == [(1, 1, 1), (1, 1, 1), (1, 1, 0)]
    assert target_rows(tenant, "P", "id, name") == [(1, "a"), (2, "changed"), (4, "d"), (5, "e")]
    assert target_rows(tenant, "SD", "id, name") == [(1, "a"), (2, "changed"), (3, "c"), (5, "e")]
    assert target_rows(tenant, "N", "id, name") == [(1, "a"), (2, "changed"), (3, "c"), (4, "d"), (5, "e")]
    assert [tuple(x) for x in source_rows(db, "dbo.P", "id, name")] == target_rows(tenant, "P", "id, name")
    r = sync(db, pg_cluster, tenant, tables)  # nothing pending: unchanged
    assert not r["changed"] and all(t["inserted"] + t["updated"] + t["deleted"] == 0 for t in r["tables"])


def test_row_of_open_transaction_is_picked_up_later(mssql_db, pg_cluster, tenant):
    db = mssql_db
    db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    # index on the rowversion column: the window seeks past the in-flight row instead of scanning into its lock
    # (a real server under locking READ COMMITTED would otherwise make the reader wait for the writer)
    db.execute("CREATE UNIQUE NONCLUSTERED INDEX ix_t_rv ON dbo.T (rv)")
    db.execute("INSERT INTO dbo.T (id, name) VALUES (1, N'before')")
    writer = db.connect(autocommit=False)
    try:
        cur = writer.cursor()
        cur.execute("INSERT INTO dbo.T (id, name) VALUES (2, N'in flight')")
        db.execute("INSERT INTO dbo.T (id, name) VALUES (3, N'committed after')")
        r = sync(db, pg_cluster, tenant, ["[dbo].[T]"])
        assert target_rows(tenant, "T", "id") == [(1,)]
        writer.commit()
    finally:
        writer.close()
    r = sync(db, pg_cluster, tenant, ["[dbo].[T]"])
    assert r["tables"][0]["inserted"] == 2
    assert target_rows(tenant, "T", "id, name") == [(1, "before"), (2, "in flight"), (3, "committed after")]


def test_connection_dropped_mid_result_is_retried(emulated_mssql_db, pg_cluster, tenant):
    db = emulated_mssql_db
    db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    seed_rows(db, "dbo.T", range(3000))
    logs = []
    eng, conn = engine(db, pg_cluster, tenant, log=logs.append)
    real_batches = eng.source.batches
    armed = []

    def batches(*a, **kw):  # arm the one-shot drop for the window's result set (not a catalog query)
        if not armed:
            armed.append(True)
            db.faults.drop_after_rows = 1700
        return real_batches(*a, **kw)

    eng.source.batches = batches
    try:
        r = eng.run(S.table_specs(["[dbo].[T]"], tenant.name))
    finally:
        conn.close()
    assert any("retry 1/3" in m for m in logs), logs
    assert r["tables"][0]["inserted"] == 3000  # committed pages were not re-inserted
    assert target_rows(tenant, "T", "count(*), count(DISTINCT id), min(id), max(id)") == [(3000, 3000, 0, 2999)]


def test_wrong_password_changes_nothing(mssql_db, pg_cluster, tenant):
    mssql_db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, rv rowversion)")
    with pytest.raises(S.SourceError, match="login failed"):
        sync(mssql_db, pg_cluster, tenant, ["[dbo].[T]"], source_over={"password": "wrong-Pa55"})
    with tenant.connect() as c:
        assert c.execute("SELECT count(*) FROM berqenas.sync_state WHERE job = %s",
                         ("job-" + tenant.name,)).fetchone()[0] == 0
        assert c.execute("SELECT to_regclass(%s)", ('"%s"."T"' % tenant.name,)).fetchone()[0] is None


def test_restore_detected_refused_then_full_resync(emulated_mssql_db, pg_cluster, tenant):
    db = emulated_mssql_db
    db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    db.execute("INSERT INTO dbo.T (id, name) VALUES (1, N'a'), (2, N'b')")
    sync(db, pg_cluster, tenant, ["[dbo].[T]"])
    r = sync(db, pg_cluster, tenant, ["[dbo].[T]"])  # an ordinary run with no changes never trips
    assert r["tables"][0]["resync"] is None
    db.simulate_restore()
    db.execute("UPDATE dbo.T SET name = N'after restore' WHERE id = 1")
    with pytest.raises(S.RewindError, match="restored or failed over"):
        sync(db, pg_cluster, tenant, ["[dbo].[T]"])
    assert target_rows(tenant, "T", "id, name") == [(1, "a"), (2, "b")]
    r = sync(db, pg_cluster, tenant, ["[dbo].[T]"], on_rewind="full_resync")
    assert "changed" in r["tables"][0]["resync"] or "below the stored watermark" in r["tables"][0]["resync"]
    assert target_rows(tenant, "T", "id, name") == [(1, "after restore"), (2, "b")]
    r = sync(db, pg_cluster, tenant, ["[dbo].[T]"])  # and the next ordinary run is quiet again
    assert not r["changed"]


def test_hostile_identifiers(mssql_db, pg_cluster, tenant):
    name = "we]ird'; DROP \"x\" ünï\U0001d11e"
    col = "c]ol;'\" -- "
    q = "[" + name.replace("]", "]]") + "]"
    qc = "[" + col.replace("]", "]]") + "]"
    mssql_db.execute("CREATE TABLE dbo.%s (%s int NOT NULL PRIMARY KEY, [v] nvarchar(10) NULL, rv rowversion)"
                     % (q, qc))
    mssql_db.execute("INSERT INTO dbo.%s (%s, v) VALUES (1, N'x')" % (q, qc))
    sync(mssql_db, pg_cluster, tenant, [{"source": "[dbo].%s" % q}])
    with tenant.connect() as c:
        assert c.execute('SELECT "%s", v FROM "%s"."%s"' % (col.replace('"', '""'), tenant.name,
                                                           name.replace('"', '""'))).fetchall() == [(1, "x")]
    long = "L" * 128
    mssql_db.execute("CREATE TABLE dbo.[%s] (id int NOT NULL PRIMARY KEY, rv rowversion)" % long)
    with pytest.raises(S.SyncError, match="PostgreSQL allows 63"):
        sync(mssql_db, pg_cluster, tenant, ["[dbo].[%s]" % long])
    sync(mssql_db, pg_cluster, tenant, [{"source": "[dbo].[%s]" % long, "target_table": "short"}])
    assert target_rows(tenant, "short", "count(*)") == [(0,)]


def test_two_concurrent_runs(emulated_mssql_db, pg_cluster, tenant):
    db = emulated_mssql_db
    db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    seed_rows(db, "dbo.T", range(6000))
    db.faults.packet_delay = 0.05  # keep the first run busy
    a = spawn(child_config(db, pg_cluster, tenant, ["[dbo].[T]"], commit_rows=500, lock_timeout=60))
    waiter = spawn(child_config(db, pg_cluster, tenant, ["[dbo].[T]"], commit_rows=500, lock_timeout=60))
    deadline = time.monotonic() + 30
    with tenant.connect() as c:  # wait until one of them holds the job's lock and has committed a page
        while time.monotonic() < deadline:
            held = c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                             "AND granted", (S.LOCK_CLASS,)).fetchone()[0]
            state = c.execute("SELECT to_regclass('berqenas.sync_state') IS NOT NULL").fetchone()[0] and \
                c.execute("SELECT count(*) FROM berqenas.sync_state WHERE job = %s",
                          ("job-" + tenant.name,)).fetchone()[0]
            if held and state:
                break
            time.sleep(0.05)
    quick = spawn(child_config(db, pg_cluster, tenant, ["[dbo].[T]"], lock_timeout=0))
    out_q, err_q = quick.communicate(timeout=60)
    db.faults.packet_delay = 0
    out_a, err_a = a.communicate(timeout=120)
    out_w, err_w = waiter.communicate(timeout=120)
    assert quick.returncode == 3 and '"status": "locked"' in out_q, (out_q, err_q)
    assert a.returncode == 0 and waiter.returncode == 0, (err_a, err_w)
    assert target_rows(tenant, "T", "count(*), count(DISTINCT id)") == [(6000, 6000)]


def test_table_without_rowversion_error_or_mode_full(mssql_db, pg_cluster, tenant):
    db = mssql_db
    db.execute("CREATE TABLE dbo.NoRv (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL)")
    seed_rows(db, "dbo.NoRv", range(5))
    with pytest.raises(S.SyncError, match="no rowversion column.*mode: full"):
        sync(db, pg_cluster, tenant, ["[dbo].[NoRv]"])
    full = [{"source": "[dbo].[NoRv]", "mode": "full"}]
    r = sync(db, pg_cluster, tenant, full)
    assert r["tables"][0]["inserted"] == 5 and r["tables"][0]["watermark_to"] is None
    db.execute("UPDATE dbo.NoRv SET name = N'x' WHERE id = 1")
    db.execute("DELETE FROM dbo.NoRv WHERE id = 2")
    seed_rows(db, "dbo.NoRv", [7])
    t = sync(db, pg_cluster, tenant, full)["tables"][0]
    assert (t["inserted"], t["updated"], t["deleted"]) == (1, 1, 1)
    assert target_rows(tenant, "NoRv", "id, name") == [tuple(x) for x in source_rows(db, "dbo.NoRv", "id, name")]
    assert not sync(db, pg_cluster, tenant, full)["changed"]


def test_source_column_added_later_and_incompatible_change(mssql_db, pg_cluster, tenant):
    db = mssql_db
    db.execute("CREATE TABLE dbo.T (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, rv rowversion)")
    seed_rows(db, "dbo.T", range(3))
    sync(db, pg_cluster, tenant, ["[dbo].[T]"])
    db.execute("ALTER TABLE dbo.T ADD qty int NOT NULL DEFAULT 7")
    t = sync(db, pg_cluster, tenant, ["[dbo].[T]"])["tables"][0]
    assert t["added_columns"] == ["qty"]
    assert target_rows(tenant, "T", "id, name, qty") == [tuple(x) for x in source_rows(db, "dbo.T", "id, name, qty")]
    with tenant.connect() as c:  # the target column's type drifts from what the source maps to
        c.execute('ALTER TABLE "%s"."T" ALTER COLUMN qty TYPE bigint' % tenant.name)
    with pytest.raises(S.SyncError, match="incompatible change"):
        sync(db, pg_cluster, tenant, ["[dbo].[T]"])
