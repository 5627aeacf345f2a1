# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQL Server -> PostgreSQL rowversion delta sync: the engine behind ``mssql_sync``.

Correctness rules (see the project's mssql-rowversion-sync reference, section 0):

* window ``[stored_hwm, MIN_ACTIVE_ROWVERSION())``; the upper bound is read in its own statement
  on an autocommit connection before the extraction starts;
* rows are read in rowversion order and loaded page by page; each page is applied (COPY, then a
  version-guarded upsert) and the watermark advanced to ``last_rv_of_page + 1`` IN THE SAME
  PostgreSQL transaction; the last page sets it to the window's upper bound. A crash at any point
  leaves a consistent prefix; the next run replays the rest, and the guard (``target.rv <
  incoming.rv``) makes replays no-ops. Exactly-once effect, not exactly-once reading;
* restore / failover: the source's recovery GUIDs and ``@@DBTS`` are checked against the stored
  state before anything is read (``@@DBTS + 1`` below the stored watermark, or a changed GUID);
* one run per job: a session advisory lock on the target, waited for up to ``lock_timeout``;
* a load that wrote every row of a target (an initial load, a full reload, the re-read after columns were
  added) is followed, once committed, by ``VACUUM (ANALYZE)`` of that table on the autocommit connection: the
  next delta then finds it as autovacuum would leave it (hint bits and visibility map set, statistics fresh).

The engine talks to SQL Server through a *source adapter* (``mssql.PymssqlSource``; tests use a
fake with the same methods) and to PostgreSQL through a psycopg 3 connection (imported through
``pgconn``, the collection's one psycopg guard).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
import uuid

from ansible.module_utils.six.moves import queue

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as tsql
from ansible_collections.berqenas.platform.plugins.module_utils.mssql import SourceError
from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import psycopg, sql
from ansible_collections.berqenas.platform.plugins.module_utils.sync_capture import CHANGE_TABLE, mark_sync_session
from ansible_collections.berqenas.platform.plugins.module_utils.sync_reverse import ct_context, reverse_table
# the engine's building blocks, re-exported: modules and tests use them as mssql_sync.<name>
from ansible_collections.berqenas.platform.plugins.module_utils.sync_state import (
    JOB_TABLE, LOCK_CLASS, STATE_COLUMNS, STATE_SCHEMA, STATE_TABLE, _ident, _type, ensure_state_table, job_lock_id,
    read_states, target_columns, target_oid)
from ansible_collections.berqenas.platform.plugins.module_utils.sync_tables import (
    DELETE_DETECTION, MODES, TableSpec, TablePlan, host_name, plan_table, remotedb_name, table_specs)
from ansible_collections.berqenas.platform.plugins.module_utils.sync_types import (
    NUL_RULES, OFFSET_SUFFIX, ColumnMap, SyncError, check_pg_ident, is_rowversion_type, make_transform, map_column)

__all__ = [
    # the engine
    "SyncEngine", "LockedError", "RewindError", "ReadAhead", "TARGET_FILLFACTOR", "new_acc", "SourceError",
    # re-exported building blocks (modules and tests use them as mssql_sync.<name>)
    "JOB_TABLE", "LOCK_CLASS", "STATE_COLUMNS", "STATE_SCHEMA", "STATE_TABLE", "ensure_state_table", "job_lock_id",
    "read_states", "target_columns", "target_oid", "DELETE_DETECTION", "MODES", "TableSpec", "TablePlan", "host_name",
    "plan_table", "remotedb_name", "table_specs", "NUL_RULES", "OFFSET_SUFFIX", "ColumnMap", "SyncError",
    "check_pg_ident", "is_rowversion_type", "make_transform", "map_column",
]


class LockedError(SyncError):
    """Another run of the same job held the lock past ``lock_timeout``."""


class RewindError(SyncError):
    """The source went back in time (restore, failover): refuse unless on_rewind=full_resync."""


# Target tables are created with free space on every page so that the sync's updates, which never change
# an indexed column (the key is not updated and the rowversion column is not indexed), stay HOT: the new
# row version goes on the same page and no index entry is written. 50 keeps even an update of every row HOT;
# 75 keeps only a delta's scattered updates HOT (38% of an every-row update: the rest moves to new pages and
# writes index entries, and the table ends as large as at 50). bench/bench_sync_sink.py bench_speed: the
# every-row update's MERGE at 0.61x of raw COPY's CPU on a 50 table, 0.33x on a 75 one (issue 10).
TARGET_FILLFACTOR = 50
# Room for a page's temp staging table in the session's local buffers (PostgreSQL's 8MB default spills a
# 50,000-row page to the OS at every COPY and MERGE); bench/bench_sync_sink.py measures it.
STAGING_TEMP_BUFFERS = "64MB"


class ReadAhead(object):
    """Iterates a source's batches read on a thread up to ``depth`` batches ahead, so that reading the next
    page from SQL Server overlaps writing (COPY, upsert, commit) the current one. Batches come out in order;
    a source error is raised in the caller at the point it occurred; ``close()`` stops the reader and waits
    for it (the source connection is the caller's again afterwards)."""

    def __init__(self, batches, depth=2):
        self._q = queue.Queue(max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(batches,), name="bq-sync-read-ahead")
        self._thread.daemon = True
        self._thread.start()

    def _read(self, batches):
        try:
            for b in batches:
                if not self._put(("batch", b)):
                    return
            self._put(("end", None))
        except BaseException as e:  # handed to the caller, raised there
            self._put(("error", e))
        finally:
            if hasattr(batches, "close"):
                batches.close()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            kind, value = self._q.get()
            if kind == "batch":
                yield value
            elif kind == "end":
                return
            else:
                raise value

    def close(self):
        self._stop.set()
        self._thread.join()


def new_acc():
    """Per-table committed counts: inserted/updated/deleted and U+0000 replacements per column."""
    return {"inserted": 0, "updated": 0, "deleted": 0, "nul": {}}


def size_temp_buffers(conn, size=STAGING_TEMP_BUFFERS):
    """Raise this session's temp_buffers to ``size`` (never lower it). PostgreSQL allows it only before the
    session's first temp table: best effort, the sync is correct either way."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('temp_buffers', %s, false)"
                        " WHERE pg_size_bytes(current_setting('temp_buffers')) < pg_size_bytes(%s)", (size, size))
        conn.commit()
    except psycopg.Error:
        conn.rollback()


class SyncEngine(object):
    """Runs one job: a list of TableSpecs from one source database into one target database."""

    def __init__(self, source, conn, job, owner_role=None, on_rewind="fail", nul_character="strip",
                 commit_rows=50000, lock_timeout=30.0, retries=3, retry_delay=1.0, check_mode=False, full=False,
                 log=None, sleep=time.sleep, fillfactor=TARGET_FILLFACTOR, force=False, max_delete_fraction=0.5,
                 read_ahead=2, vacuum_after_load=True):
        if on_rewind not in ("fail", "full_resync"):
            raise SyncError("on_rewind must be fail or full_resync")
        if nul_character not in NUL_RULES:
            raise SyncError("nul_character must be one of %s" % ", ".join(NUL_RULES))
        self.source = source
        self.conn = conn
        self.job = job
        self.owner_role = owner_role
        self.on_rewind = on_rewind
        self.nul_character = nul_character
        self.commit_rows = max(1, int(commit_rows))
        self.fillfactor = int(fillfactor)
        if not 10 <= self.fillfactor <= 100:
            raise SyncError("fillfactor must be between 10 and 100")
        self.lock_timeout = float(lock_timeout)
        self.retries = int(retries)
        self.retry_delay = float(retry_delay)
        self.check_mode = check_mode
        self.full = full
        self.force = bool(force)
        try:
            self.max_delete_fraction = float(max_delete_fraction)
        except (TypeError, ValueError):
            self.max_delete_fraction = -1.0
        if not 0.0 <= self.max_delete_fraction <= 1.0:
            raise SyncError("max_delete_fraction must be between 0 and 1, got %r" % (max_delete_fraction,))
        self.read_ahead = int(read_ahead)  # batches read ahead on a thread while a page is written; 0: none
        self.vacuum_after_load = bool(vacuum_after_load)  # False: only for benchmarks of the state before
        self.log = log or (lambda msg: None)
        self.sleep = sleep
        self.locked = False

    # -- lock ---------------------------------------------------------------------------------
    def acquire_lock(self):
        """Session advisory lock (LOCK_CLASS, job_lock_id); check mode of a job that never ran takes none."""
        deadline = time.monotonic() + self.lock_timeout
        self._lock_id = job_lock_id(self.conn, self.job, create=not self.check_mode)
        self.conn.commit()
        if self._lock_id is None:
            return
        with self.conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self._lock_id))
                got = cur.fetchone()[0]
                self.conn.commit()
                if got:
                    self.locked = True
                    return
                if time.monotonic() >= deadline:
                    raise LockedError("sync job %r: another run holds the lock (waited %ss)" % (
                        self.job, self.lock_timeout))
                self.sleep(0.2)

    def release_lock(self):
        """Best effort: a session lock also ends with the connection, so a broken one must not mask the
        error that is being raised."""
        if self.locked:
            self.locked = False
            try:
                self.conn.rollback()
                with self.conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, self._lock_id))
                self.conn.commit()
            except Exception:
                pass

    # -- run ----------------------------------------------------------------------------------
    def run(self, specs):
        """Sync every table; returns {"changed", "tables": [...], "server_version"?}."""
        if not self.check_mode:
            ensure_state_table(self.conn)
        mark_sync_session(self.conn)  # this connection's writes are the sync's own: never captured back
        size_temp_buffers(self.conn)
        self.acquire_lock()
        try:
            self._with_retry(self.source.connect, "connect")
            results = []
            for spec in specs:
                self._acc = new_acc()  # what this table committed: survives retries, reset per table
                results.append(self._with_retry(lambda s=spec: self.sync_table(s), "sync %s" % spec.source_name))
            changed = any(r["changed"] for r in results)
            return {"changed": changed, "tables": results}
        finally:
            self.source.close()
            if getattr(self, "_reverse_writer", None) is not None:
                self._reverse_writer.close()
            self.release_lock()

    def _with_retry(self, fn, what):
        attempt = 0
        while True:
            try:
                return fn()
            except SourceError as e:
                try:
                    self.conn.rollback()
                except Exception:
                    pass
                if not e.transient or attempt >= self.retries:
                    raise
                attempt += 1
                delay = self.retry_delay * (2 ** (attempt - 1))
                self.log("%s: %s; retry %d/%d in %.1fs" % (what, e, attempt, self.retries, delay))
                self.sleep(delay)
                self.source.close()
                try:
                    self.source.connect()
                except SourceError as e2:
                    if not e2.transient:
                        raise
                    # the next attempt reconnects lazily and counts as a retry

    # -- state --------------------------------------------------------------------------------
    def _load_state(self, cur, spec):
        # ct_version through to_jsonb: a state table from before that column still reads (check mode adds none)
        cur.execute(sql.SQL("SELECT hwm, database_guid, recovery_fork_guid, initial_done, rows_total, target_oid,"
                            " (to_jsonb(s) ->> 'ct_version')::bigint FROM {} s "
                            "WHERE job = %s AND source_schema = %s AND source_table = %s FOR UPDATE").format(
                                _ident(STATE_SCHEMA, STATE_TABLE)),
                    (self.job, spec.source_schema, spec.source_table))
        r = cur.fetchone()
        if r is None:
            return None
        return {"hwm": tsql.rv_int(r[0]) if r[0] is not None else None,
                "database_guid": str(r[1]) if r[1] else None, "recovery_fork_guid": str(r[2]) if r[2] else None,
                "initial_done": r[3], "rows_total": r[4], "target_oid": r[5], "ct_version": r[6]}

    def _save_ct_version(self, cur, spec, version, deleted=0):
        """The change tracking version the deletes are applied up to (in the caller's transaction)."""
        cur.execute(sql.SQL("UPDATE {} SET ct_version = %s, rows_total = greatest(rows_total - %s, 0)"
                            " WHERE job = %s AND source_schema = %s AND source_table = %s").format(
                                _ident(STATE_SCHEMA, STATE_TABLE)),
                    (version, deleted, self.job, spec.source_schema, spec.source_table))

    def _save_state(self, cur, plan, hwm, ident, initial_done, rows_delta, result=None, reset_rows=False):
        spec = plan.spec
        q = sql.SQL(
            "INSERT INTO {st} AS s (job, source_schema, source_table, target_schema, target_table, hwm,"
            " database_guid, recovery_fork_guid, initial_done, rows_total, last_run_at, last_ok_at, last_result,"
            " last_error, target_oid) VALUES (%(job)s, %(ss)s, %(stb)s, %(ts)s, %(tt)s, %(hwm)s, %(g)s, %(f)s,"
            " %(init)s, greatest(%(rows)s, 0), now(), CASE WHEN %(res)s::text IS NULL THEN NULL ELSE now() END,"
            " %(res)s, NULL, %(oid)s)"
            " ON CONFLICT (job, source_schema, source_table) DO UPDATE SET target_schema = EXCLUDED.target_schema,"
            " target_table = EXCLUDED.target_table, hwm = EXCLUDED.hwm, database_guid = EXCLUDED.database_guid,"
            " recovery_fork_guid = EXCLUDED.recovery_fork_guid, initial_done = EXCLUDED.initial_done,"
            " rows_total = greatest(CASE WHEN %(reset)s THEN 0 ELSE s.rows_total END + %(rows)s, 0),"
            " last_run_at = now(), last_ok_at = coalesce(EXCLUDED.last_ok_at, s.last_ok_at),"
            " last_result = coalesce(EXCLUDED.last_result, s.last_result), last_error = NULL,"
            " target_oid = EXCLUDED.target_oid"
        ).format(st=_ident(STATE_SCHEMA, STATE_TABLE))
        cur.execute(q, {"job": self.job, "ss": spec.source_schema, "stb": spec.source_table,
                        "ts": spec.target_schema, "tt": spec.target_table,
                        "hwm": None if hwm is None else bytes(tsql.rv_param(hwm)),
                        "g": ident[0], "f": ident[1], "init": initial_done, "rows": rows_delta,
                        "res": result, "reset": reset_rows, "oid": plan.target_oid})

    # -- target DDL ---------------------------------------------------------------------------
    def _set_role(self, cur):
        if self.owner_role:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(_ident(self.owner_role)))

    def _reset_role(self, cur):
        if self.owner_role:
            cur.execute("RESET ROLE")

    def _ensure_target(self, cur, plan):
        """Create the target table or add new columns; returns (existed, added_columns)."""
        spec = plan.spec
        existing = target_columns(cur, spec.target_schema, spec.target_table)
        if existing is None:
            if self.check_mode:
                return False, []
            self._set_role(cur)
            cols = [sql.SQL("{} {}{}").format(_ident(n), _type(t), sql.SQL(" NOT NULL" if n in plan.keys else ""))
                    for n, t, _c in plan.target_cols]
            cur.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({})) WITH (fillfactor = {})").format(
                _ident(spec.target_schema, spec.target_table), sql.SQL(", ").join(cols),
                sql.SQL(", ").join(_ident(k) for k in plan.keys), sql.Literal(self.fillfactor)))
            self._reset_role(cur)
            return False, []
        added = []
        for n, t, _c in plan.target_cols:
            if n not in existing:
                added.append((n, t))
            elif existing[n] != t:
                raise SyncError("table %s: column %r is %s in the target but the source now maps to %s: "
                                "incompatible change (migrate the target column or resync into a new table)"
                                % (spec.source_name, n, existing[n], t))
        if added and not self.check_mode:
            self._set_role(cur)
            for n, t in added:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    _ident(spec.target_schema, spec.target_table), _ident(n), _type(t)))
            self._reset_role(cur)
        return True, [n for n, _t in added]

    # -- one table ----------------------------------------------------------------------------
    def sync_table(self, spec):
        t0 = time.monotonic()
        plan = plan_table(self.source, spec)
        ident = self.source.identity()
        hi, dbts = self.source.watermarks()
        ct = spec.delete_detection == "change_tracking"
        ct_now = ct_min = None
        if ct:  # read before the window: a delete while the window is read is in (ct_now, next current]
            ct_now, ct_min = self.source.ct_versions(spec.source_schema, spec.source_table)
            if ct_now is None:
                raise SyncError("table %s: delete_detection change_tracking, but change tracking is not enabled on "
                                "the source database (ALTER DATABASE ... SET CHANGE_TRACKING = ON)" % spec.source_name)
            if ct_min is None:
                raise SyncError("table %s: delete_detection change_tracking, but change tracking is not enabled on "
                                "the table (ALTER TABLE %s ENABLE CHANGE_TRACKING)" % (
                                    spec.source_name, spec.source_name))
        acc = self._acc if self._acc is not None else new_acc()
        self._acc = acc
        res = {"source": spec.source_name, "target": spec.target_name, "inserted": acc["inserted"],
               "updated": acc["updated"], "deleted": acc["deleted"],
               "pending": None, "watermark_from": None, "watermark_to": None, "mode": spec.mode,
               "precision_notes": list(plan.notes), "added_columns": [], "resync": None, "changed": False,
               "vacuumed": False}
        if ct:  # the change tracking window of the deletes: (from, to]
            res["ct_version_from"], res["ct_version_to"] = None, ct_now
        conn = self.conn
        with conn.cursor() as cur:
            existed, added = self._ensure_target(cur, plan)
            plan.target_oid = target_oid(cur, spec.target_schema, spec.target_table)
            if spec.direction == "both" and (existed or not self.check_mode):
                conn.commit()  # PostgreSQL -> SQL Server first: its conflict check needs the rows as they were
                res["reverse"] = reverse_table(self, plan, check_mode=self.check_mode)
                res["changed"] = res["changed"] or bool(res["reverse"]["applied"] or res["reverse"]["resumed"] or any(
                    res["reverse"]["conflicts"].values()))
            state = self._load_state(cur, spec) if not self.check_mode or self._state_exists(cur) else None
            res["added_columns"] = added
            reset = ct_reset = None
            if state is not None and state["hwm"] is not None and plan.rv is not None:
                # the target must still be the table the state describes, else older rows would be missing
                reset = self._target_disagrees(cur, plan, state, existed)
            if state is not None and state["hwm"] is not None and plan.rv is not None and not reset:
                if state["database_guid"] and ident[0] and state["database_guid"] != ident[0]:
                    reset = "database_guid changed (%s -> %s)" % (state["database_guid"], ident[0])
                elif state["recovery_fork_guid"] and ident[1] and state["recovery_fork_guid"] != ident[1]:
                    reset = "recovery_fork_guid changed (%s -> %s)" % (state["recovery_fork_guid"], ident[1])
                elif dbts is not None and dbts + 1 < state["hwm"]:
                    reset = "@@DBTS + 1 (%s) is below the stored watermark %s" % (
                        tsql.rv_hex(dbts + 1), tsql.rv_hex(state["hwm"]))
                elif ct and state.get("ct_version") is None:
                    reset = ct_reset = ("no change tracking version is stored (delete_detection changed to "
                                        "change_tracking): deletes since the last run are unknown")
                elif ct and ct_min > state["ct_version"]:
                    reset = ct_reset = (
                        "change tracking's min valid version %d is above the stored version %d: the changes since "
                        "the last run were cleaned up (retention, or TRUNCATE TABLE)" % (ct_min, state["ct_version"]))
                if reset and reset == ct_reset and self.on_rewind != "full_resync" and not self.full:
                    raise RewindError(
                        "table %s: %s; refusing to sync because deletes could be missed. Run a full resync: set "
                        "on_rewind: full_resync (or run with full) to reload the table" % (spec.source_name, reset))
                if reset and self.on_rewind != "full_resync" and not self.full:
                    raise RewindError(
                        "table %s: the source database was restored or failed over (%s); refusing to sync because "
                        "changes could be skipped. Set on_rewind: full_resync (or run with full) to reload the "
                        "table" % (spec.source_name, reset))
            full_reload = bool(reset) or self.full or (plan.rv is None)
            inclusive = bool(added) and existed  # re-read rows whose rowversion did not move
            lo = 0 if (state is None or state["hwm"] is None or full_reload or inclusive) else state["hwm"]
            if plan.rv is None:
                lo = None
            res["watermark_from"] = tsql.rv_hex(lo) if lo is not None else None
            res["watermark_to"] = tsql.rv_hex(hi) if plan.rv is not None else None
            res["resync"] = reset or ("full" if self.full and plan.rv is not None else None)

            if ct and state is not None and not reset:
                res["ct_version_from"] = state.get("ct_version")
            if self.check_mode:
                res["pending"] = self.source.count(spec.source_schema, spec.source_table, plan.rv, lo, hi)
                if plan.rv is not None and lo is not None and lo >= hi:
                    res["pending"] = 0
                res["changed"] = bool(res["pending"]) or (not existed) or bool(added) or bool(reset) or bool(
                    res.get("reverse", {}).get("pending"))
                conn.rollback()
                res["duration_s"] = round(time.monotonic() - t0, 3)
                return res

            if reset or self.full:
                if existed:
                    cur.execute(sql.SQL("TRUNCATE {}").format(_ident(spec.target_schema, spec.target_table)))
                self._save_state(cur, plan, 0 if plan.rv else None, ident, False, 0, reset_rows=True)
                if ct:
                    self._save_ct_version(cur, spec, ct_now)
                conn.commit()
                res["changed"] = True
                state = {"hwm": 0, "initial_done": False, "rows_total": 0}
            initial_done = bool(state and state.get("initial_done")) and not full_reload
            # every row of the target is written: a first (or resumed) load, a reload, a re-read of all rows
            whole = (not initial_done or inclusive) if plan.rv is not None else None
            # Direct COPY into the target is an insert of keys that must not exist yet; try it while the
            # table holds nothing from an earlier complete window, and fall back to the staged upsert
            # (for the rest of the run) the first time a key exists.
            cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                _ident(spec.target_schema, spec.target_table)))
            nonempty = cur.fetchone()[0]
            if whole is None:  # mode full writes only changed rows, except into an empty target
                whole = not nonempty
            direct = (not nonempty or not initial_done) and spec.delete_detection != "soft_delete" \
                and plan.rv is not None and not inclusive
            if plan.rv is None:
                self._sync_full(cur, plan, ident, res)
            elif lo < hi:
                self._sync_window(cur, plan, lo, hi, ident, res, direct, inclusive, initial_done)
            elif state is None:
                self._save_state(cur, plan, hi, ident, True, 0, result="ok")
            if spec.delete_detection == "pk_diff" and plan.rv is not None:
                self._pk_diff(cur, plan, ident, hi, res)
            if ct:
                last = ct_now if (state is None or state.get("ct_version") is None) else state["ct_version"]
                res["ct_version_from"] = last
                res["ct_version_to"] = self._ct_deletes(cur, plan, last, res)
            conn.commit()
        if whole and self.vacuum_after_load and res["inserted"] + res["updated"] > 0:
            res["vacuumed"] = self._vacuum(spec)
        dur = time.monotonic() - t0
        n = res["inserted"] + res["updated"] + res["deleted"]
        res["changed"] = res["changed"] or n > 0 or bool(added) or not existed
        res["duration_s"] = round(dur, 3)
        res["rows_per_s"] = round(n / dur, 1) if dur > 0 else None
        if acc["nul"]:
            res["precision_notes"].extend("%s: U+0000 %s in %d value(s) (nul_character: %s)" % (
                c, "removed" if self.nul_character == "strip" else "replaced by U+FFFD", k, self.nul_character)
                for c, k in sorted(acc["nul"].items()))
        return res

    _acc = None

    def _vacuum(self, spec):
        """``VACUUM (ANALYZE)`` of the target, outside any transaction (the load has committed): True when it
        ran. A login role that may not vacuum the table (PostgreSQL skips it with a WARNING), a lock held past
        ``lock_timeout`` or any other error is logged as a warning and the run goes on."""
        conn = self.conn
        tgt = _ident(spec.target_schema, spec.target_table)
        warned = []

        def notice(d):
            if d.severity_nonlocalized == "WARNING":
                warned.append(d.message_primary)

        conn.add_notice_handler(notice)
        was = conn.autocommit
        try:
            conn.autocommit = True  # VACUUM cannot run in a transaction block; the session lock stays
            try:
                old = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
                conn.execute("SELECT set_config('lock_timeout', %s, false)",
                             ("%dms" % max(1, int(self.lock_timeout * 1000)),))
                try:
                    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(tgt))
                finally:
                    conn.execute("SELECT set_config('lock_timeout', %s, false)", (old,))
            finally:
                conn.autocommit = was
        except psycopg.Error as e:
            warned.append(str(e).strip())
        finally:
            conn.remove_notice_handler(notice)
        if warned:
            self.log("table %s: VACUUM (ANALYZE) %s after the load did not run (the sync goes on; autovacuum will "
                     "get to it): %s" % (spec.source_name, spec.target_name, "; ".join(warned)))
            return False
        return True

    def _committed(self, res, nul_pending=None):
        """A transaction committed: its counts (and U+0000 replacements) become the table's."""
        for k in ("inserted", "updated", "deleted"):
            self._acc[k] = res[k]
        if nul_pending:
            for c, k in nul_pending.items():
                self._acc["nul"][c] = self._acc["nul"].get(c, 0) + k
            nul_pending.clear()

    def _count_target(self, cur, plan):
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(plan.spec.target_schema, plan.spec.target_table)))
        return cur.fetchone()[0]

    def _target_disagrees(self, cur, plan, state, existed):
        """Why the target is not the table the state row describes (dropped, recreated or emptied out of
        band), or None."""
        spec = plan.spec
        if not existed:
            return "target table %s was missing (dropped out of band)" % spec.target_name
        if state.get("target_oid") is not None and plan.target_oid != state["target_oid"]:
            return "target table %s was recreated out of band" % spec.target_name
        if state.get("rows_total"):
            cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                _ident(spec.target_schema, spec.target_table)))
            if not cur.fetchone()[0]:
                return "target table %s was emptied out of band (the state counts %d rows)" % (
                    spec.target_name, state["rows_total"])
        return None

    def _state_exists(self, cur):
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", ("%s.%s" % (STATE_SCHEMA, STATE_TABLE),))
        return cur.fetchone()[0]

    # -- loading ------------------------------------------------------------------------------
    def _pages(self, batches, rv_idx):
        """Pages of about ``commit_rows`` rows that never end inside a run of equal rowversions.

        Resuming at ``last + 1`` is exact only when every row carrying ``last`` is in the committed
        page. A table's rowversions are unique, but a view's can repeat (a join shows one base row's
        value on several rows), so the trailing rows sharing the page's last value move to the next
        page (and a page that is one value throughout grows until the value changes).
        """
        page = []
        for b in batches:
            page.extend(b)
            if len(page) >= self.commit_rows:
                last = page[-1][rv_idx]
                cut = len(page) - 1
                while cut > 0 and page[cut - 1][rv_idx] == last:
                    cut -= 1
                if cut == 0:
                    continue
                yield page[:cut]
                page = page[cut:]
        if page:
            yield page

    def _copy(self, cur, table_ident, plan, rows, transform):
        cols = sql.SQL(", ").join(_ident(n) for n, _t, _c in plan.target_cols)
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table_ident, cols)) as cp:
            cp.set_types([c for _n, _t, c in plan.target_cols])
            if transform is None:
                for r in rows:
                    cp.write_row(r)
            else:
                for r in rows:
                    cp.write_row(transform(r))

    def _staging(self, cur, plan, keep=False):
        """A temp staging table shaped like the target: dropped at commit, or (``keep``) emptied at each
        commit and kept for the next pages (one CREATE per window, not per page; the caller drops it)."""
        stg = "bq_stg_" + uuid.uuid4().hex[:12]
        cur.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT {}").format(
            _ident(stg), _ident(plan.spec.target_schema, plan.spec.target_table),
            sql.SQL("DELETE ROWS" if keep else "DROP")))
        return _ident(stg)

    def _upsert(self, cur, plan, stg, inclusive, dedup=False):
        """Upsert staging -> target with the version guard; returns (inserted, updated, deleted)."""
        spec = plan.spec
        tgt = _ident(spec.target_schema, spec.target_table)
        names = [n for n, _t, _c in plan.target_cols]
        cols = sql.SQL(", ").join(_ident(n) for n in names)
        keys = sql.SQL(", ").join(_ident(k) for k in plan.keys)
        nonkey = [n for n in names if n not in plan.keys]
        deleted = 0
        where_src = sql.SQL("")
        if spec.delete_detection == "soft_delete":
            sd = _ident(spec.soft_delete_column)
            sdt = [t for n, t, _c in plan.target_cols if n == spec.soft_delete_column][0]
            val = spec.soft_delete_value
            val = ("true" if val else "false") if isinstance(val, bool) else str(val)
            pred = sql.SQL("s.{} IS NOT DISTINCT FROM CAST({} AS {})").format(sd, sql.Literal(val), _type(sdt))
            match = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=_ident(k)) for k in plan.keys)
            cur.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE {} AND {}").format(tgt, stg, match, pred))
            deleted = cur.rowcount
            where_src = sql.SQL(" WHERE NOT ({})").format(pred)
        src = sql.SQL("SELECT {} FROM {} s{}").format(
            sql.SQL(", ").join(sql.SQL("s.{}").format(_ident(n)) for n in names), stg, where_src)
        if dedup:
            src = sql.SQL("SELECT DISTINCT ON ({k}) * FROM ({q}) d ORDER BY {k}").format(k=keys, q=src)
        if not nonkey:
            action = sql.SQL("DO NOTHING")
        else:
            sets = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=_ident(n)) for n in nonkey)
            if plan.rv is not None:
                op = sql.SQL("<=") if inclusive else sql.SQL("<")
                guard = sql.SQL("t.{rv} {op} EXCLUDED.{rv}").format(rv=_ident(plan.rv), op=op)
            else:
                guard = sql.SQL("({}) IS DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(sql.SQL("t.{}").format(_ident(n)) for n in nonkey),
                    sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(_ident(n)) for n in nonkey))
            action = sql.SQL("DO UPDATE SET {} WHERE {}").format(sets, guard)
        if self._merge_counts(cur):
            merged = self._merge(cur, plan, tgt, names, nonkey, src, inclusive, stg)
            if merged is not None:
                return merged[0], merged[1], deleted
        cur.execute(sql.SQL(
            "WITH u AS (INSERT INTO {tgt} AS t ({cols}) {src} ON CONFLICT ({keys}) {action}"
            " RETURNING (xmax = 0) AS ins)"
            " SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM u").format(
                tgt=tgt, cols=cols, src=src, keys=keys, action=action))
        ins, upd = cur.fetchone()
        return ins, upd, deleted

    _merge_ok = None

    def _merge_counts(self, cur):
        """MERGE (PostgreSQL 15) joins the page to the target once instead of probing the key index row by row
        as INSERT .. ON CONFLICT does (bench/bench_sync.py). Its inserted/updated split comes from the
        transaction's own table counters, so it needs track_counts (on by default)."""
        if self._merge_ok is None:
            self._merge_ok = self.conn.info.server_version >= 150000
            if self._merge_ok:
                cur.execute("SELECT current_setting('track_counts')::boolean")
                self._merge_ok = bool(cur.fetchone()[0])
        return self._merge_ok

    def _key_range(self, cur, plan, stg):
        """`` AND t.<first key> BETWEEN <lowest> AND <highest staged value>`` as constants, or nothing for an empty
        page. Every staged key lies in it, so no match changes; with the constants the planner estimates the range
        from the target's statistics: a page of neighbouring keys reads only its part of the target (without it the
        planner hashed the whole target per page, or merge-joined from the key index's first entry), a page of
        scattered keys keeps the plan it had."""
        k = plan.keys[0]
        ktype = [t for n, t, _c in plan.target_cols if n == k][0]
        cur.execute("SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = %s)",
                    (plan.spec.target_schema, plan.spec.target_table, k))
        if not cur.fetchone()[0]:  # never analyzed: a guessed range estimate would make a scattered page slower
            return sql.SQL("")
        # ORDER BY .. LIMIT 1, not min()/max(): uuid, bytea and boolean have a btree order but no min()
        cur.execute(sql.SQL("SELECT (SELECT {k} FROM {s} ORDER BY 1 LIMIT 1), (SELECT {k} FROM {s} ORDER BY 1 DESC"
                            " LIMIT 1)").format(k=_ident(k), s=stg))
        lo, hi = cur.fetchone()
        if lo is None:
            return sql.SQL("")
        return sql.SQL(" AND t.{k} BETWEEN CAST({lo} AS {t}) AND CAST({hi} AS {t})").format(
            k=_ident(k), lo=sql.Literal(lo), hi=sql.Literal(hi), t=_type(ktype))

    def _merge(self, cur, plan, tgt, names, nonkey, src, inclusive, stg):
        """The guarded upsert as one MERGE; returns (inserted, updated), or None when a key appeared meanwhile
        (another writer, e.g. an application on a direction-both table): MERGE's insert is not speculative
        as ON CONFLICT's is, so the page is undone to a savepoint and the caller runs the ON CONFLICT form."""
        on = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=_ident(k)) for k in plan.keys)
        on = on + self._key_range(cur, plan, stg)
        matched = sql.SQL("")
        if nonkey:
            if plan.rv is not None:
                op = sql.SQL("<=" if inclusive else "<")
                guard = sql.SQL("t.{rv} {op} s.{rv}").format(rv=_ident(plan.rv), op=op)
            else:
                guard = sql.SQL("({}) IS DISTINCT FROM ({})").format(
                    sql.SQL(", ").join(sql.SQL("t.{}").format(_ident(n)) for n in nonkey),
                    sql.SQL(", ").join(sql.SQL("s.{}").format(_ident(n)) for n in nonkey))
            matched = sql.SQL(" WHEN MATCHED AND {} THEN UPDATE SET {}").format(guard, sql.SQL(", ").join(
                sql.SQL("{c} = s.{c}").format(c=_ident(n)) for n in nonkey))
        if plan.target_oid is None:
            return None
        counter = sql.SQL("SELECT pg_stat_get_xact_tuples_inserted({})").format(sql.Literal(plan.target_oid))
        cur.execute(counter)
        ins0 = cur.fetchone()[0]
        cur.execute("SAVEPOINT bq_merge")
        try:
            cur.execute(sql.SQL("MERGE INTO {tgt} AS t USING ({src}) AS s ON {on}{matched}"
                                " WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})").format(
                tgt=tgt, src=src, on=on, matched=matched, cols=sql.SQL(", ").join(_ident(n) for n in names),
                vals=sql.SQL(", ").join(sql.SQL("s.{}").format(_ident(n)) for n in names)))
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT bq_merge")
            return None
        affected = cur.rowcount
        cur.execute("RELEASE SAVEPOINT bq_merge")
        cur.execute(counter)
        ins = cur.fetchone()[0] - ins0
        return ins, affected - ins

    def _sync_window(self, cur, plan, lo, hi, ident, res, direct, inclusive, initial_done=False):
        """Stream ``[lo, hi)`` in rowversion order; each page + its watermark in one transaction.

        ``inclusive`` (re-reading rows after columns were added) runs as ONE transaction with a
        ``<=`` guard: per-page watermarks would move backwards, and a crash would leave rows below
        the old watermark without the new columns.

        Page commits keep ``initial_done`` as it was (a delta after the initial load stays one); a window
        read from 0 ends with ``rows_total`` set to the target's row count.
        """
        spec = plan.spec
        conn = self.conn
        nul = {}  # U+0000 replacements of the transaction in progress
        transform = make_transform(plan.colmaps, self.nul_character, nul)
        rv_idx = plan.source_columns.index(plan.rv)
        tgt = _ident(spec.target_schema, spec.target_table)
        stg = None
        batches = self.source.batches(spec.source_schema, spec.source_table, plan.source_columns, plan.rv, lo, hi)
        if self.read_ahead > 0:
            batches = ReadAhead(batches, self.read_ahead)
        try:
            for page in self._pages(batches, rv_idx):
                last = tsql.rv_int(page[-1][rv_idx])
                ins = upd = dele = 0
                if direct:
                    cur.execute("SAVEPOINT bq_direct")
                    try:
                        self._copy(cur, tgt, plan, page, transform)
                        cur.execute("RELEASE SAVEPOINT bq_direct")
                        ins = len(page)
                    except psycopg.errors.UniqueViolation:
                        cur.execute("ROLLBACK TO SAVEPOINT bq_direct")
                        direct = False
                        self.log("table %s: keys already present, switching to staged upsert" % spec.source_name)
                if not direct:
                    if stg is None:
                        # one per window (a retry makes a new one; a table left by a failed window goes
                        # with the session)
                        stg = self._staging(cur, plan, keep=True)
                    self._copy(cur, stg, plan, page, transform)
                    ins, upd, dele = self._upsert(cur, plan, stg, inclusive)
                    if inclusive:  # no commit between pages: empty it by hand
                        cur.execute(sql.SQL("TRUNCATE {}").format(stg))
                res["inserted"] += ins
                res["updated"] += upd
                res["deleted"] += dele
                if not inclusive:
                    self._save_state(cur, plan, last + 1, ident, initial_done, ins - dele)
                    conn.commit()  # ON COMMIT DELETE ROWS empties the staging table
                    self._committed(res, nul)
        finally:
            if hasattr(batches, "close"):
                batches.close()
        if stg is not None:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stg))
        if lo == 0:  # a full read: the target holds exactly what was read
            self._save_state(cur, plan, hi, ident, True, self._count_target(cur, plan), result="ok", reset_rows=True)
        else:
            rows = (res["inserted"] - res["deleted"]) if inclusive else 0
            self._save_state(cur, plan, hi, ident, True, rows, result="ok")
        conn.commit()
        self._committed(res, nul)

    def _sync_full(self, cur, plan, ident, res):
        """mode full: upsert every row (changed ones only), then delete keys gone from the source."""
        spec = plan.spec
        nul = {}
        transform = make_transform(plan.colmaps, self.nul_character, nul)
        stg = self._staging(cur, plan)
        tgt = _ident(spec.target_schema, spec.target_table)
        before = self.source.count(spec.source_schema, spec.source_table)
        read = 0
        batches = self.source.batches(spec.source_schema, spec.source_table, plan.source_columns)
        for b in batches:
            self._copy(cur, stg, plan, b, transform)
            read += len(b)
        after = self.source.count(spec.source_schema, spec.source_table)
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tgt))
        total = cur.fetchone()[0]
        self._check_stream(spec, "mode full", "rows", read, before, after, total)
        ins, upd, dele = self._upsert(cur, plan, stg, False, dedup=True)
        match = sql.SQL(" AND ").join(sql.SQL("s.{k} = t.{k}").format(k=_ident(k)) for k in plan.keys)
        cur.execute(sql.SQL("DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
            tgt, stg, match))
        self._check_deletes(spec, "mode full", cur.rowcount, total)
        dele += cur.rowcount
        self._save_state(cur, plan, None, ident, True, self._count_target(cur, plan), result="ok", reset_rows=True)
        self.conn.commit()
        res["inserted"] += ins
        res["updated"] += upd
        res["deleted"] += dele
        self._committed(res, nul)

    def _check_stream(self, spec, what, unit, read, before, after, total):
        """Refuse (unless forced) deletions computed from a stream that cannot be the whole source."""
        if self.force:
            return
        if not min(before, after) <= read <= max(before, after):
            raise SyncError(
                "table %s: %s read %d %s but the source counts %d rows (%d after the read): the stream ended "
                "early or the table changed meanwhile; nothing deleted (run again, or force the run)" % (
                    spec.source_name, what, read, unit, before, after))
        if read == 0 and total > 0:
            raise SyncError(
                "table %s: %s read no %s from the source but the target holds %d rows; refusing to delete them "
                "all (force the run if the source table really is empty)" % (spec.source_name, what, unit, total))

    def _check_deletes(self, spec, what, n, total):
        if not self.force and total and n > self.max_delete_fraction * total:
            raise SyncError(
                "table %s: %s would delete %d of %d rows, more than max_delete_fraction %s; nothing deleted "
                "(raise max_delete_fraction or force the run)" % (
                    spec.source_name, what, n, total, self.max_delete_fraction))

    def _key_stage(self, cur, plan):
        """A temp table of the key columns (dropped at commit) and the transform of key rows into it."""
        kstg = _ident("bq_keys_" + uuid.uuid4().hex[:12])
        keycols = [(n, t, c) for n, t, c in plan.target_cols if n in plan.keys]
        keycols.sort(key=lambda x: plan.keys.index(x[0]))
        cur.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            kstg, sql.SQL(", ").join(sql.SQL("{} {}").format(_ident(n), _type(t)) for n, t, _c in keycols)))
        # a key column is one value: a datetimeoffset key is matched on its instant (as SQL Server compares
        # it); its offset column is not part of the key and not streamed
        kcm = [ColumnMap(c.name, c.src_type, c.pg_type, c.copy_type, "str" if c.kind == "str" else None, c.nullable)
               for k in plan.keys for c in plan.colmaps if c.name == k]
        return kstg, keycols, make_transform(kcm, self.nul_character, {})

    def _ct_deletes(self, cur, plan, last, res):
        """delete_detection change_tracking: the keys CHANGETABLE(CHANGES ..) reports deleted since ``last``
        (read in one SNAPSHOT transaction up to CHANGE_TRACKING_CURRENT_VERSION()) are deleted from the target
        in ONE PostgreSQL transaction with the new version stored beside the watermark: a crash before the
        commit replays the same deletes (no-ops for keys already gone), after it they are never read again.
        Returns the version stored.

        Direction both: the reverse direction's own deletes carry the job's change tracking context and are not
        read back, and a key with a change-log entry still pending (changed in PostgreSQL after the reverse step
        read its window) is not deleted: the next run's reverse step finds it deleted on SQL Server, a conflict
        the table's policy decides."""
        spec = plan.spec
        both = spec.direction == "both"
        current, min_valid, keys = self.source.ct_deleted_keys(
            spec.source_schema, spec.source_table, plan.keys, last, context=ct_context(self.job) if both else None)
        if keys is None:  # cleaned up between the check at the start of the run and this read
            raise RewindError(
                "table %s: change tracking's min valid version %s is above the stored version %d: the changes since "
                "the last run were cleaned up; refusing to sync because deletes could be missed. Run a full resync: "
                "set on_rewind: full_resync (or run with full) to reload the table" % (
                    spec.source_name, min_valid, last))
        n = 0
        if keys:
            tgt = _ident(spec.target_schema, spec.target_table)
            kstg, keycols, transform = self._key_stage(cur, plan)
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    kstg, sql.SQL(", ").join(_ident(k) for k in plan.keys))) as cp:
                cp.set_types([c for _n, _t, c in keycols])
                for r in keys:
                    cp.write_row(transform(r) if transform else r)
            match = sql.SQL(" AND ").join(sql.SQL("k.{c} = t.{c}").format(c=_ident(k)) for k in plan.keys)
            pending = sql.SQL("")
            if both:  # lock the rows first: the check below then sees every change committed to them
                cur.execute(sql.SQL("SELECT 1 FROM {} t JOIN {} k ON {} FOR UPDATE OF t").format(tgt, kstg, match))
                found = cur.rowcount
                pending = sql.SQL(" AND NOT EXISTS (SELECT 1 FROM {} c WHERE c.table_schema = {} AND c.table_name = {}"
                                  " AND c.key = jsonb_build_object({}))").format(
                    _ident(STATE_SCHEMA, CHANGE_TABLE), sql.Literal(spec.target_schema),
                    sql.Literal(spec.target_table), sql.SQL(", ").join(
                        sql.SQL("{}, t.{}").format(sql.Literal(k), _ident(k)) for k in plan.keys))
            cur.execute(sql.SQL("DELETE FROM {} t USING {} k WHERE {}{}").format(tgt, kstg, match, pending))
            n = cur.rowcount
            if both and found > n:
                self.log("table %s: %d key(s) deleted on SQL Server were changed in PostgreSQL meanwhile: kept for the "
                         "next run's conflict check" % (spec.source_name, found - n))
        self._save_ct_version(cur, spec, current, n)
        self.conn.commit()
        res["deleted"] += n
        self._committed(res)
        return current

    def _pk_diff(self, cur, plan, ident, hi, res):
        """Delete target rows whose key is no longer in the source (one transaction)."""
        spec = plan.spec
        tgt = _ident(spec.target_schema, spec.target_table)
        kstg, keycols, transform = self._key_stage(cur, plan)
        # the keys read are checked against COUNT(*) read just before and just after the key stream: a
        # stream that ended early (a dropped result, a filtered view) must never turn into deletes
        before = self.source.count(spec.source_schema, spec.source_table)
        read = 0
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                kstg, sql.SQL(", ").join(_ident(k) for k in plan.keys))) as cp:
            cp.set_types([c for _n, _t, c in keycols])
            for b in self.source.key_batches(spec.source_schema, spec.source_table, plan.keys):
                read += len(b)
                for r in b:
                    cp.write_row(transform(r) if transform else r)
        after = self.source.count(spec.source_schema, spec.source_table)
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tgt))
        total = cur.fetchone()[0]
        self._check_stream(spec, "pk_diff", "keys", read, before, after, total)
        cur.execute(sql.SQL("ANALYZE {}").format(kstg))
        match = sql.SQL(" AND ").join(sql.SQL("k.{c} = t.{c}").format(c=_ident(k)) for k in plan.keys)
        cur.execute(sql.SQL("DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} k WHERE {})").format(
            tgt, kstg, match))
        n = cur.rowcount
        self._check_deletes(spec, "pk_diff", n, total)
        if n:
            self._save_state(cur, plan, hi, ident, True, -n)
        self.conn.commit()
        res["deleted"] += n
        self._committed(res)
