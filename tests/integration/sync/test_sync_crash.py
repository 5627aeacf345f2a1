"""Crash safety: SIGKILL the whole process group of a sync run at seeded points (the N-th PostgreSQL
statement of the run, N from the seed), resume, compare."""

import random
import signal
import time

import pytest

from .emu import child_config, spawn, target_rows

pytestmark = pytest.mark.sync

SEED = 6_2026_11
KILLS = 20


def insert_rows(db, ids):
    ids = list(ids)
    for k in range(0, len(ids), 1000):
        db.execute("INSERT INTO dbo.C (id, name, qty) VALUES " + ", ".join(
            "(%d, N'n%d \U0001f600', %d)" % (i, i, i % 7) for i in ids[k:k + 1000]))


def hwm(tenant):
    with tenant.connect() as c:
        if not c.execute("SELECT to_regclass('berqenas.sync_state') IS NOT NULL").fetchone()[0]:
            return None
        r = c.execute("SELECT hwm FROM berqenas.sync_state WHERE job = %s", ("job-" + tenant.name,)).fetchone()
        return r and bytes(r[0])


def test_kill_at_seeded_points_then_resume(emulated_mssql_db, pg_cluster, tenant):
    db = emulated_mssql_db
    rng = random.Random(SEED)
    db.execute("CREATE TABLE dbo.C (id int NOT NULL PRIMARY KEY, name nvarchar(60) NULL, qty int NULL, "
               "rv rowversion NOT NULL)")
    n = 20000
    insert_rows(db, range(n))
    next_id = n
    tables = [{"source": "[dbo].[C]", "delete_detection": "pk_diff"}]
    cfg = child_config(db, pg_cluster, tenant, tables, commit_rows=500, lock_timeout=30)
    kills = completed = mid_load = 0
    points = []  # (attempt, kill_at): the seed reproduces them, with the source changes between runs
    t_start = time.monotonic()
    for attempt in range(3 * KILLS):
        if kills >= KILLS:
            break
        if attempt:  # change the source between runs: updates (rowversion bumps), inserts, deletes
            lo = rng.randrange(0, max(1, next_id - 3000))
            db.execute("UPDATE dbo.C SET qty = ISNULL(qty, 0) + 1, name = N'u%d' WHERE id >= %d AND id < %d"
                       % (attempt, lo, lo + 2500))
            insert_rows(db, range(next_id, next_id + 100))
            next_id += 100
            d = rng.randrange(0, next_id)
            db.execute("DELETE FROM dbo.C WHERE id >= %d AND id < %d" % (d, d + 15))
        before = hwm(tenant)
        # SIGKILL of the child's whole process group just before its N-th PostgreSQL statement: between a
        # page's COPY and its watermark write, between pages, inside pk_diff, at the lock ...
        kill_at = rng.randrange(3, 70)
        p = spawn(dict(cfg, kill_at=kill_at))
        out, err = p.communicate(timeout=120)
        if p.returncode == -signal.SIGKILL:
            kills += 1
            points.append((attempt, kill_at))
            mid_load += hwm(tenant) != before  # killed after committing pages, before the end
        else:
            assert p.returncode == 0, (kill_at, out, err)
            completed += 1
    assert kills >= KILLS, (kills, completed)
    assert mid_load >= 5, (mid_load, kills)
    final = spawn(cfg)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, (out, err)
    src = sorted(tuple(r) for r in db.execute("SELECT id, name, qty, rv FROM dbo.C"))
    tgt = target_rows(tenant, "C", "id, name, qty, rv")
    assert len(tgt) == len(src) and tgt == src  # nothing lost, nothing duplicated, latest versions
    with tenant.connect() as c:
        assert c.execute("SELECT rows_total FROM berqenas.sync_state WHERE job = %s",
                         ("job-" + tenant.name,)).fetchone()[0] == len(src)
    print("crash test (seed %d): %d kills (%d after pages were committed), %d runs completed, %.1fs; kill points "
          "(attempt, statement) %s" % (SEED, kills, mid_load, completed, time.monotonic() - t_start, points))
