"""Holes a review found in the sync engine (issue 10), each shown against real PostgreSQL with the
in-memory source adapter: the state must agree with the target, pk_diff must never mass-delete on a
short key stream, repeating rowversions, report fields, the lock key, rewinds, atomicity."""

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from psycopg import sql

from .fake_source import COLS, FakeDb, FakeSource, engine, run, source_rows, target_rows

pytestmark = pytest.mark.sync

def state(tenant, table="T", cols="rows_total"):
    with tenant.connect() as c:
        return c.execute("SELECT %s FROM berqenas.sync_state WHERE target_schema = %%s AND target_table = %%s"
                         % cols, (tenant.name, table)).fetchone()


def table_db(n=10, table="T"):
    db = FakeDb()
    db.create("dbo", table, COLS, ["id"])
    for i in range(n):
        db.write("dbo", table, id=i, name="n%d" % i)
    return db


def tgt(tenant, table="T"):
    return sql.Identifier(tenant.name, table)


# ---- the state must agree with the target --------------------------------------------------------

@pytest.mark.parametrize("how", ["drop", "truncate", "recreate"])
def test_target_changed_out_of_band_is_reloaded(tenant, pg_conn, how):
    db = table_db(10)
    run(FakeSource(db), pg_conn, tenant)
    db.write("dbo", "T", id=3, name="three")
    with tenant.connect() as c:
        if how == "drop":
            c.execute(sql.SQL("DROP TABLE {}").format(tgt(tenant)))
        elif how == "truncate":
            c.execute(sql.SQL("TRUNCATE {}").format(tgt(tenant)))
        else:  # recreated by hand with one stale row: neither missing nor empty
            c.execute(sql.SQL("DROP TABLE {}").format(tgt(tenant)))
            c.execute(sql.SQL("CREATE TABLE {} (id integer NOT NULL PRIMARY KEY, name character varying(50), "
                              "rv bytea)").format(tgt(tenant)))
            c.execute(sql.SQL("INSERT INTO {} VALUES (99, 'stale', NULL)").format(tgt(tenant)))
    r = run(FakeSource(db), pg_conn, tenant)["tables"][0]
    assert target_rows(tenant) == source_rows(db)
    assert r["resync"] and "target" in r["resync"], r["resync"]
    assert r["watermark_from"] == "0x%016X" % 0
    assert state(tenant) == (10,)
    # and the next ordinary run is a plain delta again
    r = run(FakeSource(db), pg_conn, tenant)["tables"][0]
    assert r["resync"] is None and r["watermark_from"] != "0x%016X" % 0


# ---- pk_diff never mass-deletes on a short key stream ---------------------------------------------

PKD = [{"source": "[dbo].[T]", "delete_detection": "pk_diff"}]


def test_pk_diff_short_key_stream_is_refused(tenant, pg_conn):
    db = table_db(10)
    run(FakeSource(db), pg_conn, tenant, tables=PKD)
    db.delete("dbo", "T", 9)
    with pytest.raises(S.SyncError, match="pk_diff.*read 3 keys.*counts 9"):
        run(FakeSource(db, key_limit=3), pg_conn, tenant, tables=PKD)
    assert len(target_rows(tenant)) == 10  # nothing deleted
    r = run(FakeSource(db), pg_conn, tenant, tables=PKD)["tables"][0]
    assert r["deleted"] == 1 and target_rows(tenant) == source_rows(db)


def test_pk_diff_empty_stream_for_non_empty_target_needs_force(tenant, pg_conn):
    db = table_db(10)
    run(FakeSource(db), pg_conn, tenant, tables=PKD)
    db.tables[("dbo", "T")].rows.clear()
    with pytest.raises(S.SyncError, match="pk_diff.*no keys.*target holds 10 rows.*force"):
        run(FakeSource(db), pg_conn, tenant, tables=PKD)
    assert len(target_rows(tenant)) == 10
    r = run(FakeSource(db), pg_conn, tenant, tables=PKD, force=True)["tables"][0]
    assert r["deleted"] == 10 and target_rows(tenant) == [] and state(tenant) == (0,)


def test_pk_diff_max_delete_fraction(tenant, pg_conn):
    db = table_db(10)
    run(FakeSource(db), pg_conn, tenant, tables=PKD)
    for i in range(6):
        db.delete("dbo", "T", i)
    with pytest.raises(S.SyncError, match="would delete 6 of 10 rows.*max_delete_fraction 0.5"):
        run(FakeSource(db), pg_conn, tenant, tables=PKD)
    assert len(target_rows(tenant)) == 10  # the refused DELETE was rolled back
    r = run(FakeSource(db), pg_conn, tenant, tables=PKD, max_delete_fraction=0.6)["tables"][0]
    assert r["deleted"] == 6 and target_rows(tenant) == source_rows(db) and state(tenant) == (4,)
    with pytest.raises(S.SyncError, match="max_delete_fraction"):
        engine(FakeSource(db), pg_conn, tenant, max_delete_fraction=1.5)


def test_mode_full_obeys_the_same_delete_guard(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "F", COLS[:2], ["id"])
    for i in range(10):
        db.write("dbo", "F", id=i, name="n%d" % i)
    full = [{"source": "[dbo].[F]", "mode": "full"}]
    run(FakeSource(db), pg_conn, tenant, tables=full)
    for i in range(8):
        db.delete("dbo", "F", i)
    with pytest.raises(S.SyncError, match="would delete 8 of 10 rows"):
        run(FakeSource(db), pg_conn, tenant, tables=full)
    assert len(target_rows(tenant, "F")) == 10
    run(FakeSource(db), pg_conn, tenant, tables=full, force=True)
    assert target_rows(tenant, "F") == source_rows(db, "F")


def test_pk_diff_every_key_type(tenant, pg_conn):
    """A composite key of every type the mapping supports as a key; a datetimeoffset key column occupies
    two target columns (instant + offset) but is one key value."""
    import datetime as dt
    import decimal
    import uuid

    db = FakeDb()
    kcols = [("k_dto", "datetimeoffset", {"DATETIME_PRECISION": 7}), ("k_uuid", "uniqueidentifier", None),
             ("k_dec", "decimal", {"NUMERIC_PRECISION": 38, "NUMERIC_SCALE": 10}), ("k_s", "nvarchar",
             {"CHARACTER_MAXIMUM_LENGTH": 20}), ("k_d2", "datetime2", {"DATETIME_PRECISION": 7}),
             ("k_bin", "varbinary", {"CHARACTER_MAXIMUM_LENGTH": 16}), ("k_date", "date", None),
             ("k_t", "time", {"DATETIME_PRECISION": 3}), ("k_big", "bigint", None), ("k_bit", "bit", None)]
    db.create("dbo", "K", kcols + [("v", "int", None), ("rv", "timestamp", None)], [c[0] for c in kcols])
    tz = dt.timezone(dt.timedelta(hours=5, minutes=45))

    def key(i):
        return dict(k_dto=dt.datetime(2026, 1, 1, 12, i, tzinfo=tz), k_uuid=uuid.UUID(int=i),
                    k_dec=decimal.Decimal("12345678901234567890.%010d" % i), k_s="ü%d\x00" % i,
                    k_d2=dt.datetime(2026, 2, 3, 4, 5, 6, i), k_bin=bytes([i, 0, 255]), k_date=dt.date(2026, 3, i + 1),
                    k_t=dt.time(1, 2, 3, i * 1000), k_big=2 ** 62 + i, k_bit=bool(i % 2))

    for i in range(6):
        db.write("dbo", "K", v=i, **key(i))
    tables = [{"source": "[dbo].[K]", "delete_detection": "pk_diff"}]
    run(FakeSource(db), pg_conn, tenant, tables=tables)
    db.delete("dbo", "K", *key(2).values())
    r = run(FakeSource(db), pg_conn, tenant, tables=tables)["tables"][0]
    assert r["deleted"] == 1
    assert target_rows(tenant, "K", "v") == [(0,), (1,), (3,), (4,), (5,)]
    assert target_rows(tenant, "K", "k_dto_offset_min")[0] == (345,)


# ---- a source whose rowversion repeats (a view) ---------------------------------------------------

def test_view_with_repeating_rowversion_resumes_without_losing_the_tie(tenant, pg_conn):
    """A view over a join shows one base row's rowversion on several rows. A page must never end inside a
    run of equal rowversions: the next page (or the retry after a dropped connection) resumes at last + 1."""
    db = FakeDb()
    db.create("dbo", "V", COLS, ["id"], kind="VIEW")
    rvs = [2001, 2002, 2003, 2004, 2005, 2005, 2005, 2005, 2006, 2007]
    for i, rv in enumerate(rvs):
        db.write("dbo", "V", _rv=rv, id=i, name="v%d" % i)
    db.dbts = 2007
    # batches of 3, pages of 4: the first page would end at the second 2005; the stream drops after it
    src = FakeSource(db, batch_size=3, fail_after_rows=6)
    r = run(src, pg_conn, tenant, tables=["[dbo].[V]"], commit_rows=4)["tables"][0]
    assert src.connects >= 2  # the drop happened and was retried
    assert target_rows(tenant, "V") == source_rows(db, "V")
    assert r["inserted"] == 10 and state(tenant, "V") == (10,)


# ---- per-table report fields and state counters ---------------------------------------------------

def test_nul_notes_are_per_table(tenant, pg_conn):
    db = table_db(3, "B")
    db.create("dbo", "A", COLS, ["id"])
    db.write("dbo", "A", id=1, name="x\x00y")
    run(FakeSource(db), pg_conn, tenant, tables=["[dbo].[B]"])  # B is current: nothing pending next time
    r = run(FakeSource(db), pg_conn, tenant, tables=["[dbo].[A]", "[dbo].[B]"])
    a, b = r["tables"]
    assert any("U+0000" in n for n in a["precision_notes"])
    assert not any("U+0000" in n for n in b["precision_notes"]), b["precision_notes"]


def test_counts_and_nul_notes_survive_a_retry(tenant, pg_conn):
    db = FakeDb()
    db.create("dbo", "T", COLS, ["id"])
    for i in range(12):
        db.write("dbo", "T", id=i, name=("n\x00%d" if i in (1, 8) else "n%d") % i)
    src = FakeSource(db, batch_size=3, fail_after_rows=6)  # drops after the first page was committed
    r = run(src, pg_conn, tenant, commit_rows=4)["tables"][0]
    assert src.connects >= 2
    assert (r["inserted"], r["updated"]) == (12, 0)
    assert "name: U+0000 removed in 2 value(s) (nul_character: strip)" in r["precision_notes"], r["precision_notes"]


def test_rows_total_after_a_full_read_counts_the_target(tenant, pg_conn):
    db = table_db(10)
    run(FakeSource(db), pg_conn, tenant)
    with tenant.connect() as c:  # the state row is lost (removed by hand, job renamed): the next run reads all
        c.execute("DELETE FROM berqenas.sync_state WHERE target_schema = %s", (tenant.name,))
    db.write("dbo", "T", id=10, name="new")
    run(FakeSource(db), pg_conn, tenant)
    assert target_rows(tenant) == source_rows(db)
    assert state(tenant) == (11,)


def test_initial_done_survives_a_failed_delta(tenant, pg_conn):
    db = table_db(10)
    run(FakeSource(db), pg_conn, tenant)
    assert state(tenant, cols="initial_done") == (True,)
    for i in range(10):
        db.write("dbo", "T", id=i, name="u%d" % i)
    with pytest.raises(S.SourceError):
        run(FakeSource(db, batch_size=3, fail_after_rows=6), pg_conn, tenant, retries=0)
    assert state(tenant, cols="initial_done, hwm IS NOT NULL") == (True, True)
    assert 0 < sum(1 for _i, n in target_rows(tenant) if n.startswith("u")) < 10  # a page was committed


# ---- the job lock key -----------------------------------------------------------------------------

def test_jobs_whose_names_hash_alike_do_not_lock_each_other(tenant, pg_conn, pg_cluster):
    with tenant.connect() as c:  # two job names with equal 32-bit hashtext()
        a, b = c.execute("SELECT min(j), max(j) FROM (SELECT %s || g AS j FROM generate_series(1, 300000) g) x "
                         "GROUP BY hashtext(j) HAVING count(*) > 1 LIMIT 1", (tenant.name + "-",)).fetchone()
        assert c.execute("SELECT hashtext(%s) = hashtext(%s)", (a, b)).fetchone()[0]
    db = table_db(3)
    holder = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=False)
    try:
        first = S.SyncEngine(FakeSource(db), holder, job=a, owner_role=tenant.owner, lock_timeout=0.2)
        S.ensure_state_table(holder)
        first.acquire_lock()
        second = S.SyncEngine(FakeSource(db), pg_conn, job=b, owner_role=tenant.owner, lock_timeout=0.5,
                              commit_rows=4)
        r = second.run(S.table_specs(["[dbo].[T]"], tenant.name))  # not locked out by job a
        assert r["tables"][0]["inserted"] == 3
        with pytest.raises(S.LockedError):  # the same job still is
            S.SyncEngine(FakeSource(db), pg_conn, job=a, owner_role=tenant.owner, lock_timeout=0.3).run(
                S.table_specs(["[dbo].[T]"], tenant.name))
        first.release_lock()
    finally:
        holder.close()


# ---- rewinds and atomicity ------------------------------------------------------------------------

def test_rewind_detected_by_dbts_alone(tenant, pg_conn):
    """A failover to an asynchronous replica that lost log keeps the recovery GUIDs: only @@DBTS + 1 below
    the stored watermark shows that changes the sync already copied are gone (and values will repeat)."""
    db = table_db(6)
    run(FakeSource(db), pg_conn, tenant)
    guids = (db.guid, db.fork)
    db.restore(2003, keep_guids=True)
    assert (db.guid, db.fork) == guids
    with pytest.raises(S.RewindError, match=r"@@DBTS \+ 1 \(0x00000000000007D4\) is below the stored watermark "
                                            r"0x00000000000007D7"):
        run(FakeSource(db), pg_conn, tenant)
    r = run(FakeSource(db), pg_conn, tenant, on_rewind="full_resync")["tables"][0]
    assert "@@DBTS" in r["resync"] and target_rows(tenant) == source_rows(db) and state(tenant) == (3,)


def test_failure_between_data_and_watermark_writes_commits_neither(tenant, pg_conn):
    """A trigger on the state table fails the watermark write of the second page, after that page's rows
    were written in the same transaction: neither survives, the first page and its watermark do."""
    db = table_db(12)
    job = "job-" + tenant.name
    S.ensure_state_table(pg_conn)
    fn = sql.Identifier("berqenas", "bq_fail_" + tenant.name)
    with tenant.connect() as c:
        c.execute(sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "IF NEW.job = {} AND NEW.hwm >= '\\x00000000000007D5'::bytea THEN "
                          "RAISE EXCEPTION 'injected: watermark write failed'; END IF; RETURN NEW; END $$").format(
                              fn, sql.Literal(job)))
        c.execute(sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON berqenas.sync_state FOR EACH ROW "
                          "EXECUTE FUNCTION {}()").format(sql.Identifier("bq_fail_" + tenant.name), fn))
    try:
        with pytest.raises(psycopg.errors.RaiseException, match="injected"):
            run(FakeSource(db, batch_size=4), pg_conn, tenant, commit_rows=4)
        # page 1 (rows with rv 0x7D1..0x7D3; the 4th moved to page 2) committed with watermark 0x7D4
        assert target_rows(tenant, cols="id") == [(0,), (1,), (2,)]
        assert state(tenant, cols="hwm, rows_total") == (b"\x00\x00\x00\x00\x00\x00\x07\xd4", 3)
    finally:
        with tenant.connect() as c:
            c.execute(sql.SQL("DROP TRIGGER {} ON berqenas.sync_state").format(
                sql.Identifier("bq_fail_" + tenant.name)))
            c.execute(sql.SQL("DROP FUNCTION {}()").format(fn))
    run(FakeSource(db), pg_conn, tenant)
    assert target_rows(tenant) == source_rows(db) and state(tenant) == (12,)
