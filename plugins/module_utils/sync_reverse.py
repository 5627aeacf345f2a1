# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reverse direction of a ``direction: both`` table: PostgreSQL changes applied to SQL Server.

One run, per table (before the forward load of the same table):

1. the capture trigger is in place (``sync_capture``); the position already applied is the larger of the
   one stored in PostgreSQL (``berqenas.sync_reverse_state``) and the one stored on SQL Server
   (``[dbo].[berqenas_sync_applied]``), so a crash after SQL Server committed and before PostgreSQL did
   neither loses a change nor applies one twice: SQL Server's record is written in the same SQL Server
   transaction as the batch (its first write, so its row lock is held to the COMMIT), and a run that finds it
   ahead of PostgreSQL's skips those entries. The run reads it by a no-op ``UPDATE ... OUTPUT``, which waits for
   a batch SQL Server is still finishing for a killed run (a plain read would not wait, and the batch would be
   applied twice);
2. change-log entries below the window bound are read in batches, one action per key (the last
   operation; the row's current PostgreSQL values);
3. per batch, ONE SQL Server transaction (``SET XACT_ABORT ON``) in two or three round trips: first the rows
   whose write cannot conflict are written by statements guarded by the conflict check itself (an
   ``UPDATE ... FROM (VALUES ...)`` only where SQL Server's rowversion is still the one PostgreSQL last knew, an
   ``INSERT ... SELECT ... WHERE NOT EXISTS`` only where the key is absent), whose ``OUTPUT inserted.key,
   inserted.rv`` names the rows written and their new rowversions; then the other keys' rowversions are read
   WITH (UPDLOCK, HOLDLOCK) (whole rows only for the keys whose rowversion moved): such a key, whose rowversion
   differs from the one PostgreSQL last knew (the target row's rowversion column, or a tombstone's ``old_rv``),
   changed on both sides: a conflict, resolved by the table's ``conflict_policy``; its deletes, updates and
   inserts and COMMIT go in the last round trip. A table with an enabled trigger (SQL
   Server refuses OUTPUT there, error 334) or without a non-key column takes the checked path for every key
   and reads the new rowversions back;
4. then ONE PostgreSQL transaction: the new rowversions written into the target rows (echo prevention:
   the forward sync's version guard then finds nothing newer to load, so the sync's own SQL Server writes
   never come back as changes), the rows SQL Server won written to PostgreSQL, the conflicts logged
   (``berqenas.sync_conflict``: key, winner, the loser's values), applied entries purged, the position
   stored. All writes run on the marked connection, so none of them is captured again.

Batch N's SQL Server half (3) runs in a thread of its own while batch N-1's PostgreSQL half (4) and the read of
batch N+1 (2) run here; a batch sharing a key with the one before waits for that one's PostgreSQL half and is
read again (see reverse_table).

Why a recorded position and not only repeatable upserts: replaying an upsert on SQL Server would bump
the rowversion again, and the conflict check would then take the sync's own earlier write for a change
made on SQL Server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import threading
import uuid

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as tsql
from ansible_collections.berqenas.platform.plugins.module_utils import sync_capture as cap
from ansible_collections.berqenas.platform.plugins.module_utils.mssql import (PymssqlSource, SourceError, classify,
                                                                              render)
from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import param_ident as _pid
from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import sql
from ansible_collections.berqenas.platform.plugins.module_utils.sync_state import STATE_SCHEMA
from ansible_collections.berqenas.platform.plugins.module_utils.sync_types import SyncError, make_transform

APPLIED_SCHEMA = "dbo"
APPLIED_TABLE = "berqenas_sync_applied"
REVERSE_BATCH = 1000   # rows per statement (SQL Server's limit of rows per INSERT ... VALUES list)
REVERSE_TXN_KEYS = 5000  # change-log entries per batch (one SQL Server and one PostgreSQL transaction)
CONFLICT_REPORT_LIMIT = 100  # conflicts listed in the result per table (all are counted and logged)
WINNERS = ("sqlserver", "postgresql")


SLOT = tsql.SLOT  # a value's place in a statement built here (mssql.render fills them)


def _q(name):
    return tsql.quote_ident(name)


def ct_context(job):
    """The change tracking context of a job's own SQL Server writes (``WITH CHANGE_TRACKING_CONTEXT``, on tables
    with delete_detection change_tracking): ``berqenas`` and 16 bytes of the job name's SHA-256. The forward
    direction's CHANGETABLE read skips changes whose last context is this one; another job's writes to the same
    table carry another context and still reach this job."""
    return b"berqenas" + hashlib.sha256(job.encode("utf-8")).digest()[:16]


def _tsql(template, *parts):
    """A T-SQL statement: ``template``'s %s places filled with names quoted by quote_ident (values are SLOTs)."""
    return template % parts


def _qt(schema, table):
    return _q(schema) + "." + _q(table)


def _ms_value(v):
    """A PostgreSQL value as a pymssql parameter (binary as bytearray: see the reference, section 4.4)."""
    if isinstance(v, (bytes, memoryview)):
        return bytearray(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


def _norm(v):
    if v is None or isinstance(v, (int, str)):  # the common key types first (bool is an int: kept as it is too)
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v).lower()


def _jsonable(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(v).hex()
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time, uuid.UUID)):
        return v.isoformat() if hasattr(v, "isoformat") else str(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def _dump(d):
    return None if d is None else json.dumps(dict((c, _jsonable(v)) for c, v in d.items()))


def _utc_naive(v):
    if isinstance(v, datetime.datetime) and v.tzinfo is not None:
        return v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return v


class MssqlWriter(PymssqlSource):
    """The reverse direction's own pymssql connection (autocommit, as the reader's; transactions are explicit
    ``BEGIN TRAN`` / ``COMMIT TRAN`` so nothing stays open to pin MIN_ACTIVE_ROWVERSION between batches)."""

    def __init__(self, params, where):  # pylint: disable=super-init-not-called
        self.params = dict(params)
        self.params["autocommit"] = True
        self.where = where
        self.batch_size = 5000
        self.conn = None

    def execute(self, text, params=None, fetch=False, action="write"):
        """Run ``text``, whose value places are SLOT, with ``params`` rendered (mssql.render); with ``fetch``,
        returns the rows of its result set."""
        sets = self.execute_batch([(text, params)], action=action)
        return (sets[0] if sets else []) if fetch else None

    def execute_batch(self, statements, action="write"):
        """Run several statements ([(text, params)], each rendered by mssql.render) as ONE T-SQL batch (one round
        trip); returns the rows of every result set in order (statements without one give none). Every result set
        is read through to the end, so an error of any statement in the batch raises here."""
        if self.conn is None:
            self.connect()
        try:
            text = ";\n".join(render(t, p) for t, p in statements)
            cur = self.conn.cursor()
            cur.execute(text)
            sets = []
            while True:
                if cur.description is not None:
                    sets.append(cur.fetchall())
                if not cur.nextset():
                    break
            cur.close()
            return sets
        except Exception as e:
            raise classify(e, "%s on %s" % (action, self.where)) from e

    def rollback(self):
        if self.conn is not None:
            try:
                self.execute("ROLLBACK TRAN", action="rollback")
            except SourceError:
                self.close()


def writer_for(source):
    """A MssqlWriter with the forward source's connection parameters (same login, same database)."""
    return MssqlWriter(source.params, source.where)


# ---- reverse state ----------------------------------------------------------------------------

def _load_position(cur, job, spec):
    cur.execute(sql.SQL("SELECT last_xid::text, last_id FROM {} WHERE job = %s AND table_schema = %s"
                        " AND table_name = %s FOR UPDATE").format(
                            sql.Identifier(STATE_SCHEMA, cap.REVERSE_STATE_TABLE)),
                (job, spec.target_schema, spec.target_table))
    r = cur.fetchone()
    return (int(r[0]), int(r[1])) if r else None


def _save_position(cur, job, spec, pos, applied, conflicts):
    cur.execute(sql.SQL(
        "INSERT INTO {} AS s (job, table_schema, table_name, last_xid, last_id, applied_total, conflicts_total,"
        " last_run_at) VALUES (%s, %s, %s, %s::text::xid8, %s, %s, %s, now())"
        " ON CONFLICT (job, table_schema, table_name) DO UPDATE SET last_xid = EXCLUDED.last_xid,"
        " last_id = EXCLUDED.last_id, applied_total = s.applied_total + EXCLUDED.applied_total,"
        " conflicts_total = s.conflicts_total + EXCLUDED.conflicts_total, last_run_at = now()").format(
            sql.Identifier(STATE_SCHEMA, cap.REVERSE_STATE_TABLE)),
        (job, spec.target_schema, spec.target_table, str(pos[0]), pos[1], applied, conflicts))


def _ensure_applied_table(w):
    r = w.execute("SELECT OBJECT_ID(N'%s')" % tsql.quote_table(APPLIED_SCHEMA, APPLIED_TABLE), fetch=True,
                  action="find the applied-position table")
    if r and r[0][0] is not None:
        return
    w.execute("CREATE TABLE %s (job nvarchar(128) NOT NULL, tbl nvarchar(300) NOT NULL, last_xid bigint NOT NULL,"
              " last_id bigint NOT NULL, PRIMARY KEY (job, tbl))" % _qt(APPLIED_SCHEMA, APPLIED_TABLE),
              action="create the applied-position table")


def _applied_position(w, job, spec):
    """The position SQL Server last committed, read by a no-op UPDATE: it waits for a transaction still holding
    the row (a batch sets it first, see _sqlserver_half), e.g. the last batch of a killed run that the server
    commits or rolls back after the kill. A plain read would see the position before that batch (or, under
    snapshot isolation, never wait), and this run would apply the batch a second time."""
    r = w.execute(_tsql("UPDATE %s SET last_id = last_id OUTPUT inserted.last_xid, inserted.last_id"
                        " WHERE job = \x00 AND tbl = \x00", _qt(APPLIED_SCHEMA, APPLIED_TABLE)),
                  (job, spec.source_name), fetch=True, action="read the applied position")
    return (int(r[0][0]), int(r[0][1])) if r else None


# ---- one table --------------------------------------------------------------------------------

class ReversePlan(object):
    """What the reverse direction writes: the 1:1 columns of the forward plan (the rowversion excluded)."""

    def __init__(self, plan):
        spec = plan.spec
        for c in plan.colmaps:
            if len(c.target_columns()) != 1 or c.target_columns()[0][0] != c.name:
                raise SyncError("table %s: direction both cannot write column %r back (it maps to %s in "
                                "PostgreSQL); exclude it or sync this table one way" % (
                                    spec.source_name, c.name, ", ".join(n for n, _t, _c in c.target_columns())))
        self.plan = plan
        self.rv = plan.rv
        if self.rv is None:
            raise SyncError("table %s: direction both needs a rowversion column (mode delta)" % spec.source_name)
        self.keys = list(plan.keys)
        self.cols = [n for n, _t, _c in plan.target_cols]          # PostgreSQL = SQL Server names
        self.write_cols = [n for n in self.cols if n != self.rv]
        self.nonkey = [n for n in self.write_cols if n not in self.keys]
        self.triggers = True  # until reverse_table has looked (_has_triggers): new rowversions read back
        self.cast_types = dict((c.name, _cast_type(c, c.name in self.keys)) for c in plan.colmaps)
        ts = spec.conflict_timestamp_column
        if spec.conflict_policy == "latest_wins" and ts not in self.cols:
            raise SyncError("table %s: conflict_timestamp_column %r is not a synced column" % (spec.source_name, ts))


def _resume_writeback(w, cur, spec, rp, after, upto):
    """The PostgreSQL half of batches SQL Server committed (entries in (after, upto]) was lost: put SQL Server's
    new rowversions into the PostgreSQL rows that still hold the values the batch wrote (a row changed on SQL
    Server since then keeps its older rowversion, so the forward load brings that change; a row without one gets
    the lowest, which the forward guard passes). Without this, the next edit of such a row in PostgreSQL would
    be taken for a conflict with the sync's own write."""
    cur.execute(sql.SQL("SELECT DISTINCT key FROM {} WHERE table_schema = %s AND table_name = %s"
                        " AND (xid, id) > (%s::text::xid8, %s) AND (xid, id) <= (%s::text::xid8, %s)").format(
        sql.Identifier(STATE_SCHEMA, cap.CHANGE_TABLE)),
        (spec.target_schema, spec.target_table, str(after[0]), after[1], str(upto[0]), upto[1]))
    keys = [r[0] for r in cur.fetchall()]
    if not keys:
        return
    pg = _pg_rows(cur, spec, rp, keys)
    ms = _ms_rows(w, spec, rp, keys, lock=False)
    back = []
    for k, row in pg.items():
        m = ms.get(k)
        same = m is not None and all(_norm(row[c]) == _norm(m[c]) for c in rp.write_cols)
        rv = bytes(m[rp.rv]) if same else (bytes(8) if row[rp.rv] is None else None)
        if rv is not None:
            back.append((row, rv))
    _write_rowversions(cur, spec, rp, back)


def _write_rowversions(cur, spec, rp, back):
    """[(row, rowversion bytes)]: SQL Server's rowversion into the PostgreSQL rows of those keys, in ONE
    statement (the keys and values as one JSON array, typed by the target's row type)."""
    if not back:
        return
    tgt = _pid(spec.target_schema, spec.target_table)
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = d.{c}").format(c=_pid(k)) for k in rp.keys)
    doc = []
    for row, rv in back:
        d = dict((c, _jsonable(row[c])) for c in rp.keys)
        d[rp.rv] = _jsonable(rv)
        doc.append(d)
    cur.execute(sql.SQL("UPDATE {tgt} t SET {rv} = d.{rv} FROM jsonb_populate_recordset(NULL::{tgt}, %s::jsonb) d"
                        " WHERE {match}").format(tgt=tgt, rv=_pid(rp.rv), match=match), (json.dumps(doc),))


def _key_of(d, keys):
    return tuple([_norm(d.get(k)) for k in keys])


def _where_keys(rp, n):
    if len(rp.keys) == 1:
        return "%s IN (%s)" % (_q(rp.keys[0]), ", ".join([SLOT] * n))
    one = "(" + " AND ".join("%s = %s" % (_q(k), SLOT) for k in rp.keys) + ")"
    return " OR ".join([one] * n)


def _key_params(rp, keyrows):
    out = []
    for kr in keyrows:
        out.extend(_ms_value(kr[k]) for k in rp.keys)
    return tuple(out)


def _pg_rows(cur, spec, rp, keydicts):
    """Current PostgreSQL rows of the keys: {key: {col: value}}."""
    tgt = _pid(spec.target_schema, spec.target_table)
    sel = sql.SQL(", ").join(sql.SQL("t.{}").format(_pid(c)) for c in rp.cols)
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = (jsonb_populate_record(NULL::{tgt}, e.k)).{c}").format(
        c=_pid(k), tgt=tgt) for k in rp.keys)
    cur.execute(sql.SQL("SELECT {} FROM jsonb_array_elements(%s::jsonb) AS e(k) JOIN {} t ON {}").format(
        sel, tgt, match), (json.dumps(keydicts),))
    out = {}
    for r in cur.fetchall():
        d = dict(zip(rp.cols, r))
        out[_key_of(d, rp.keys)] = d
    return out


def _ms_rows(w, spec, rp, keydicts, lock, cols=None, first=None):
    """Current SQL Server rows of the keys: {key: {col: value}} (inside the batch's transaction); ``cols``:
    the columns to read (default: all the synced ones); ``first``: statements ([(text, params)]) without a result
    set, sent in the same round trip before the first read (the batch's BEGIN TRAN), even when there is no key."""
    out = {}
    cols = cols or rp.cols
    per = REVERSE_BATCH if len(rp.keys) == 1 else 500
    statements = list(first or [])
    for k in range(0, len(keydicts), per):
        part = keydicts[k:k + per]
        statements.append((_tsql("SELECT %s FROM %s%s WHERE %s", ", ".join(_q(c) for c in cols), _qt(
            spec.source_schema, spec.source_table), " WITH (UPDLOCK, HOLDLOCK)" if lock else "",
            _where_keys(rp, len(part))), _key_params(rp, part)))
    if not statements:
        return out
    return _by_key(w.execute_batch(statements, action="read current rows"), cols, rp.keys, out)


def _by_key(result_sets, cols, keys, out):
    """The rows of every result set (columns ``cols``) into ``out`` as {key: {col: value}}; returns ``out``."""
    for rows in result_sets:
        for r in rows:
            d = dict(zip(cols, r))
            out[_key_of(d, keys)] = d
    return out


def _output(rp):
    """The OUTPUT clause giving each written row's key and new rowversion back from the write itself."""
    return "OUTPUT " + ", ".join("inserted.%s" % _q(c) for c in rp.keys + [rp.rv])


def _has_triggers(w, spec):
    """Whether the SQL Server table has an enabled DML trigger: SQL Server refuses OUTPUT without INTO on such a
    table (error 334), so its new rowversions are read back by a SELECT instead."""
    rows = w.execute("SELECT is_disabled FROM sys.triggers WHERE parent_id = OBJECT_ID(\x00)", (
        _qt(spec.source_schema, spec.source_table),), fetch=True, action="look for triggers")
    return any(not r[0] for r in rows)


def _cast_type(c, key):
    """The T-SQL type the first row of a VALUES list casts a column's value to: SQL Server then types the whole
    derived column by it (data type precedence: the other rows' literals convert to it), as a column of that
    table. Strings and binary outside the key are cast to their (max) type, so a value too long for the column
    still fails on assignment (2628) instead of being cut by the CAST; keys keep their exact type (an index seek
    on a real server). ``c`` is the forward plan's ColumnMap (``src_type``: SQL Server's type name, ``pg_type``:
    its PostgreSQL spelling, which carries length and precision)."""
    t = c.src_type
    pg = c.pg_type
    if t in ("char", "varchar", "nchar", "nvarchar", "text", "ntext", "sysname", "xml"):
        wide = "nvarchar" if t in ("nchar", "nvarchar", "ntext", "sysname", "xml") else "varchar"
        if key and t in ("char", "varchar", "nchar", "nvarchar") and pg.startswith("character varying("):
            return "%s(%s)" % (t, pg[len("character varying("):-1])
        return wide + "(max)"
    if t in ("binary", "varbinary", "image"):
        return "varbinary(max)"
    if t in ("decimal", "numeric"):
        return "decimal" + pg[len("numeric"):]  # numeric(p,s)
    if t == "float":
        return "real" if pg == "real" else "float"
    if t in ("time", "datetime2"):
        return t + "(7)"
    return t  # bit, tinyint .. bigint, money, smallmoney, real, date, datetime, smalldatetime, uniqueidentifier


def _values(types, n):
    """n rows of SLOTs for a table value constructor, the first row's cast to ``types``: SQL Server types each
    derived column by its first row (data type precedence: the other rows' literals convert to it)."""
    first = "(" + ", ".join("CAST(%s AS %s)" % (SLOT, t) for t in types) + ")"
    rest = "(" + ", ".join([SLOT] * len(types)) + ")"
    return ", ".join([first] + [rest] * (n - 1))


def _update_from_values(rp, tbl, n, output=""):
    """One UPDATE of n rows: ``UPDATE t SET c = v.c, ... FROM tbl AS t INNER JOIN (VALUES (CAST(? AS type), ...),
    (?, ...), ...) AS v (keys, cols) ON t.k = v.k`` (SQL Server's UPDATE ... FROM with a table value constructor:
    one statement, one plan, instead of n)."""
    cols = rp.keys + rp.nonkey
    return _tsql("UPDATE t SET %s %sFROM %s AS t INNER JOIN (VALUES %s) AS v (%s) ON %s",
                 ", ".join("%s = v.%s" % (_q(c), _q(c)) for c in rp.nonkey), output + " " if output else "", tbl,
                 _values([rp.cast_types[c] for c in cols], n), ", ".join(_q(c) for c in cols),
                 " AND ".join("t.%s = v.%s" % (_q(k), _q(k)) for k in rp.keys))


def _update_guarded(rp, tbl, n, output):
    """One UPDATE of n rows written only where the row's rowversion is still the one PostgreSQL last knew:
    ``UPDATE t SET c = v.cK, ... OUTPUT inserted.k, inserted.rv FROM tbl AS t INNER JOIN (VALUES (k, rv, c ...),
    ...) AS v (c0, c1, ...) ON t.k = v.c0 AND t.rv = v.cR``; each row's values are its keys, that rowversion
    (binary(8)), its other columns. The derived table's columns are numbered, so no name of the table can clash
    with them."""
    cols = rp.keys + [rp.rv] + rp.nonkey
    types = [rp.cast_types[c] for c in rp.keys] + ["binary(8)"] + [rp.cast_types[c] for c in rp.nonkey]
    v = dict((c, "v.c%d" % i) for i, c in enumerate(cols) if c != rp.rv)
    nk = len(rp.keys)
    return _tsql("UPDATE t SET %s %s FROM %s AS t INNER JOIN (VALUES %s) AS v (%s) ON %s AND t.%s = v.c%d",
                 ", ".join("%s = %s" % (_q(c), v[c]) for c in rp.nonkey), output, tbl,
                 _values(types, n), ", ".join("c%d" % i for i in range(len(cols))),
                 " AND ".join("t.%s = %s" % (_q(k), v[k]) for k in rp.keys), _q(rp.rv), nk)


def _insert_absent(rp, tbl, n, output):
    """One INSERT of n rows written only where the key is absent: ``INSERT INTO tbl (cols) OUTPUT inserted.k,
    inserted.rv SELECT v.c0, ... FROM (VALUES ...) AS v (c0, ...) WHERE NOT EXISTS (SELECT 1 FROM tbl AS x WITH
    (UPDLOCK, HOLDLOCK) WHERE x.k = v.c0)`` (HOLDLOCK: the absent key's range stays locked to the commit)."""
    cols = rp.write_cols
    names = ", ".join("c%d" % i for i in range(len(cols)))
    return _tsql("INSERT INTO %s (%s) %s SELECT %s FROM (VALUES %s) AS v (%s) WHERE NOT EXISTS (SELECT 1 FROM %s"
                 " AS x WITH (UPDLOCK, HOLDLOCK) WHERE %s)", tbl, ", ".join(_q(c) for c in cols), output,
                 ", ".join("v.c%d" % i for i in range(len(cols))), _values([rp.cast_types[c] for c in cols], n), names,
                 tbl, " AND ".join("x.%s = v.c%d" % (_q(k), cols.index(k)) for k in rp.keys))


def _base_rv(rp, pg, tomb_rv):
    """The SQL Server rowversion PostgreSQL last knew of a key: its row's, or its tombstone's."""
    return pg.get(rp.rv) if pg is not None else tomb_rv


def _decide(spec, rp, op, pg, ms, tomb_rv, at, first_old=None):
    """(conflict?, winner) for one key: pg = PostgreSQL's current row or None, ms = SQL Server's or None.

    Changed on SQL Server = its rowversion is not the one PostgreSQL last knew AND its values are not the ones
    PostgreSQL started from (``first_old``): a rowversion that moved without a change of content (the sync's
    own write whose write-back a crash lost, a no-op update) is no conflict."""
    base = _base_rv(rp, pg, tomb_rv)
    ms_rv = ms.get(rp.rv) if ms is not None else None
    if _norm(base) == _norm(ms_rv):
        return False, "postgresql"
    if op == "D" and ms is None:
        return False, "postgresql"  # deleted on both sides: nothing to decide
    if ms is not None and first_old is not None:
        started = json.loads(first_old)  # the old row's JSON text (sync_capture.pending)
        if all(_jsonable(ms.get(c)) == started.get(c) for c in rp.write_cols):
            return False, "postgresql"
    policy = spec.conflict_policy
    if policy == "source_wins":
        return True, "sqlserver"
    if policy == "target_wins":
        return True, "postgresql"
    ts = spec.conflict_timestamp_column
    t_pg = _utc_naive(pg.get(ts)) if pg is not None else _utc_naive(at)
    t_ms = _utc_naive(ms.get(ts)) if ms is not None else None
    if t_ms is None:
        return True, ("postgresql" if t_pg is not None else "sqlserver")
    if t_pg is None:
        return True, "sqlserver"
    try:
        return True, ("postgresql" if t_pg > t_ms else "sqlserver")  # a tie goes to SQL Server (the source)
    except TypeError:
        raise SyncError("table %s: conflict_timestamp_column %r values cannot be compared (%r, %r)" % (
            spec.source_name, ts, t_pg, t_ms))


class _Background(threading.Thread):
    """``fn(*args)`` in a thread of its own; result() waits for it and returns its value or raises its error."""

    def __init__(self, fn, *args):
        super(_Background, self).__init__(name="berqenas-sync-reverse", daemon=True)
        self._call = (fn, args)
        self._value = self._error = None
        self.start()

    def run(self):
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to result()
            self._error = e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def reverse_table(engine, plan, check_mode=False):
    """Apply a table's pending PostgreSQL changes to SQL Server; returns the direction's report."""
    spec = plan.spec
    conn = engine.conn
    rp = ReversePlan(plan)
    rep = {"direction": "postgresql->sqlserver", "applied": 0, "inserted": 0, "updated": 0, "deleted": 0,
           "conflicts": {"sqlserver": 0, "postgresql": 0}, "conflict_rows": [], "position_from": None,
           "position_to": None, "resumed": False, "pending": None}
    with conn.cursor() as cur:
        if check_mode:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", ("%s.%s" % (STATE_SCHEMA, cap.REVERSE_STATE_TABLE),))
            pos = _load_position(cur, engine.job, spec) if cur.fetchone()[0] else None
            pos = pos or (0, 0)
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", ("%s.%s" % (STATE_SCHEMA, cap.CHANGE_TABLE),))
            rep["pending"] = cap.count_pending(cur, spec.target_schema, spec.target_table, pos) \
                if cur.fetchone()[0] else 0
            rep["position_from"] = rep["position_to"] = "%d:%d" % pos
            conn.rollback()
            return rep
        cap.install_capture(conn, spec.target_schema, spec.target_table, rp.keys, rp.rv)
        w = getattr(engine, "_reverse_writer", None)
        if w is None:
            w = engine._reverse_writer = writer_for(engine.source)
        _ensure_applied_table(w)
        rp.triggers = _has_triggers(w, spec)
        pos = _load_position(cur, engine.job, spec) or (0, 0)
        ms_pos = _applied_position(w, engine.job, spec)
        rep["position_from"] = "%d:%d" % pos
        if ms_pos is not None and ms_pos > pos:
            # SQL Server committed a batch whose PostgreSQL half was lost: those entries are applied
            _resume_writeback(w, cur, spec, rp, pos, ms_pos)
            cap.purge(cur, spec.target_schema, spec.target_table, ms_pos)
            _save_position(cur, engine.job, spec, ms_pos, 0, 0)
            pos = ms_pos
            rep["resumed"] = True
        elif ms_pos is None:
            w.execute(_tsql("INSERT INTO %s (job, tbl, last_xid, last_id) VALUES (\x00, \x00, \x00, \x00)", _qt(
                APPLIED_SCHEMA, APPLIED_TABLE)), (engine.job, spec.source_name, pos[0], pos[1]),
                action="record the applied position")
        conn.commit()
        bound = cap.window_bound(cur)
        conn.commit()
        batch = int(getattr(engine, "reverse_batch", REVERSE_TXN_KEYS))

        def read(after):
            entries = cap.pending(cur, spec.target_schema, spec.target_table, after, bound, batch, rp.cols, rp.keys)
            conn.rollback()
            return entries

        # Batch N's SQL Server half runs in a thread of its own while this one runs the PostgreSQL half of
        # batch N-1 and reads batch N+1 (they touch different rows: a batch sharing a key with the one before
        # waits for that one's PostgreSQL half and is read again). Each side still commits in batch order, and
        # SQL Server's applied position may be one batch ahead of PostgreSQL's: the case a crash resumes from.
        entries, due = read(pos), None  # due: SQL Server's result of a batch whose PostgreSQL half is due
        while entries:
            last = entries[-1][:2]
            actions, pg_rows = _actions(entries, rp)
            if due is not None and any(k in due["keys"] for k in actions):
                _postgresql_half(engine, cur, spec, rp, due, rep)
                entries, due = read(pos), None
                continue
            sqlserver = _Background(_sqlserver_half, engine, w, spec, rp, actions, pg_rows, last)
            try:
                if due is not None:
                    _postgresql_half(engine, cur, spec, rp, due, rep)
                    due = None
                entries = read(last)
            finally:
                due = sqlserver.result()
            pos = last
        if due is not None:
            _postgresql_half(engine, cur, spec, rp, due, rep)
        rep["position_to"] = "%d:%d" % pos
    return rep


def _actions(entries, rp):
    """A batch's entries as ({key: (op, key dict, old_rv, at, first old row)}, {key: current PostgreSQL row})."""
    actions, pg_rows = {}, {}
    for k, a in cap.coalesce(entries, rp.keys).items():
        k = tuple([_norm(v) for v in k])
        actions[k] = a[:5]
        if a[5] is not None:
            pg_rows[k] = a[5]
    return actions, pg_rows


def _sqlserver_half(engine, w, spec, rp, actions, pg_rows, last):
    """A batch's SQL Server transaction (it touches no PostgreSQL connection: it runs beside the PostgreSQL half
    of the batch before, see reverse_table); returns what the PostgreSQL half needs."""
    tbl = _qt(spec.source_schema, spec.source_table)
    pre, pre_v = "", ()  # change tracking: the sync's own DML is tagged, its deletes are not read back as changes
    if spec.delete_detection == "change_tracking":
        pre, pre_v = tsql.CT_CONTEXT + " ", (bytearray(ct_context(engine.job)),)
    deletes, updates, inserts, ms_wins, conflicts = [], [], [], [], []
    f_updates, f_inserts = [], []  # written by the guarded first statements (no conflict: nothing to decide)
    new_rv = {}
    # the applied position is the transaction's first write: its row lock, held to the COMMIT, makes the next
    # run's read of it (_applied_position) wait for this transaction, even after this process is gone
    begin = [("SET XACT_ABORT ON; BEGIN TRAN", ()), (_tsql(
        "UPDATE %s SET last_xid = \x00, last_id = \x00 WHERE job = \x00 AND tbl = \x00", _qt(
            APPLIED_SCHEMA, APPLIED_TABLE)), (last[0], last[1], engine.job, spec.source_name))]
    rest = actions  # the keys decided one by one (_decide) after reading their SQL Server rows
    try:
        if not rp.triggers and rp.nonkey:
            # first round trip: BEGIN TRAN and each written row's statement guarded by the conflict check itself
            # (an UPDATE only where SQL Server's rowversion is still the one PostgreSQL last knew, an INSERT only
            # where the key is absent); OUTPUT names the rows written and their new rowversions. The rest (a
            # rowversion that moved, a key deleted or added on SQL Server, the tombstones) is decided below.
            for k, (op, _key, _old_rv, _at, _first_old) in actions.items():
                pg = pg_rows.get(k)
                if op != "D" and pg is not None:
                    (f_updates if pg.get(rp.rv) is not None else f_inserts).append(pg)
            statements = list(begin)
            output = _output(rp)
            for k in range(0, len(f_updates), REVERSE_BATCH):
                part = f_updates[k:k + REVERSE_BATCH]
                statements.append((pre + _update_guarded(rp, tbl, len(part), output), pre_v + tuple(
                    v for row in part for v in ([_ms_value(row[c]) for c in rp.keys] + [bytearray(row[rp.rv])]
                                                + [_ms_value(row[c]) for c in rp.nonkey]))))
            for k in range(0, len(f_inserts), REVERSE_BATCH):
                part = f_inserts[k:k + REVERSE_BATCH]
                statements.append((pre + _insert_absent(rp, tbl, len(part), output), pre_v + tuple(
                    _ms_value(row[c]) for row in part for c in rp.write_cols)))
            _by_key(w.execute_batch(statements, action="write the batch"), rp.keys + [rp.rv], rp.keys, new_rv)
            f_updates = [r for r in f_updates if _key_of(r, rp.keys) in new_rv]
            f_inserts = [r for r in f_inserts if _key_of(r, rp.keys) in new_rv]
            rest = dict((k, a) for k, a in actions.items() if k not in new_rv)
            begin = None
        # the other keys' rowversions (locked; with BEGIN TRAN in the same round trip when it is the first);
        # whole rows only of the keys whose rowversion moved (conflict candidates)
        ms = _ms_rows(w, spec, rp, [a[1] for a in rest.values()], lock=True, cols=rp.keys + [rp.rv], first=begin)
        moved = [a[1] for k, a in rest.items()
                 if k in ms and _norm(_base_rv(rp, pg_rows.get(k), a[2])) != _norm(ms[k][rp.rv])]
        if moved:
            ms.update(_ms_rows(w, spec, rp, moved, lock=True))
        for k, (op, key, old_rv, at, first_old) in rest.items():
            pg = pg_rows.get(k)
            if op != "D" and pg is None:
                continue  # deleted again by a transaction after the window: its tombstone comes next run
            conflict, winner = _decide(spec, rp, op, pg, ms.get(k), old_rv, at, first_old)
            if conflict:
                conflicts.append((k, key, winner, pg, ms.get(k)))
            if winner == "sqlserver":
                ms_wins.append((k, key, ms.get(k)))
                continue
            if op == "D" or pg is None:
                if k in ms:
                    deletes.append(key)
            elif k in ms:
                updates.append(pg)
            else:
                inserts.append(pg)
        # the writes, the applied position and the COMMIT: one round trip (XACT_ABORT: any error rolls the whole
        # transaction back, and COMMIT is never reached); each write's OUTPUT gives its rows' new rowversions
        output = "" if rp.triggers else _output(rp)
        statements = []
        for k in range(0, len(deletes), 500):  # one statement per 500 keys
            part = deletes[k:k + 500]
            statements.append((pre + _tsql("DELETE FROM %s WHERE %s", tbl, _where_keys(rp, len(part))),
                               pre_v + _key_params(rp, part)))
        if updates and rp.nonkey:  # one UPDATE ... FROM (VALUES ...) per REVERSE_BATCH rows
            for k in range(0, len(updates), REVERSE_BATCH):
                part = updates[k:k + REVERSE_BATCH]
                statements.append((pre + _update_from_values(rp, tbl, len(part), output), pre_v + tuple(
                    _ms_value(row[c]) for row in part for c in rp.keys + rp.nonkey)))
        for k in range(0, len(inserts), REVERSE_BATCH):
            part = inserts[k:k + REVERSE_BATCH]
            one = "(" + ", ".join([SLOT] * len(rp.write_cols)) + ")"
            statements.append((pre + _tsql("INSERT INTO %s (%s) %sVALUES %s", tbl, ", ".join(
                _q(c) for c in rp.write_cols), output + " " if output else "", ", ".join([one] * len(part))),
                pre_v + tuple(_ms_value(r[c]) for r in part for c in rp.write_cols)))
        written = updates + inserts
        if rp.triggers or not rp.nonkey:  # no OUTPUT (or no UPDATE to carry it): read them back
            if statements:
                w.execute_batch(statements, action="write the batch")
            new_rv = _ms_rows(w, spec, rp, written, lock=False, cols=rp.keys + [rp.rv]) if written else {}
            w.execute_batch([("COMMIT TRAN", ())], action="commit the batch")
        else:
            _by_key(w.execute_batch(statements + [("COMMIT TRAN", ())], action="write the batch"),
                    rp.keys + [rp.rv], rp.keys, new_rv)
    except Exception:
        w.rollback()
        raise
    fault = getattr(engine, "reverse_fault", None)
    if fault is not None:
        fault("after_sqlserver_commit")
    return {"keys": actions, "last": last, "deletes": deletes, "updates": f_updates + updates,
            "inserts": f_inserts + inserts, "ms_wins": ms_wins, "conflicts": conflicts, "new_rv": new_rv}


def _postgresql_half(engine, cur, spec, rp, done, rep):
    """A batch's PostgreSQL transaction, once SQL Server committed it (``done``: what _sqlserver_half returned)."""
    conn = engine.conn
    last = done["last"]
    deletes, updates, inserts = done["deletes"], done["updates"], done["inserts"]
    ms_wins, conflicts, new_rv = done["ms_wins"], done["conflicts"], done["new_rv"]
    tgt = _pid(spec.target_schema, spec.target_table)
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = (jsonb_populate_record(NULL::{tgt}, %s::jsonb)).{c}").format(
        c=_pid(k), tgt=tgt) for k in rp.keys)
    nmatch = len(rp.keys)
    written = updates + inserts
    back = []
    for row in written:
        k = _key_of(row, rp.keys)
        if k in new_rv:
            back.append((row, bytes(new_rv[k][rp.rv])))
    _write_rowversions(cur, spec, rp, back)
    # rows SQL Server won: its values into PostgreSQL (through the forward type mapping)
    plan = rp.plan
    transform = make_transform(plan.colmaps, engine.nul_character, {})
    gone = [(json.dumps(key),) * nmatch for _k, key, m in ms_wins if m is None]
    if gone:
        cur.executemany(sql.SQL("DELETE FROM {} t WHERE {}").format(tgt, match), gone)
    keep = [m for _k, _key, m in ms_wins if m is not None]
    if keep:
        names = [c.name for c in plan.colmaps]
        rows = [tuple(m[n] for n in names) for m in keep]
        if transform is not None:
            rows = [transform(r) for r in rows]
        cols = sql.SQL(", ").join(_pid(n) for n in rp.cols)
        sets = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=_pid(n))
                                  for n in rp.cols if n not in rp.keys)
        cur.executemany(sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
            tgt, cols, sql.SQL(", ").join(sql.Placeholder() * len(rp.cols)),
            sql.SQL(", ").join(_pid(k) for k in rp.keys), sets), rows)
    for _k, key, winner, pg, m in conflicts:
        loser, win = (pg, m) if winner == "sqlserver" else (m, pg)
        cur.execute(sql.SQL("INSERT INTO {} (job, table_schema, table_name, key, winner, policy, loser_values,"
                            " winner_values) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)").format(
            sql.Identifier(STATE_SCHEMA, cap.CONFLICT_TABLE)),
            (engine.job, spec.target_schema, spec.target_table, json.dumps(key), winner, spec.conflict_policy,
             _dump(loser), _dump(win)))
    cap.purge(cur, spec.target_schema, spec.target_table, last)
    applied = len(deletes) + len(updates) + len(inserts)
    _save_position(cur, engine.job, spec, last, applied, len(conflicts))
    conn.commit()
    rep["applied"] += applied
    rep["inserted"] += len(inserts)
    rep["updated"] += len(updates)
    rep["deleted"] += len(deletes)
    for _k, key, winner, _pg, _m in conflicts:
        rep["conflicts"][winner] += 1
        if len(rep["conflict_rows"]) < CONFLICT_REPORT_LIMIT:
            rep["conflict_rows"].append({"table": spec.target_name, "key": key, "winner": winner})
