"""The sync engine against real PostgreSQL with an in-memory source adapter (logic, fast)."""

import datetime as dt
import decimal
import threading
import uuid

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

from .fake_source import COLS, FakeDb, FakeSource, engine, run, source_rows, target_rows

pytestmark = pytest.mark.sync

def test_initial_delta_noop_and_ro_role(tenant, pg_conn, pg_cluster):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(10):
        db.write("dbo", "T", id=i, name="n%d" % i)
    r = run(FakeSource(db), pg_conn, tenant)
    assert r["changed"] and r["tables"][0]["inserted"] == 10
    assert target_rows(tenant) == source_rows(db)
    # delta: 2 updates, 1 insert
    db.write("dbo", "T", id=3, name="three")
    db.write("dbo", "T", id=7, name="seven")
    db.write("dbo", "T", id=42, name="new")
    r = run(FakeSource(db), pg_conn, tenant)
    t = r["tables"][0]
    assert (t["inserted"], t["updated"], t["deleted"]) == (1, 2, 0)
    assert target_rows(tenant) == source_rows(db)
    assert t["watermark_to"] == "0x%016X" % (db.dbts + 1)
    # nothing pending: unchanged, and no state write
    with tenant.connect() as c:
        before = c.execute("SELECT last_run_at, hwm FROM berqenas.sync_state WHERE target_schema=%s",
                           (tenant.name,)).fetchone()
    r = run(FakeSource(db), pg_conn, tenant)
    assert not r["changed"] and r["tables"][0]["inserted"] == 0
    with tenant.connect() as c:
        assert c.execute("SELECT last_run_at, hwm FROM berqenas.sync_state WHERE target_schema=%s",
                         (tenant.name,)).fetchone() == before
        # target created under SET ROLE owner: owned by it, readable by the tenant's ro role
        assert c.execute("SELECT tableowner FROM pg_tables WHERE schemaname=%s AND tablename='T'",
                         (tenant.name,)).fetchone()[0] == tenant.owner
    with pg_cluster.tcp_connect(tenant.db, tenant.name + "_ro", tenant.ro_password) as ro:
        assert ro.execute('SELECT count(*) FROM "%s"."T"' % tenant.name).fetchone()[0] == 11
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ro.execute("SELECT * FROM berqenas.sync_state")


def test_open_transaction_row_is_picked_up_later(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    db.write("dbo", "T", id=1, name="a")
    tx = db.begin()
    db.write("dbo", "T", txn=tx, id=2, name="in-flight")  # gets rv below the next write's
    db.write("dbo", "T", id=3, name="c")                  # committed, higher rv
    r = run(FakeSource(db), pg_conn, tenant)
    assert target_rows(tenant) == [(1, "a")]  # window stops below the active rowversion
    assert r["tables"][0]["watermark_to"] == "0x%016X" % 2002
    db.commit(tx)
    run(FakeSource(db), pg_conn, tenant)
    assert target_rows(tenant) == source_rows(db) == [(1, "a"), (2, "in-flight"), (3, "c")]


def test_source_drop_mid_stream_is_retried(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(20):
        db.write("dbo", "T", id=i, name="n%d" % i)
    src = FakeSource(db, fail_after_rows=10)
    r = run(src, pg_conn, tenant)
    assert src.connects >= 2
    assert target_rows(tenant) == source_rows(db)
    assert r["tables"][0]["inserted"] + 0 <= 20  # pages committed before the drop are not re-inserted


def test_wrong_password_changes_nothing(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    db.write("dbo", "T", id=1, name="a")
    with pytest.raises(S.SourceError, match="login failed"):
        run(FakeSource(db, refuse=True), pg_conn, tenant)
    with tenant.connect() as c:
        assert c.execute("SELECT count(*) FROM berqenas.sync_state WHERE target_schema=%s",
                         (tenant.name,)).fetchone()[0] == 0
        assert c.execute("SELECT to_regclass(%s)", ('"%s"."T"' % tenant.name,)).fetchone()[0] is None


def test_restore_detected_then_full_resync(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(5):
        db.write("dbo", "T", id=i, name="n%d" % i)
    run(FakeSource(db), pg_conn, tenant)
    run(FakeSource(db), pg_conn, tenant)  # ordinary run: no rewind
    db.restore(2003)  # rows 3 and 4 were written after that backup
    db.write("dbo", "T", id=0, name="after-restore")
    with pytest.raises(S.RewindError, match="restored or failed over"):
        run(FakeSource(db), pg_conn, tenant)
    assert (0, "n0") in target_rows(tenant)
    r = run(FakeSource(db), pg_conn, tenant, on_rewind="full_resync")
    assert r["tables"][0]["resync"]
    assert target_rows(tenant) == source_rows(db)


def test_delete_detection_pk_diff_and_soft_delete(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    db.create("dbo", "S", COLS + [("is_deleted", "bit", None)], ["id"])
    for i in range(6):
        db.write("dbo", "T", id=i, name="n%d" % i)
        db.write("dbo", "S", id=i, name="s%d" % i, is_deleted=False)
    tables = [{"source": "[dbo].[T]", "delete_detection": "pk_diff"},
              {"source": "[dbo].[S]", "delete_detection": "soft_delete", "soft_delete_column": "is_deleted",
               "soft_delete_value": True}]
    run(FakeSource(db), pg_conn, tenant, tables=tables)
    db.delete("dbo", "T", 2)
    db.delete("dbo", "T", 5)
    db.write("dbo", "S", id=1, is_deleted=True)
    db.write("dbo", "S", id=9, name="born-deleted", is_deleted=True)
    r = run(FakeSource(db), pg_conn, tenant, tables=tables)
    assert [t["deleted"] for t in r["tables"]] == [2, 1]
    assert target_rows(tenant) == source_rows(db)
    assert target_rows(tenant, "S", "id") == [(0,), (2,), (3,), (4,), (5,)]


def test_types_precision_and_offsets(tenant, pg_conn):
    db = FakeDb()
    tz = dt.timezone(dt.timedelta(hours=-3, minutes=-30))
    db.create("dbo", "Ty", [
        ("id", "uniqueidentifier", None),
        ("d", "decimal", {"NUMERIC_PRECISION": 38, "NUMERIC_SCALE": 10}),
        ("m", "money", None),
        ("tiny", "tinyint", None),
        ("b", "bit", None),
        ("f", "float", {"NUMERIC_PRECISION": 53}),
        ("d2", "datetime2", {"DATETIME_PRECISION": 7}),
        ("t7", "time", {"DATETIME_PRECISION": 7}),
        ("dto", "datetimeoffset", {"DATETIME_PRECISION": 7}),
        ("s", "nvarchar", {"CHARACTER_MAXIMUM_LENGTH": -1}),
        ("bin", "varbinary", {"CHARACTER_MAXIMUM_LENGTH": -1}),
        ("rv", "timestamp", None),
    ], ["id"])
    k = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    big = decimal.Decimal("1234567890123456789012345678.0123456789")
    db.write("dbo", "Ty", id=k, d=big, m=decimal.Decimal("-922337203685477.5808"), tiny=255, b=True, f=1e308,
             d2=dt.datetime(9999, 12, 31, 23, 59, 59, 999999), t7=dt.time(23, 59, 59, 999999),
             dto=dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=tz), s="a\x00b 𝄞", bin=b"\x00\xff")
    db.write("dbo", "Ty", id=uuid.UUID(int=1))  # NULLs everywhere
    r = run(FakeSource(db), pg_conn, tenant, tables=["[dbo].[Ty]"])
    notes = " | ".join(r["tables"][0]["precision_notes"])
    assert "d2: datetime2(7): the 100-ns digit is dropped" in notes and "t7: time(7)" in notes
    assert "dto_offset_min" in notes and "U+0000 removed in 1 value" in notes
    with tenant.connect() as c:
        row = c.execute('SELECT id, d, m, tiny, b, f, d2, t7, dto, dto_offset_min, s, bin, length(rv) FROM '
                        '"%s"."Ty" WHERE id = %%s' % tenant.name, (k,)).fetchone()
        types = dict(c.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                               "attrelid = %s::regclass AND attnum > 0", ('"%s"."Ty"' % tenant.name,)).fetchall())
        nulls = c.execute('SELECT d, dto, dto_offset_min, s FROM "%s"."Ty" WHERE id = %%s' % tenant.name,
                          (uuid.UUID(int=1),)).fetchone()
    assert row[:7] == (k, big, decimal.Decimal("-922337203685477.5808"), 255, True, 1e308,
                       dt.datetime(9999, 12, 31, 23, 59, 59, 999999))
    assert row[7] == dt.time(23, 59, 59, 999999)
    assert row[8] == dt.datetime(2024, 2, 29, 15, 30, 0, 123456, tzinfo=dt.UTC)
    assert row[9] == -210 and row[10] == "ab 𝄞" and row[11] == b"\x00\xff" and row[12] == 8
    assert nulls == (None, None, None, None)
    assert types["d"] == "numeric(38,10)" and types["m"] == "numeric(19,4)" and types["tiny"] == "smallint"
    assert types["dto"] == "timestamp(6) with time zone" and types["dto_offset_min"] == "smallint"
    assert types["rv"] == "bytea" and types["id"] == "uuid"


def test_nul_fail_rule(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    db.write("dbo", "T", id=1, name="x\x00y")
    with pytest.raises(S.SyncError, match="U\\+0000"):
        run(FakeSource(db), pg_conn, tenant, nul_character="fail")


def test_schema_evolution_add_and_incompatible(tenant, pg_conn):
    db = FakeDb()
    t = db.create("dbo", "T", COLS, ["id"])
    for i in range(3):
        db.write("dbo", "T", id=i, name="n%d" % i)
    run(FakeSource(db), pg_conn, tenant)
    # add a NOT NULL DEFAULT column: existing rows get the value without a rowversion bump
    t.columns.append({"COLUMN_NAME": "qty", "DATA_TYPE": "int", "IS_NULLABLE": "NO", "ORDINAL_POSITION": 4})
    for r in t.rows.values():
        r["qty"] = 7
    r = run(FakeSource(db), pg_conn, tenant)
    assert r["tables"][0]["added_columns"] == ["qty"]
    assert target_rows(tenant, cols="id, name, qty") == sorted(
        tuple(x.get(c) for c in ("id", "name", "qty")) for x in t.rows.values())
    t.columns[1]["CHARACTER_MAXIMUM_LENGTH"] = 10
    with pytest.raises(S.SyncError, match="incompatible change"):
        run(FakeSource(db), pg_conn, tenant)


def test_check_mode_counts_without_writing(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(4):
        db.write("dbo", "T", id=i, name="n")
    r = run(FakeSource(db), pg_conn, tenant, check_mode=True)
    assert r["changed"] and r["tables"][0]["pending"] == 4
    with tenant.connect() as c:
        assert c.execute("SELECT to_regclass(%s)", ('"%s"."T"' % tenant.name,)).fetchone()[0] is None
    run(FakeSource(db), pg_conn, tenant)
    r = run(FakeSource(db), pg_conn, tenant, check_mode=True)
    assert not r["changed"] and r["tables"][0]["pending"] == 0
    db.write("dbo", "T", id=1, name="changed")
    assert run(FakeSource(db), pg_conn, tenant, check_mode=True)["tables"][0]["pending"] == 1
    assert (1, "n") in target_rows(tenant)


def test_concurrent_run_reports_locked(tenant, pg_conn, pg_cluster):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    db.write("dbo", "T", id=1, name="a")
    holder = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (S.LOCK_CLASS, S.job_lock_id(holder, "job-" + tenant.name)))
    with pytest.raises(S.LockedError, match="another run holds the lock"):
        run(FakeSource(db), pg_conn, tenant, lock_timeout=0.5)
    t = threading.Timer(0.5, lambda: holder.execute("SELECT pg_advisory_unlock_all()"))
    t.start()
    r = run(FakeSource(db), pg_conn, tenant, lock_timeout=10)  # waits, then runs
    t.join()
    holder.close()
    assert r["tables"][0]["inserted"] == 1


def test_hostile_identifiers(tenant, pg_conn):
    db = FakeDb()
    name = "we]ird'; DROP \"x\" ünï𝄞"
    col = "c]ol;'\"" + "y" * 20
    db.create("s[1]", name, [("id", "int", None), (col, "int", None), ("rv", "timestamp", None)], ["id"])
    db.write("s[1]", name, id=1, **{col: 5})
    run(FakeSource(db), pg_conn, tenant, tables=["[s[1]]].[%s]" % name.replace("]", "]]")])
    with tenant.connect() as c:
        assert c.execute('SELECT id, "%s" FROM "%s"."%s"' % (col.replace('"', '""'), tenant.name,
                                                             name.replace('"', '""'))).fetchall() == [(1, 5)]
    long = "x" * 128
    db.create("dbo", long, [("id", "int", None), ("rv", "timestamp", None)], ["id"])
    with pytest.raises(S.SyncError, match="PostgreSQL allows 63"):
        run(FakeSource(db), pg_conn, tenant, tables=["[dbo].[%s]" % long])


def test_target_fillfactor_keeps_updates_hot(tenant, pg_conn):
    """Targets are created WITH (fillfactor = 50) and the rowversion column is not indexed, so the sync's
    updates are HOT (no index entry written) even when a delta updates every row of a table many heap pages
    long (at fill factor 75 about 40% of them are); the staging table kept across a window's pages is dropped."""
    import time

    n = 1500
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(n):
        db.write("dbo", "T", id=i, name="n%05d" % i)
    run(FakeSource(db), pg_conn, tenant, commit_rows=500)
    for i in range(n):
        db.write("dbo", "T", id=i, name="r%05d" % i)  # the same size: a row that changes keeps its width
    t = run(FakeSource(db), pg_conn, tenant, commit_rows=500)["tables"][0]
    assert (t["inserted"], t["updated"]) == (0, n)
    assert target_rows(tenant) == source_rows(db)
    oid = '"%s"."T"' % tenant.name
    pg_conn.execute("SELECT pg_stat_force_next_flush()")
    pg_conn.commit()
    with tenant.connect() as c:
        rel = c.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (oid,)).fetchone()[0]
        assert rel == ["fillfactor=%d" % S.TARGET_FILLFACTOR]
        idx = c.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (oid,)).fetchone()[0]
        assert idx == 1  # the primary key only: the rowversion column is not indexed
        pages = c.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                          (oid,)).fetchone()[0]
        assert pages >= 10, pages  # many heap pages: a one-page table would keep any update HOT
        deadline = time.monotonic() + 30
        while True:
            c.execute("SELECT pg_stat_clear_snapshot()")
            upd, hot = c.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass",
                                 (oid,)).fetchone()
            if upd >= n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert upd == n and hot == n, (upd, hot)
    with pytest.raises(S.SyncError, match="fillfactor"):
        engine(FakeSource(db), pg_conn, tenant, fillfactor=5)
    left = pg_conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'bq\\_stg\\_%%' AND relpersistence = 't'"
                           " AND pg_table_is_visible(oid)").fetchone()[0]
    pg_conn.rollback()
    assert left == 0


def test_a_key_committed_by_another_writer_during_the_page_falls_back_to_on_conflict(tenant, pg_conn):
    """The staged upsert is one MERGE (PostgreSQL 15), whose insert is not speculative: a key another writer
    commits while the page runs (an application on the target) fails it with a unique violation. The page is
    undone to a savepoint and applied with INSERT .. ON CONFLICT, whose guard updates the older row."""
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(5):
        db.write("dbo", "T", id=i, name="n%d" % i)
    run(FakeSource(db), pg_conn, tenant)
    db.write("dbo", "T", id=1, name="one")
    db.write("dbo", "T", id=99, name="new")
    other = tenant.connect(autocommit=False)
    try:
        other.execute(psycopg.sql.SQL("INSERT INTO {} (id, name, rv) VALUES (99, 'app', %s)").format(
            psycopg.sql.Identifier(tenant.name, "T")), (b"\x00" * 7 + b"\x01",))
        out = {}
        th = threading.Thread(target=lambda: out.update(r=run(FakeSource(db), pg_conn, tenant, commit_rows=50)))
        th.start()
        with tenant.connect() as watch:  # the engine's insert of key 99 waits for the other transaction
            for _ in range(600):
                if watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                 " AND wait_event_type = 'Lock' AND query LIKE 'MERGE%%'").fetchone()[0]:
                    break
                th.join(0.1)
            else:
                raise AssertionError("the engine's MERGE never waited for the other writer's key")
        other.commit()
        th.join(60)
    finally:
        other.close()
    t = out["r"]["tables"][0]
    assert (t["inserted"], t["updated"]) == (0, 2), t
    assert target_rows(tenant) == source_rows(db)


def test_temp_buffers_raised_never_lowered_best_effort(pg_cluster, sync_platform_db):
    """The engine's session gets room for a page's staging table; a larger setting is kept, and a session
    that already used a temp table (PostgreSQL then refuses the change) stays usable."""
    def tb(c):
        return c.execute("SELECT pg_size_bytes(current_setting('temp_buffers'))").fetchone()[0]

    info = pg_cluster.conninfo(sync_platform_db)
    with psycopg.connect(**info, autocommit=False) as c:
        S.size_temp_buffers(c)
        assert tb(c) == 64 * 1024 * 1024
    with psycopg.connect(**info, autocommit=False) as c:
        c.execute("SET temp_buffers = '256MB'")
        S.size_temp_buffers(c)
        assert tb(c) == 256 * 1024 * 1024
    with psycopg.connect(**info, autocommit=False) as c:
        c.execute("CREATE TEMP TABLE bq_used (x int)")
        c.execute("INSERT INTO bq_used VALUES (1)")  # the session's local buffers now exist
        c.commit()
        S.size_temp_buffers(c)
        assert tb(c) == 8 * 1024 * 1024 and c.execute("SELECT count(*) FROM bq_used").fetchone()[0] == 1
