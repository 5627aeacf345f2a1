"""The PostgreSQL side of a delta, variant by variant, against a raw binary COPY of the same rows (same run).

Every variant applies N updated rows (the same key set, a newer rowversion each) to a target table that
already holds the N rows, in pages of P rows, each page ending with the watermark upsert and COMMIT in the
same transaction (crash-safe as the engine is). Only the apply is timed. Variants (cumulative ideas):

  on_conflict          the engine before this work: per page CREATE TEMP .. ON COMMIT DROP, COPY to it,
                       INSERT .. ON CONFLICT DO UPDATE WHERE rv guard RETURNING (xmax = 0) counted, TRUNCATE
  +fillfactor 75       the same on a target created WITH (fillfactor = 75): updates of unindexed columns
                       stay HOT (no new index entry, same page)
  +keep staging        one temp staging table per window (ON COMMIT DELETE ROWS), not one per page
  +4x pages            pages of 4P rows (fewer commits and statements)
  update_from          ANALYZE staging, UPDATE t SET .. FROM stg WHERE key match AND t.rv < s.rv, then
                       INSERT .. SELECT the keys not in t ON CONFLICT DO NOTHING; counts from rowcounts
  +async commit        SET LOCAL synchronous_commit = off in each page's transaction (a server crash can lose
                       the last pages' commits, data and watermark together: the next run replays them)
  fillfactor 50        more room per page (info: a bigger table for every reader)
  no RETURNING         the upsert without the (xmax = 0) count (info: the engine must report inserted and
                       updated apart)
  unnest               no staging table: the page as binary array parameters unnested into the upsert
  merge                MERGE INTO t USING staging (PostgreSQL 15), guarded WHEN MATCHED AND t.rv < s.rv; the new
                       keys counted first (no RETURNING before PostgreSQL 17)
  merge, xact counters the engine before temp_buffers: the same MERGE in a savepoint, the new keys read from the
                       transaction's insert counter of the target (pg_stat_get_xact_tuples_inserted) before and after
  +temp_buffers 64MB   the engine now: the session's temp_buffers raised from 8MB before its first temp table, so a
                       page's staging table stays in local buffers (on its own connection, a setting fixed early)
The staging table is a TEMP table, which is never WAL-logged: an UNLOGGED staging table is the same idea
(bench_speed measures both).

bench_speed (issue 10, "Speed"): every row updated, the engine's MERGE from a kept TEMP staging table on a
temp_buffers 64MB connection against (a) a parallel COPY of the page's two key halves over two more connections
into an UNLOGGED staging table, (b) the guard t.rv IS DISTINCT FROM s.rv, (c) pages of 2x and 4x the rows,
(d) ON CONFLICT from TEMP and from UNLOGGED staging and MERGE from UNLOGGED staging, (e) ANALYZE of the staging
table, work_mem 64MB, synchronous_commit off, target fill factors 50 and 100, DELETE of the superseded rows +
a COPY straight into the target, and (at fill factor 50) pages x2 and a join through the target's key index
instead of the planner's hash of the whole target per page. Median of 3 wall ratios (each run between two raw
COPYs) and of 3 CPU ratios.

Run through bench/bench_sync.py (it prints these beside the engine's own figures).
"""

import time

from psycopg import sql

STATE_DDL = ("CREATE TABLE IF NOT EXISTS public.lab_state (job text PRIMARY KEY, hwm bigint, rows bigint,"
             " at timestamptz)")


def _load_target(c, name, rows, fillfactor):
    c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    ff = sql.SQL(" WITH (fillfactor = {})").format(sql.Literal(fillfactor)) if fillfactor else sql.SQL("")
    c.execute(sql.SQL("CREATE TABLE {} (id integer NOT NULL PRIMARY KEY, name character varying(50), rv bytea){}")
              .format(sql.Identifier(name), ff))
    with c.cursor() as cur, cur.copy(sql.SQL("COPY {} (id, name, rv) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(name))) as cp:
        cp.set_types(["int4", "text", "bytea"])
        for r in rows:
            cp.write_row(r)
    c.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(name))) if c.autocommit else None
    c.commit() if not c.autocommit else None


def _copy(cur, table, page):
    with cur.copy(sql.SQL("COPY {} (id, name, rv) FROM STDIN (FORMAT BINARY)").format(table)) as cp:
        cp.set_types(["int4", "text", "bytea"])
        for r in page:
            cp.write_row(r)


def _save_state(cur, hwm, rows):
    cur.execute("INSERT INTO public.lab_state VALUES ('lab', %s, %s, now()) ON CONFLICT (job) DO UPDATE SET"
                " hwm = EXCLUDED.hwm, rows = lab_state.rows + EXCLUDED.rows, at = EXCLUDED.at", (hwm, rows))


def _staged(c, tgt, pages, keep_staging, async_commit, apply):
    """The page loop every staged variant shares: staging, COPY, ``apply(cur, target, staging)`` ->
    (inserted, updated), watermark, COMMIT."""
    t = sql.Identifier(tgt)
    stg = sql.Identifier("lab_keep" if keep_staging else "lab_stg")
    ins = upd = 0
    if keep_staging:
        c.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(stg, t))
        c.commit()
    with c.cursor() as cur:
        for page in pages:
            if async_commit:
                cur.execute("SET LOCAL synchronous_commit = off")
            if not keep_staging:
                cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stg, t))
            _copy(cur, stg, page)
            i, u = apply(cur, t, stg)
            ins, upd = ins + i, upd + u
            if not keep_staging:  # as the engine before did
                cur.execute(sql.SQL("TRUNCATE {}").format(stg))
            _save_state(cur, int.from_bytes(page[-1][2], "big") + 1, i)
            c.commit()
    return ins, upd


def apply_on_conflict(c, tgt, pages, keep_staging=False, async_commit=False, returning=True):
    def apply(cur, t, stg):
        upsert = sql.SQL(
            "INSERT INTO {t} AS t (id, name, rv) SELECT s.id, s.name, s.rv FROM {s} s"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, rv = EXCLUDED.rv WHERE t.rv < EXCLUDED.rv"
        ).format(t=t, s=stg)
        if not returning:  # for comparison only: the engine must report inserted and updated apart
            cur.execute(upsert)
            return 0, cur.rowcount
        cur.execute(sql.SQL("WITH u AS ({} RETURNING (xmax = 0) AS ins)"
                            " SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM u"
                            ).format(upsert))
        return cur.fetchone()

    return _staged(c, tgt, pages, keep_staging, async_commit, apply)


def apply_update_from(c, tgt, pages, keep_staging=False, async_commit=False):
    def apply(cur, t, stg):
        cur.execute(sql.SQL("ANALYZE {}").format(stg))
        cur.execute(sql.SQL("UPDATE {t} AS t SET name = s.name, rv = s.rv FROM {s} s"
                            " WHERE t.id = s.id AND t.rv < s.rv").format(t=t, s=stg))
        u = cur.rowcount
        cur.execute(sql.SQL("INSERT INTO {t} (id, name, rv) SELECT s.id, s.name, s.rv FROM {s} s"
                            " WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE x.id = s.id)"
                            " ON CONFLICT (id) DO NOTHING").format(t=t, s=stg))
        return cur.rowcount, u

    return _staged(c, tgt, pages, keep_staging, async_commit, apply)


def apply_merge(c, tgt, pages, keep_staging=False, async_commit=False, counts="anti_join"):
    """MERGE (PostgreSQL 15) with the rowversion guard. PostgreSQL 15's MERGE has no RETURNING, so the keys
    that will be inserted are counted first (``anti_join``), or (``xact``, the engine) read from the
    transaction's own insert counter of the target before and after a MERGE run inside a savepoint."""
    merge = sql.SQL("MERGE INTO {t} AS t USING {s} AS s ON t.id = s.id"
                    " WHEN MATCHED AND t.rv < s.rv THEN UPDATE SET name = s.name, rv = s.rv"
                    " WHEN NOT MATCHED THEN INSERT (id, name, rv) VALUES (s.id, s.name, s.rv)")

    def apply(cur, t, stg):
        if counts == "xact":
            cur.execute("SELECT pg_stat_get_xact_tuples_inserted(%s::regclass)", (tgt,))
            ins0 = cur.fetchone()[0]
            cur.execute("SAVEPOINT lab")
            cur.execute(merge.format(t=t, s=stg))
            n = cur.rowcount
            cur.execute("RELEASE SAVEPOINT lab")
            cur.execute("SELECT pg_stat_get_xact_tuples_inserted(%s::regclass)", (tgt,))
            new = cur.fetchone()[0] - ins0
            return new, n - new
        cur.execute(sql.SQL("SELECT count(*) FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE x.id = s.id)")
                    .format(t=t, s=stg))
        new = cur.fetchone()[0]
        cur.execute(merge.format(t=t, s=stg))
        return new, cur.rowcount - new

    return _staged(c, tgt, pages, keep_staging, async_commit, apply)


def paged(rows, size):
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def raw_copy(c, rows):
    c.execute("DROP TABLE IF EXISTS public.raw")
    c.execute("CREATE TABLE public.raw (id integer NOT NULL PRIMARY KEY, name character varying(50), rv bytea)")
    c.commit()
    t0 = time.perf_counter()
    with c.cursor() as cur:
        _copy(cur, sql.Identifier("raw"), rows)
    c.commit()
    return len(rows) / (time.perf_counter() - t0)


VARIANTS = [
    # name, apply function, fillfactor, keep staging, page multiplier, async commit, extra keywords
    ("on_conflict (engine before)", apply_on_conflict, None, False, 1, False, {}),
    ("  +fillfactor 75", apply_on_conflict, 75, False, 1, False, {}),
    ("  +ff75 +keep (engine before MERGE)", apply_on_conflict, 75, True, 1, False, {}),
    ("  +ff75 +keep +4x pages", apply_on_conflict, 75, True, 4, False, {}),
    ("  +ff75 +keep +4x +async commit", apply_on_conflict, 75, True, 4, True, {}),
    ("  +ff75 +keep, fillfactor 50", apply_on_conflict, 50, True, 1, False, {}),
    ("  +ff75 +keep, no RETURNING (info)", apply_on_conflict, 75, True, 1, False, {"returning": False}),
    ("update_from + insert new, ff75 +keep", apply_update_from, 75, True, 1, False, {}),
    ("merge (PG 15), ff75 +keep", apply_merge, 75, True, 1, False, {}),
    ("merge (PG 15), ff75 +keep +4x pages", apply_merge, 75, True, 4, False, {}),
    ("merge +keep, xact counts", apply_merge, 75, True, 1, False, {"counts": "xact"}),
    ("merge +keep, xact, temp_buffers (now)", apply_merge, 75, True, 1, False,
     {"counts": "xact", "temp_buffers": "64MB"}),
    ("unnest(arrays), no staging, ff75", "apply_unnest", 75, False, 1, False, {}),
]


SCATTERED_VARIANTS = [v for v in VARIANTS if v[0] in (
    "on_conflict (engine before)", "  +fillfactor 75", "  +ff75 +keep (engine before MERGE)",
    "merge +keep, xact counts", "merge +keep, xact, temp_buffers (now)")]


def _hot_share(c, table):
    """Share of the table's updates that were HOT (the backend's counters flushed first)."""
    c.execute("SELECT pg_stat_force_next_flush()")
    c.commit()
    for _ in range(50):
        c.execute("SELECT pg_stat_clear_snapshot()")
        upd, hot = c.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass",
                             (table,)).fetchone()
        c.commit()
        if upd:
            return hot / upd
        time.sleep(0.1)
    return 0.0


def bench_variants(cluster, db, n, page, repeats, changed=None, variants=VARIANTS):
    """{variant: (median rows/s, median ratio, median raw COPY, HOT share)} over ``repeats``: each variant paired
    with a raw COPY of the same number of rows measured just before it (the shared machine is noisy).
    ``changed``: update that many keys picked at random (a delta's shape: a few rows per page, in rowversion
    order, not key order) instead of every row in key order."""
    import random
    import statistics

    import psycopg

    rows = [(i, "customer name %08d" % i, (2001 + i).to_bytes(8, "big")) for i in range(n)]
    keys = random.Random(6).sample(range(n), changed) if changed else range(n)
    rows2 = [(k, "renamed %08d" % k, (2001 + n + j).to_bytes(8, "big")) for j, k in enumerate(keys)]
    m = len(rows2)
    out = {}
    with psycopg.connect(**cluster.conninfo(db)) as c:
        c.execute(STATE_DDL)
        c.commit()
        for _rep in range(repeats):
            for name, fn, ff, keep, mult, async_commit, kw in variants:
                base = raw_copy(c, rows2)
                c.autocommit = True
                _load_target(c, "lab_t", rows, ff)
                c.autocommit = False
                t0 = time.perf_counter()
                fn = globals()[fn] if isinstance(fn, str) else fn
                kw = dict(kw)
                tb = kw.pop("temp_buffers", None)
                # temp_buffers is fixed once a session has used a temp table: a fresh connection for it
                ac = psycopg.connect(**cluster.conninfo(db), options="-c temp_buffers=%s" % tb) if tb else c
                try:
                    ins, upd = fn(ac, "lab_t", paged(rows2, page * mult), keep_staging=keep,
                                  async_commit=async_commit, **kw)
                finally:
                    ac.close() if tb else None
                rate = m / (time.perf_counter() - t0)
                assert (ins, upd) == (0, m), (name, ins, upd)
                hot = _hot_share(c, "public.lab_t")
                out.setdefault(name, []).append((rate, rate / base, base, hot))
        c.execute("DROP TABLE IF EXISTS public.lab_t, public.raw, public.lab_state")
        c.commit()
    med = statistics.median
    return {name: (med(r[0] for r in runs), med(r[1] for r in runs), med(r[2] for r in runs), runs[-1][3])
            for name, runs in out.items()}


def apply_unnest(c, tgt, pages, keep_staging=False, async_commit=False):
    """No staging table: each page is three binary array parameters, unnested into the guarded upsert."""
    t = sql.Identifier(tgt)
    ins = upd = 0
    q = sql.SQL(
        "WITH u AS (INSERT INTO {t} AS t (id, name, rv) SELECT * FROM unnest(%s::int4[], %s::text[], %s::bytea[])"
        " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, rv = EXCLUDED.rv WHERE t.rv < EXCLUDED.rv"
        " RETURNING (xmax = 0) AS ins)"
        " SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM u").format(t=t)
    with c.cursor(binary=True) as cur:
        for page in pages:
            if async_commit:
                cur.execute("SET LOCAL synchronous_commit = off")
            ids, names, rvs = (list(col) for col in zip(*page, strict=True))
            cur.execute(q, (ids, names, rvs))
            i, u = cur.fetchone()
            ins, upd = ins + i, upd + u
            _save_state(cur, int.from_bytes(page[-1][2], "big") + 1, i)
            c.commit()
    return ins, upd


# ---- issue 10, "Speed": the ideas measured against the engine's path (median of repeats) --------------------

def _unlogged(c, name, like):
    c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    c.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(sql.Identifier(name), sql.Identifier(like)))
    c.commit()
    return sql.Identifier(name)


MERGE_SQL = ("MERGE INTO {t} AS t USING {s} AS s ON t.id = s.id"
             " WHEN MATCHED AND {guard} THEN UPDATE SET name = s.name, rv = s.rv"
             " WHEN NOT MATCHED THEN INSERT (id, name, rv) VALUES (s.id, s.name, s.rv)")


def _merge_xact(cur, tgt, t, stg, guard="t.rv < s.rv"):
    """The engine's MERGE: its inserted/updated split from the transaction's insert counter of the target."""
    cur.execute("SELECT pg_stat_get_xact_tuples_inserted(%s::regclass)", (tgt,))
    ins0 = cur.fetchone()[0]
    cur.execute("SAVEPOINT lab")
    cur.execute(sql.SQL(MERGE_SQL.replace("{guard}", guard)).format(t=t, s=stg))
    n = cur.rowcount
    cur.execute("RELEASE SAVEPOINT lab")
    cur.execute("SELECT pg_stat_get_xact_tuples_inserted(%s::regclass)", (tgt,))
    new = cur.fetchone()[0] - ins0
    return new, n - new


def _on_conflict(cur, t, stg):
    cur.execute(sql.SQL(
        "WITH u AS (INSERT INTO {t} AS t (id, name, rv) SELECT s.id, s.name, s.rv FROM {s} s"
        " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, rv = EXCLUDED.rv WHERE t.rv < EXCLUDED.rv"
        " RETURNING (xmax = 0) AS ins)"
        " SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM u").format(t=t, s=stg))
    return cur.fetchone()


def speed_staged(c, tgt, pages, staging="temp", how="merge", guard="t.rv < s.rv", analyze=False,
                 async_commit=False, work_mem=None, index_join=False, **_):
    """One page per transaction: COPY the page into a staging table (``temp``: ON COMMIT DELETE ROWS, kept
    for the window; ``unlogged``: a shared UNLOGGED table, TRUNCATEd in the page's transaction), apply it
    (``merge`` as the engine, ``on_conflict``), the watermark, COMMIT."""
    t = sql.Identifier(tgt)
    if staging == "temp":
        stg = sql.Identifier("lab_keep")
        c.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(stg, t))
        c.commit()
    else:
        stg = _unlogged(c, "lab_ustg", tgt)
    ins = upd = 0
    with c.cursor() as cur:
        for page in pages:
            if async_commit:
                cur.execute("SET LOCAL synchronous_commit = off")
            if work_mem:
                cur.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(work_mem)))
            if index_join:  # each staged row probes the target's key index: no scan of the whole target per page
                cur.execute("SET LOCAL enable_hashjoin = off")
                cur.execute("SET LOCAL enable_mergejoin = off")
            _copy(cur, stg, page)
            if analyze:
                cur.execute(sql.SQL("ANALYZE {}").format(stg))
            i, u = _merge_xact(cur, tgt, t, stg, guard) if how == "merge" else _on_conflict(cur, t, stg)
            ins, upd = ins + i, upd + u
            if staging != "temp":
                cur.execute(sql.SQL("TRUNCATE {}").format(stg))
            _save_state(cur, int.from_bytes(page[-1][2], "big") + 1, i)
            c.commit()
    if staging != "temp":
        c.execute(sql.SQL("DROP TABLE {}").format(stg))
        c.commit()
    return ins, upd


def _load_half(h, stg, rows, errors):
    try:
        with h.cursor() as hc:
            _copy(hc, stg, rows)
        h.commit()
    except BaseException as e:  # raised by the caller
        errors.append(e)


def speed_parallel_copy(c, tgt, pages, conninfo=None, helper_cpu=None, **_):
    """(a) Each page split into two disjoint key ranges, COPYed at once over two more connections into a shared
    UNLOGGED staging table (each COPY commits: staging is scratch, the page is not applied yet); then the page's
    own transaction on the engine connection: MERGE, TRUNCATE staging, watermark, COMMIT. A crash before that
    commit leaves staging rows no run reads (a server crash empties an UNLOGGED table; a killed client's rows are
    TRUNCATEd by the next page or run before its COPY), so the exactly-once effect rests on the one commit still."""
    import threading

    import psycopg

    t = sql.Identifier(tgt)
    stg = _unlogged(c, "lab_pstg", tgt)
    helpers = [psycopg.connect(**conninfo) for _ in range(2)]
    ins = upd = 0
    try:
        with c.cursor() as cur:
            for page in pages:
                keys = sorted(r[0] for r in page)
                mid = keys[len(keys) // 2]
                halves = ([r for r in page if r[0] < mid], [r for r in page if r[0] >= mid])
                errors = []
                threads = [threading.Thread(target=_load_half, args=(h, stg, half, errors))
                           for h, half in zip(helpers, halves, strict=True)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join(600)
                if errors:
                    raise errors[0]
                i, u = _merge_xact(cur, tgt, t, stg)
                ins, upd = ins + i, upd + u
                cur.execute(sql.SQL("TRUNCATE {}").format(stg))
                _save_state(cur, int.from_bytes(page[-1][2], "big") + 1, i)
                c.commit()
    finally:
        if helper_cpu is not None:  # their backends' CPU seconds, read before they exit
            helper_cpu.append(_cpu([h.info.backend_pid for h in helpers]) - time.process_time())
        for h in helpers:
            h.close()
    c.execute(sql.SQL("DROP TABLE {}").format(stg))
    c.commit()
    return ins, upd


def speed_delete_copy(c, tgt, pages, **_):
    """(e) No UPDATE: the page's keys and rowversions COPYed to a narrow temp table; the target rows they
    supersede (guard t.rv < k.rv) deleted; the keys the target keeps (a newer or equal version) read back; the
    rest of the page COPYed straight into the target (COPY's batched heap insert), all in the page's transaction
    with the watermark. (An application's UPDATE triggers on the target would see DELETE + INSERT.)"""
    t = sql.Identifier(tgt)
    k = sql.Identifier("lab_keys")
    c.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (id integer, rv bytea) ON COMMIT DELETE ROWS").format(k))
    c.commit()
    ins = upd = 0
    with c.cursor() as cur:
        for page in pages:
            with cur.copy(sql.SQL("COPY {} (id, rv) FROM STDIN (FORMAT BINARY)").format(k)) as cp:
                cp.set_types(["int4", "bytea"])
                for r in page:
                    cp.write_row((r[0], r[2]))
            cur.execute(sql.SQL("DELETE FROM {t} t USING {k} k WHERE t.id = k.id AND t.rv < k.rv").format(t=t, k=k))
            u = cur.rowcount
            cur.execute(sql.SQL("SELECT k.id FROM {k} k JOIN {t} t ON t.id = k.id").format(t=t, k=k))
            keep = {r[0] for r in cur.fetchall()}
            _copy(cur, t, [r for r in page if r[0] not in keep] if keep else page)
            i = len(page) - len(keep) - u
            ins, upd = ins + i, upd + u
            _save_state(cur, int.from_bytes(page[-1][2], "big") + 1, i)
            c.commit()
    return ins, upd


SPEED_VARIANTS = [
    # name, function, target fillfactor, page multiplier (0: the whole window in one page), keywords
    ("MERGE, temp staging, fill factor 75 (before)", speed_staged, 75, 1, {}),
    ("(a) parallel COPY x2 -> unlogged, MERGE", speed_parallel_copy, 75, 1, {}),
    ("(b) MERGE, guard rv IS DISTINCT FROM", speed_staged, 75, 1, {"guard": "t.rv IS DISTINCT FROM s.rv"}),
    ("(c) MERGE, pages x2", speed_staged, 75, 2, {}),
    ("(c) MERGE, pages x4", speed_staged, 75, 4, {}),
    ("(d) ON CONFLICT, temp staging", speed_staged, 75, 1, {"how": "on_conflict"}),
    ("(d) ON CONFLICT, unlogged staging", speed_staged, 75, 1, {"how": "on_conflict", "staging": "unlogged"}),
    ("(d) MERGE, unlogged staging", speed_staged, 75, 1, {"staging": "unlogged"}),
    ("(e) MERGE, ANALYZE staging", speed_staged, 75, 1, {"analyze": True}),
    ("(e) MERGE, work_mem 64MB", speed_staged, 75, 1, {"work_mem": "64MB"}),
    ("(e) MERGE, synchronous_commit off", speed_staged, 75, 1, {"async_commit": True}),
    ("(e) MERGE, fill factor 50 (the engine now)", speed_staged, 50, 1, {}),
    ("(e) MERGE, fill factor 100", speed_staged, 100, 1, {}),
    ("(e) DELETE superseded + COPY into target", speed_delete_copy, 75, 1, {}),
    ("(c)+(e) fill factor 50, pages x2", speed_staged, 50, 2, {}),
    ("(e) fill factor 50, key index join", speed_staged, 50, 1, {"index_join": True}),
]


def _cpu(pids):
    """CPU seconds (user + system) of this process and of the given server backends (read from /proc: the
    throwaway cluster runs on this host)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _raw_copy_timed(c, rows):
    """raw_copy's wall rows/s and its CPU seconds (client + backend)."""
    pid = c.info.backend_pid
    cpu0 = _cpu([pid])
    rate = raw_copy(c, rows)
    return rate, _cpu([pid]) - cpu0


def bench_speed(cluster, db, n, page, repeats=3, variants=SPEED_VARIANTS):
    """{variant: (median wall ratio, [wall ratios], median CPU ratio, median rows/s, HOT share, size)}: every row of an
    N-row target updated, in pages of ``page`` rows (each page + its watermark one transaction), on a connection
    with temp_buffers 64MB (as the engine's). Each repeat runs every variant once between two raw COPYs of the
    same rows; its wall ratio is against the geometric mean of those two (the shared machine's load moves), its
    CPU ratio is raw COPY's CPU seconds (client + backend) over the variant's (client + every backend it used):
    what the wall ratio would be on an idle machine for one connection (the parallel variant spends its CPU on
    two cores at once, so its CPU ratio understates it). The target is VACUUMed after its load, as autovacuum
    leaves a table before the next delta. ``size``: the target's size after the update over the raw COPY table's
    (the same rows packed)."""
    import statistics

    import psycopg

    rows = [(i, "customer name %08d" % i, (2001 + i).to_bytes(8, "big")) for i in range(n)]
    rows2 = [(k, "renamed %08d" % k, (2001 + n + k).to_bytes(8, "big")) for k in range(n)]
    got = {}
    conninfo = cluster.conninfo(db)
    with psycopg.connect(**conninfo) as c:
        c.execute(STATE_DDL)
        c.commit()
        for _rep in range(repeats):
            for name, fn, ff, mult, kw in variants:
                c.autocommit = True
                _load_target(c, "lab_t", rows, ff)
                c.autocommit = False
                base1, cpu_b1 = _raw_copy_timed(c, rows2)
                ac = psycopg.connect(**conninfo, options="-c temp_buffers=64MB")
                pids, helper_cpu = [ac.info.backend_pid], []
                try:
                    cpu0 = _cpu(pids)
                    t0 = time.perf_counter()
                    ins, upd = fn(ac, "lab_t", paged(rows2, page * mult if mult else n), conninfo=conninfo,
                                  helper_cpu=helper_cpu, **kw)
                    rate = n / (time.perf_counter() - t0)
                    cpu = _cpu(pids) - cpu0 + sum(helper_cpu)
                finally:
                    ac.close()
                base2, cpu_b2 = _raw_copy_timed(c, rows2)
                assert (ins, upd) == (0, n), (name, ins, upd)
                check = c.execute("SELECT count(*), count(*) FILTER (WHERE name LIKE 'renamed %%') FROM public.lab_t")
                assert check.fetchone() == (n, n), name
                c.commit()
                size = c.execute("SELECT pg_table_size('public.lab_t')::float / pg_table_size('public.raw')"
                                 ).fetchone()[0]
                c.commit()
                hot = _hot_share(c, "public.lab_t")
                base = (base1 * base2) ** 0.5
                got.setdefault(name, []).append((rate / base, (cpu_b1 + cpu_b2) / 2 / max(cpu, 1e-3), rate, hot, size))
        c.execute("DROP TABLE IF EXISTS public.lab_t, public.raw, public.lab_state")
        c.commit()
    med = statistics.median
    return {name: (med(r[0] for r in runs), [r[0] for r in runs], med(r[1] for r in runs), med(r[2] for r in runs),
                   runs[-1][3], runs[-1][4]) for name, runs in got.items()}
