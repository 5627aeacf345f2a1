"""The sync leaves a target as autovacuum would after a load that wrote all of its rows (issue 10, speed): a
VACUUM (ANALYZE) of the table once the load has committed, never after an ordinary delta or in check mode, and a
login role that may not vacuum the table gets a warning, not a failed run."""

import time

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from psycopg import sql

from .fake_source import COLS, FakeDb, FakeSource, run, source_rows, target_rows

pytestmark = pytest.mark.sync


def vacuum_stats(tenant, table="T", want=None):
    """(vacuum_count, analyze_count, relallvisible, relpages) of the target; with ``want``, polls (the
    statistics are shared asynchronously) until vacuum_count reaches it or 30 s have passed."""
    deadline = time.monotonic() + 30
    with tenant.connect() as c:
        while True:
            c.execute("SELECT pg_stat_clear_snapshot()")
            got = c.execute(
                "SELECT s.vacuum_count, s.analyze_count, c.relallvisible, c.relpages FROM pg_stat_all_tables s"
                " JOIN pg_class c ON c.oid = s.relid WHERE s.relid = %s::regclass",
                (sql.Identifier(tenant.name, table).as_string(c),)).fetchone()
            if want is None or got[0] >= want or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def fake_db(n=10, table="T", cols=COLS, pk=("id",)):
    db = FakeDb()
    db.create("dbo", table, cols, list(pk))
    for i in range(n):
        db.write("dbo", table, id=i, name="n%d" % i)
    return db


def test_whole_table_loads_are_vacuumed_and_deltas_are_not(tenant, pg_conn):
    # durable commits, as on a production server: the harness's synchronous_commit=off delays hint bits (and so
    # the visibility map) until the WAL writer has flushed the load's commits
    pg_conn.execute("SET synchronous_commit = on")
    pg_conn.commit()
    db = fake_db(10)
    r = run(FakeSource(db), pg_conn, tenant)["tables"][0]
    assert (r["inserted"], r["vacuumed"]) == (10, True), r
    vac, ana, allvis, pages = vacuum_stats(tenant, want=1)
    assert (vac, ana) == (1, 1)
    assert pages > 0 and allvis == pages  # VACUUM set the visibility map of every page the load wrote
    for i in range(3):
        db.write("dbo", "T", id=i, name="u%d" % i)
    r = run(FakeSource(db), pg_conn, tenant, check_mode=True)["tables"][0]
    assert (r["pending"], r["vacuumed"]) == (3, False), r
    r = run(FakeSource(db), pg_conn, tenant)["tables"][0]  # an ordinary delta
    assert (r["updated"], r["vacuumed"]) == (3, False), r
    assert target_rows(tenant) == source_rows(db)
    assert vacuum_stats(tenant)[:2] == (1, 1)
    r = run(FakeSource(db), pg_conn, tenant, full=True)["tables"][0]  # a full reload writes every row again
    assert (r["resync"], r["inserted"], r["vacuumed"]) == ("full", 10, True), r
    assert vacuum_stats(tenant, want=2)[:2] == (2, 2)
    # a column added on the source: every row is re-read and updated once (dead row versions for all of them)
    db.tables[("dbo", "T")].columns.append({"COLUMN_NAME": "qty", "DATA_TYPE": "int", "IS_NULLABLE": "YES",
                                            "ORDINAL_POSITION": 4})
    r = run(FakeSource(db), pg_conn, tenant)["tables"][0]
    assert (r["added_columns"], r["updated"], r["vacuumed"]) == (["qty"], 10, True), r
    assert vacuum_stats(tenant, want=3)[:2] == (3, 3)


def test_mode_full_is_vacuumed_only_when_it_loads_an_empty_target(tenant, pg_conn):
    cols = [c for c in COLS if c[1] != "timestamp"]  # no rowversion column: mode full
    db = fake_db(8, cols=cols)
    tables = [{"source": "[dbo].[T]", "mode": "full"}]
    r = run(FakeSource(db), pg_conn, tenant, tables=tables)["tables"][0]
    assert (r["inserted"], r["vacuumed"]) == (8, True), r
    assert vacuum_stats(tenant, want=1)[0] == 1
    db.write("dbo", "T", id=2, name="changed")
    r = run(FakeSource(db), pg_conn, tenant, tables=tables)["tables"][0]
    assert (r["updated"], r["vacuumed"]) == (1, False), r
    assert vacuum_stats(tenant)[0] == 1


def test_a_login_that_may_not_vacuum_the_target_gets_a_warning_and_the_run_goes_on(tenant, pg_conn, pg_cluster):
    """The target T belongs to another role (the tenant's read-only login) and the sync's login (a member of the
    tenant's owner role) may only write it: PostgreSQL skips the VACUUM with a WARNING. The run loads T, warns,
    and goes on to U, which the sync creates as the owner role and so may vacuum."""
    S.ensure_state_table(pg_conn)
    app = tenant.name + "_app"
    with tenant.connect() as c:
        c.execute(sql.SQL("CREATE TABLE {} (id integer NOT NULL PRIMARY KEY, name character varying(50), rv bytea)")
                  .format(sql.Identifier(tenant.name, "T")))
        c.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(tenant.name, "T"),
                                                              sql.Identifier(tenant.name + "_ro")))
        c.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            sql.Identifier(tenant.name, "T"), sql.Identifier(app)))
        c.execute(sql.SQL("GRANT USAGE ON SCHEMA berqenas TO {}").format(sql.Identifier(app)))
        c.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON berqenas.sync_state, berqenas.sync_job TO {}").format(
            sql.Identifier(app)))
    db = fake_db(10)
    db.create("dbo", "U", COLS, ["id"])
    for i in range(5):
        db.write("dbo", "U", id=i, name="u%d" % i)
    logged = []
    with psycopg.connect(**pg_cluster.conninfo(tenant.db, user=app), autocommit=False) as conn:
        out = run(FakeSource(db), conn, tenant, tables=("[dbo].[T]", "[dbo].[U]"), log=logged.append)
        assert conn.autocommit is False
    t, u = out["tables"]
    assert (t["inserted"], t["vacuumed"]) == (10, False), t
    assert (u["inserted"], u["vacuumed"]) == (5, True), u
    assert target_rows(tenant) == source_rows(db)
    assert target_rows(tenant, "U") == source_rows(db, "U")
    assert [m for m in logged if "VACUUM (ANALYZE)" in m and "[dbo].[T]" in m], logged
    assert not [m for m in logged if "[dbo].[U]" in m], logged
    assert vacuum_stats(tenant, "U", want=1)[0] == 1
    assert vacuum_stats(tenant, "T")[0] == 0


def test_a_first_load_resumed_by_the_next_run_is_vacuumed_when_it_completes(tenant, pg_conn):
    db = fake_db(10)
    with pytest.raises(S.SourceError):  # the stream drops after a committed page: a partial first load
        run(FakeSource(db, batch_size=3, fail_after_rows=6), pg_conn, tenant, retries=0)
    assert 0 < len(target_rows(tenant)) < 10
    assert vacuum_stats(tenant)[0] == 0  # nothing vacuumed before the load is whole
    r = run(FakeSource(db), pg_conn, tenant)["tables"][0]  # resumes at the stored watermark
    assert r["watermark_from"] != "0x%016X" % 0 and r["vacuumed"] is True, r
    assert target_rows(tenant) == source_rows(db)
    assert vacuum_stats(tenant, want=1)[0] == 1


def test_a_vacuum_that_waits_past_lock_timeout_gives_up_with_a_warning(tenant, pg_conn):
    """Another session holds SHARE UPDATE EXCLUSIVE on the target (it lets the load write, not a VACUUM run): the
    VACUUM waits lock_timeout, warns, and the run ends ok with the session's lock_timeout as it was."""
    with tenant.connect() as c:
        c.execute(sql.SQL("CREATE TABLE {} (id integer NOT NULL PRIMARY KEY, name character varying(50), rv bytea)")
                  .format(sql.Identifier(tenant.name, "T")))
        c.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(tenant.name, "T"),
                                                              sql.Identifier(tenant.owner)))
    pg_conn.execute("SET lock_timeout = '17s'")
    pg_conn.commit()
    db = fake_db(10)
    logged = []
    with tenant.connect(autocommit=False) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(
            sql.Identifier(tenant.name, "T")))
        t0 = time.monotonic()
        r = run(FakeSource(db), pg_conn, tenant, lock_timeout=0.3, log=logged.append)["tables"][0]
        waited = time.monotonic() - t0
        holder.rollback()
    assert (r["inserted"], r["vacuumed"]) == (10, False), r
    assert 0.3 <= waited < 15, waited  # its own lock_timeout, not the session's 17 s
    assert [m for m in logged if "VACUUM (ANALYZE)" in m and "lock" in m], logged
    assert target_rows(tenant) == source_rows(db)
    assert pg_conn.execute("SHOW lock_timeout").fetchone()[0] == "17s"
    pg_conn.rollback()
    assert vacuum_stats(tenant)[0] == 0
