"""direction both under SIGKILL: the whole process group of a run killed at >= 20 seeded points (the N-th
PostgreSQL statement of the run) over mixed two-way traffic, then resumed: both sides equal, every change of
either side present once."""

import os
import random
import signal
import time

import pytest
from psycopg import sql

from .emu import child_config, spawn

pytestmark = pytest.mark.sync

SEED = 16_2026_12
KILLS = 20
N = 2000  # ids < N/2 are edited on SQL Server, the others in PostgreSQL (no conflicts: the model is exact)


def test_kill_at_seeded_points_over_two_way_traffic_then_resume(emulated_mssql_db, pg_cluster, tenant):
    kill_over_two_way_traffic(emulated_mssql_db, pg_cluster, tenant, "pk_diff", SEED, KILLS, N)


def test_kill_with_overlapping_batches_then_resume(emulated_mssql_db, pg_cluster, tenant):
    """The same with reverse batches of 8 entries (a round's 32 PostgreSQL changes are 4 batches, more after a
    killed run): kills land while a batch's SQL Server half runs beside the PostgreSQL half of the one before."""
    kill_over_two_way_traffic(emulated_mssql_db, pg_cluster, tenant, "pk_diff", SEED + 1, 12, N, kill_range=(3, 30),
                              reverse_batch=8)


def test_a_killed_runs_last_batch_committed_late_by_the_server_is_resumed(emulated_mssql_db, pg_cluster, tenant):
    """The run is killed while SQL Server still works on its batch (the emulator holds the COMMIT 3 s), and the
    next run starts at once: it waits for that transaction (its read of the applied position queues behind the
    batch's lock on it) and resumes from the position the batch committed, instead of applying it again (a
    conflict with the sync's own write, or a duplicate key)."""
    db = emulated_mssql_db
    db.execute("CREATE TABLE dbo.B (id int NOT NULL PRIMARY KEY, name nvarchar(60) NULL, qty int NULL, "
               "rv rowversion NOT NULL)")
    db.execute("INSERT INTO dbo.B (id, name, qty) VALUES " + ", ".join("(%d, N'n%d', 0)" % (i, i) for i in range(20)))
    cfg = child_config(db, pg_cluster, tenant, [{"source": "[dbo].[B]", "direction": "both"}], lock_timeout=30)
    first = spawn(cfg)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, (out, err)
    t = sql.Identifier(tenant.name, "B")
    with tenant.connect() as c:
        c.execute(sql.SQL("UPDATE {} SET name = 'pg' WHERE id < 5").format(t))
        c.execute(sql.SQL("INSERT INTO {} (id, name, qty) VALUES (100, 'pgnew', 1)").format(t))
    db.faults.delay_statement(r"^\s*COMMIT\s+TRAN", 3.0)
    killed = spawn(cfg)
    try:
        assert db.faults.delaying.wait(60), "the run never reached its COMMIT"
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate(timeout=60)
    t0 = time.monotonic()
    nxt = spawn(cfg)
    out, err = nxt.communicate(timeout=120)
    assert nxt.returncode == 0, (out, err)
    assert '"resumed": true' in out, out  # it found the batch the server committed after the kill
    with tenant.connect() as c:
        pg = sorted((r[0], r[1], bytes(r[2])) for r in c.execute(sql.SQL("SELECT id, name, rv FROM {}").format(t)))
        conflicts = c.execute("SELECT key FROM berqenas.sync_conflict WHERE table_schema = %s",
                              (tenant.name,)).fetchall()
    ms = sorted((r[0], r[1], bytes(r[2])) for r in db.execute("SELECT id, name, rv FROM dbo.B"))
    assert ms == pg and (100, "pgnew") in [m[:2] for m in ms] and [m[1] for m in ms[:5]] == ["pg"] * 5
    assert conflicts == []
    print("next run after the kill: %.1fs (the server's COMMIT was held 3 s)" % (time.monotonic() - t0))


def kill_over_two_way_traffic(db, pg_cluster, tenant, delete_detection, seed, kills_wanted, n_rows, kill_range=(3, 45),
                              prepare=None, reverse_batch=None):
    """Mixed two-way traffic on dbo.B (``n_rows`` rows), a run SIGKILLed before its N-th PostgreSQL statement
    (N seeded in ``kill_range``) after each round, until ``kills_wanted`` runs were killed; then two clean runs:
    both sides equal the model, no conflict recorded. ``prepare(db)`` runs after the table is created (e.g. to
    enable change tracking); ``reverse_batch``: change-log entries per reverse batch (default: the engine's)."""
    rng = random.Random(seed)
    db.execute("CREATE TABLE dbo.B (id int NOT NULL PRIMARY KEY, name nvarchar(60) NULL, qty int NULL, "
               "rv rowversion NOT NULL)")
    if prepare is not None:
        prepare(db)
    for k in range(0, n_rows, 1000):
        db.execute("INSERT INTO dbo.B (id, name, qty) VALUES " + ", ".join(
            "(%d, N'n%d', 0)" % (i, i) for i in range(k, min(n_rows, k + 1000))))
    model = {i: ("n%d" % i, 0) for i in range(n_rows)}
    tables = [{"source": "[dbo].[B]", "direction": "both", "delete_detection": delete_detection}]
    cfg = child_config(db, pg_cluster, tenant, tables, commit_rows=300, lock_timeout=30)
    cfg["reverse_batch"] = reverse_batch
    first = spawn(cfg)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, (out, err)
    t = sql.Identifier(tenant.name, "B")
    kills = completed = resumed = 0
    points = []
    next_pg, next_ms = 10 * n_rows, 20 * n_rows
    t_start = time.monotonic()
    for attempt in range(1, 3 * kills_wanted):
        if kills >= kills_wanted:
            break
        # SQL Server side: update a range, insert one, delete one (ids < n_rows/2 and its own inserts)
        lo = rng.randrange(0, n_rows // 2 - 40)
        db.execute("UPDATE dbo.B SET qty = qty + 1, name = N'ms%d' WHERE id >= %d AND id < %d" % (attempt, lo, lo + 30))
        for i in range(lo, lo + 30):
            if i in model:
                model[i] = ("ms%d" % attempt, model[i][1] + 1)
        db.execute("INSERT INTO dbo.B (id, name, qty) VALUES (%d, N'msnew', 1)" % next_ms)
        model[next_ms] = ("msnew", 1)
        next_ms += 1
        d = rng.randrange(0, n_rows // 2)
        if d in model:
            db.execute("DELETE FROM dbo.B WHERE id = %d" % d)
            del model[d]
        # PostgreSQL side: the same on ids >= n_rows/2 and its own inserts
        lo = rng.randrange(n_rows // 2, n_rows - 40)
        with tenant.connect() as c:
            c.execute(sql.SQL("UPDATE {} SET qty = qty + 1, name = %s WHERE id >= %s AND id < %s").format(t),
                      ("pg%d" % attempt, lo, lo + 30))
            c.execute(sql.SQL("INSERT INTO {} (id, name, qty) VALUES (%s, 'pgnew', 1)").format(t), (next_pg,))
            d = rng.randrange(n_rows // 2, n_rows)
            if d in model:
                c.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (d,))
        for i in range(lo, lo + 30):
            if i in model:
                model[i] = ("pg%d" % attempt, model[i][1] + 1)
        model[next_pg] = ("pgnew", 1)
        next_pg += 1
        if d in model:
            del model[d]
        # killed just before its N-th PostgreSQL statement: inside the reverse batch's PostgreSQL half (after
        # SQL Server committed), between forward pages, in pk_diff, at the lock ...
        kill_at = rng.randrange(*kill_range)
        p = spawn(dict(cfg, kill_at=kill_at))
        out, err = p.communicate(timeout=120)
        if p.returncode == -signal.SIGKILL:
            kills += 1
            points.append((attempt, kill_at))
        else:
            assert p.returncode == 0, (kill_at, out, err)
            completed += 1
            resumed += '"resumed": true' in out  # found a batch SQL Server committed and PostgreSQL had not
    assert kills >= kills_wanted, (kills, completed)
    for _ in range(2):  # resume; the second run must find nothing left to do on either side
        final = spawn(cfg)
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, (out, err)
        resumed += '"resumed": true' in out
    assert '"applied": 0' in out and '"updated": 0' in out and '"inserted": 0' in out, out
    ms = sorted((r[0], r[1], r[2], bytes(r[3])) for r in db.execute("SELECT id, name, qty, rv FROM dbo.B"))
    with tenant.connect() as c:
        pg = sorted((r[0], r[1], r[2], bytes(r[3])) for r in c.execute(sql.SQL(
            "SELECT id, name, qty, rv FROM {}").format(t)).fetchall())
        conflicts = c.execute("SELECT key, winner, loser_values, winner_values FROM berqenas.sync_conflict"
                              " WHERE table_schema = %s", (tenant.name,)).fetchall()
    assert ms == pg  # same keys, values and rowversions on both sides
    assert conflicts == []  # a change applied twice would have looked like a change made on the other side
    assert [r[:3] for r in ms] == sorted((k, v[0], v[1]) for k, v in model.items())  # nothing lost or doubled
    print("two-way crash test (seed %d): %d kills, %d runs completed (%d resumed a batch SQL Server had committed), "
          "%.1fs; kill points (attempt, statement) %s" % (seed, kills, completed, resumed, time.monotonic() - t_start,
                                                         points))
