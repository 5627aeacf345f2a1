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
* one run per job: a session advisory lock on the target, waited for up to ``lock_timeout``.

The engine talks to SQL Server through a *source adapter* (``mssql.PymssqlSource``; tests use a
fake with the same methods) and to PostgreSQL through a psycopg 3 connection (imported through
``pgconn``, the collection's one psycopg guard).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
import uuid

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as tsql
from ansible_collections.berqenas.platform.plugins.module_utils import validation

from ansible_collections.berqenas.platform.plugins.module_utils.mssql import SourceError
from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import psycopg, sql

PG_IDENT_MAX_BYTES = 63
STATE_SCHEMA = "berqenas"
STATE_TABLE = "sync_state"
OFFSET_SUFFIX = "_offset_min"
LOCK_CLASS = 0x6271  # 'bq': first key of the two-key advisory lock, the second is the job's lock_id
JOB_TABLE = "sync_job"  # job -> lock_id (unique, from an identity): no two jobs share a lock key


class SyncError(Exception):
    """A sync step failed; the message says which and why."""


class LockedError(SyncError):
    """Another run of the same job held the lock past ``lock_timeout``."""


class RewindError(SyncError):
    """The source went back in time (restore, failover): refuse unless on_rewind=full_resync."""


# ---- identifiers -------------------------------------------------------------------------------

def check_pg_ident(name, what):
    """A PostgreSQL identifier kept verbatim (quoted): at most 63 bytes, no NUL; else SyncError."""
    if not isinstance(name, str) or name == "":
        raise SyncError("%s: empty name" % what)
    if "\x00" in name:
        raise SyncError("%s %r: contains NUL" % (what, name))
    if len(name.encode("utf-8")) > PG_IDENT_MAX_BYTES:
        raise SyncError("%s %r: %d bytes in UTF-8, PostgreSQL allows %d (names are never truncated; "
                        "map it to a shorter name or exclude it)" % (what, name, len(name.encode("utf-8")),
                                                                     PG_IDENT_MAX_BYTES))
    return name


# ---- types -------------------------------------------------------------------------------------

class ColumnMap(object):
    """One source column and what it becomes in PostgreSQL.

    ``pg_type`` is spelled as ``format_type()`` prints it (so catalog comparisons are exact);
    ``copy_type`` is the psycopg binary COPY type name; ``kind`` selects the value conversion:
    None (as is), ``str`` (NUL rule), ``dto`` (datetimeoffset -> timestamptz + offset minutes).
    """

    __slots__ = ("name", "src_type", "pg_type", "copy_type", "kind", "nullable", "note", "offset_name")

    def __init__(self, name, src_type, pg_type, copy_type, kind=None, nullable=True, note=None):
        self.name = name
        self.src_type = src_type
        self.pg_type = pg_type
        self.copy_type = copy_type
        self.kind = kind
        self.nullable = nullable
        self.note = note
        self.offset_name = name + OFFSET_SUFFIX if kind == "dto" else None

    def target_columns(self):
        """[(name, pg_type, copy_type)] this column occupies in the target."""
        out = [(self.name, self.pg_type, self.copy_type)]
        if self.offset_name:
            out.append((self.offset_name, "smallint", "int2"))
        return out


def _int(v, what):
    try:
        return int(v)
    except (TypeError, ValueError):
        raise SyncError("catalog: %s %r is not an integer" % (what, v))


def map_column(col):
    """Map one INFORMATION_SCHEMA.COLUMNS row (a dict) to a ColumnMap, or raise SyncError.

    Rules: decimal/numeric(p,s) exact; money numeric(19,4); smallmoney numeric(10,4); datetime
    timestamp(3); smalldatetime timestamp(0); datetime2(n)/time(n) keep min(n,6) digits (n=7 loses
    the 100-ns digit, noted); datetimeoffset(n) -> timestamptz(min(n,6)) + smallint
    ``<name>_offset_min``; (n)(var)char(n) -> character varying(n) (values kept verbatim, padding
    included), (max)/text/ntext/xml -> text; binary types -> bytea; uniqueidentifier -> uuid;
    rowversion/timestamp -> bytea (8 bytes, big-endian: bytea order equals SQL Server's order).
    """
    name = col["COLUMN_NAME"]
    t = str(col["DATA_TYPE"]).lower()
    nullable = str(col.get("IS_NULLABLE", "YES")).upper() == "YES"
    cml = col.get("CHARACTER_MAXIMUM_LENGTH")
    prec = col.get("NUMERIC_PRECISION")
    scale = col.get("NUMERIC_SCALE")
    dtp = col.get("DATETIME_PRECISION")

    def cm(pg, copy, kind=None, note=None):
        return ColumnMap(name, t, pg, copy, kind, nullable, note)

    simple = {
        "bit": ("boolean", "bool"),
        "tinyint": ("smallint", "int2"),
        "smallint": ("smallint", "int2"),
        "int": ("integer", "int4"),
        "bigint": ("bigint", "int8"),
        "money": ("numeric(19,4)", "numeric"),
        "smallmoney": ("numeric(10,4)", "numeric"),
        "real": ("real", "float4"),
        "date": ("date", "date"),
        "datetime": ("timestamp(3) without time zone", "timestamp"),
        "smalldatetime": ("timestamp(0) without time zone", "timestamp"),
        "uniqueidentifier": ("uuid", "uuid"),
        "binary": ("bytea", "bytea"),
        "varbinary": ("bytea", "bytea"),
        "image": ("bytea", "bytea"),
        "timestamp": ("bytea", "bytea"),
        "rowversion": ("bytea", "bytea"),
    }
    if t in simple:
        return cm(*simple[t])
    if t in ("decimal", "numeric"):
        p, s = _int(prec, "precision"), _int(scale or 0, "scale")
        if not 1 <= p <= 38 or not 0 <= s <= p:
            raise SyncError("column %r: decimal(%s,%s) out of range" % (name, p, s))
        return cm("numeric(%d,%d)" % (p, s), "numeric")
    if t == "float":
        p = _int(prec if prec is not None else 53, "precision")
        return cm("real", "float4") if p <= 24 else cm("double precision", "float8")
    if t in ("datetime2", "time", "datetimeoffset"):
        n = _int(dtp if dtp is not None else 7, "datetime precision")
        if not 0 <= n <= 7:
            raise SyncError("column %r: %s(%d) out of range" % (name, t, n))
        keep = min(n, 6)
        note = None
        if n == 7:
            note = "%s(7): the 100-ns digit is dropped (PostgreSQL keeps microseconds)" % t
        if t == "datetime2":
            return cm("timestamp(%d) without time zone" % keep, "timestamp", note=note)
        if t == "time":
            return cm("time(%d) without time zone" % keep, "time", note=note)
        note = ((note + "; ") if note else "") + "offset kept in %s" % (name + OFFSET_SUFFIX)
        return cm("timestamp(%d) with time zone" % keep, "timestamptz", kind="dto", note=note)
    if t in ("char", "varchar", "nchar", "nvarchar"):
        n = _int(cml if cml is not None else -1, "character length")
        if n == -1:
            return cm("text", "text", kind="str")
        if n < 1:
            raise SyncError("column %r: %s(%d) out of range" % (name, t, n))
        return cm("character varying(%d)" % n, "text", kind="str")
    if t in ("text", "ntext", "xml", "sysname"):
        return cm("text", "text", kind="str")
    raise SyncError("column %r: SQL Server type %s is not supported; exclude the column" % (name, t))


def is_rowversion_type(data_type):
    return str(data_type).lower() in ("timestamp", "rowversion")


# ---- table specifications ------------------------------------------------------------------------

MODES = ("delta", "full")
DELETE_DETECTION = ("none", "soft_delete", "pk_diff")
NUL_RULES = ("strip", "replace", "fail")


class TableSpec(object):
    """One table to sync, validated before anything is touched."""

    def __init__(self, source, target_schema, target_table=None, key_columns=None, rowversion_column=None,
                 include=None, exclude=None, mode="delta", delete_detection="none", soft_delete_column=None,
                 soft_delete_value=None):
        try:
            self.source_schema, self.source_table = tsql.parse_two_part_name(source)
        except tsql.TsqlError as e:
            raise SyncError("table %r: %s" % (source, e))
        self.target_schema = check_pg_ident(target_schema, "target schema")
        self.target_table = check_pg_ident(target_table or self.source_table, "target table")
        self.key_columns = list(key_columns) if key_columns else None
        self.rowversion_column = rowversion_column or None
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else []
        if mode not in MODES:
            raise SyncError("table %s: mode must be one of %s" % (source, ", ".join(MODES)))
        self.mode = mode
        if delete_detection not in DELETE_DETECTION:
            raise SyncError("table %s: delete_detection must be one of %s" % (source, ", ".join(DELETE_DETECTION)))
        if delete_detection == "soft_delete" and not soft_delete_column:
            raise SyncError("table %s: delete_detection soft_delete needs soft_delete_column" % source)
        self.delete_detection = delete_detection
        self.soft_delete_column = soft_delete_column
        self.soft_delete_value = True if soft_delete_value is None else soft_delete_value
        for c in (self.key_columns or []) + self.exclude + (self.include or []):
            try:
                tsql.quote_ident(c)
            except tsql.TsqlError as e:
                raise SyncError("table %s: %s" % (source, e))

    @property
    def source_name(self):
        return tsql.quote_table(self.source_schema, self.source_table)

    @property
    def target_name(self):
        return "%s.%s" % (self.target_schema, self.target_table)


TABLE_KEYS = frozenset(["target_schema", "target_table", "key_columns", "rowversion_column", "include", "exclude",
                        "mode", "delete_detection", "soft_delete_column", "soft_delete_value"])


def table_specs(tables, default_schema):
    """Validate a list of dicts (module option ``tables``) into TableSpecs; collisions are errors."""
    specs = []
    seen_src, seen_tgt = {}, {}
    for t in tables or []:
        if isinstance(t, str):
            t = {"source": t}
        t = dict(t)
        src = t.pop("source", None)
        if not src or not isinstance(src, str):
            raise SyncError("tables: every entry needs source ([schema].[table])")
        unknown = sorted(set(t) - TABLE_KEYS)
        if unknown:
            raise SyncError("table %s: unknown option(s) %s (known: %s)" % (
                src, ", ".join(map(str, unknown)), ", ".join(sorted(TABLE_KEYS))))
        spec = TableSpec(src, t.pop("target_schema", None) or default_schema, **{
            k: v for k, v in t.items() if v is not None})
        ks = (spec.source_schema, spec.source_table)
        kt = (spec.target_schema, spec.target_table)
        if ks in seen_src:
            raise SyncError("tables: %s listed twice" % spec.source_name)
        if kt in seen_tgt:
            raise SyncError("tables: %s and %s both map to target %s" % (
                seen_tgt[kt], spec.source_name, spec.target_name))
        seen_src[ks] = True
        seen_tgt[kt] = spec.source_name
        specs.append(spec)
    if not specs:
        raise SyncError("tables: nothing to sync")
    return specs


def remotedb_name(name):
    """A remote database (sync job) name, by the collection's one name rule (module_utils.validation)."""
    return validation.checked(SyncError, validation.remotedb_name, name)


def host_name(value):
    """A SQL Server host: an IP address or a DNS name (module_utils.validation.host)."""
    return validation.checked(SyncError, validation.host, value)


# ---- PostgreSQL helpers ------------------------------------------------------------------------

# Target tables are created with free space on every page so that the sync's updates, which never change
# an indexed column (the key is not updated and the rowversion column is not indexed), stay HOT: the new
# row version goes on the same page and no index entry is written (bench/bench_sync.py measures it).
# 75 keeps a delta's scattered updates HOT; 50 keeps even an update of every row HOT (twice the size).
TARGET_FILLFACTOR = 75


def _ident(*parts):
    return sql.Identifier(*parts)


def _type(pg_type):
    # pg_type strings come only from map_column (a fixed vocabulary with integers from the catalog)
    return sql.SQL(pg_type)


STATE_DDL = """
CREATE TABLE IF NOT EXISTS {state} (
    job text NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    hwm bytea,
    database_guid uuid,
    recovery_fork_guid uuid,
    initial_done boolean NOT NULL DEFAULT false,
    rows_total bigint NOT NULL DEFAULT 0,
    last_run_at timestamptz,
    last_ok_at timestamptz,
    last_result text,
    last_error text,
    target_oid oid,
    PRIMARY KEY (job, source_schema, source_table)
)
"""

JOB_DDL = """
CREATE TABLE IF NOT EXISTS {jobs} (
    job text PRIMARY KEY,
    lock_id integer GENERATED ALWAYS AS IDENTITY (START WITH 1) UNIQUE
)
"""

# columns added after the first release: (name, type), added to an existing state table on first use
STATE_ADDED_COLUMNS = (("target_oid", "oid"),)

STATE_COLUMNS = ("job", "source_schema", "source_table", "target_schema", "target_table", "hwm", "database_guid",
                 "recovery_fork_guid", "initial_done", "rows_total", "last_run_at", "last_ok_at", "last_result",
                 "last_error")


def ensure_state_table(conn):
    """Create schema ``berqenas`` (no rights for PUBLIC) and the state table; commits."""
    state = _ident(STATE_SCHEMA, STATE_TABLE)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", ("%s.%s" % (STATE_SCHEMA, STATE_TABLE),))
        if cur.fetchone()[0] is None:
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(STATE_SCHEMA)))
            cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(_ident(STATE_SCHEMA)))
            cur.execute(sql.SQL(STATE_DDL).format(state=state))
            cur.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(state))
        cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                    " AND NOT attisdropped", ("%s.%s" % (STATE_SCHEMA, STATE_TABLE),))
        have = set(r[0] for r in cur.fetchall())
        cur.execute("SELECT to_regclass(%s)", ("%s.%s" % (STATE_SCHEMA, JOB_TABLE),))
        if cur.fetchone()[0] is None:
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            jobs = _ident(STATE_SCHEMA, JOB_TABLE)
            cur.execute(sql.SQL(JOB_DDL).format(jobs=jobs))
            cur.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(jobs))
        missing = [(n, t) for n, t in STATE_ADDED_COLUMNS if n not in have]
        if missing:
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
            for n, t in missing:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    state, _ident(n), sql.SQL(t)))
    conn.commit()


def job_lock_id(conn, job, create=True):
    """The job's lock key (second key of its advisory lock, the first is LOCK_CLASS): a number handed out
    once per job name by ``berqenas.sync_job``, so unrelated jobs never share a key (a hash of the name
    could). ``create=False`` returns None for a job that never ran. Commits when it creates one."""
    jobs = _ident(STATE_SCHEMA, JOB_TABLE)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", ("%s.%s" % (STATE_SCHEMA, JOB_TABLE),))
        if cur.fetchone()[0] is None:
            if not create:
                return None
            conn.commit()
            ensure_state_table(conn)
        cur.execute(sql.SQL("SELECT lock_id FROM {} WHERE job = %s").format(jobs), (job,))
        r = cur.fetchone()
        if r is None and create:
            cur.execute(sql.SQL("INSERT INTO {} (job) VALUES (%s) ON CONFLICT (job) DO NOTHING").format(jobs), (job,))
            cur.execute(sql.SQL("SELECT lock_id FROM {} WHERE job = %s").format(jobs), (job,))
            r = cur.fetchone()
            conn.commit()
        return r[0] if r else None


def read_states(conn, job=None):
    """State rows as dicts (hwm as hex), for status reports."""
    state = _ident(STATE_SCHEMA, STATE_TABLE)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", ("%s.%s" % (STATE_SCHEMA, STATE_TABLE),))
        if cur.fetchone()[0] is None:
            return []
        q = sql.SQL("SELECT {}, extract(epoch FROM now() - last_ok_at) FROM {}").format(
            sql.SQL(", ").join(_ident(c) for c in STATE_COLUMNS), state)
        if job is not None:
            q = q + sql.SQL(" WHERE job = %s")
        cur.execute(q + sql.SQL(" ORDER BY job, source_schema, source_table"), (job,) if job is not None else None)
        out = []
        for r in cur.fetchall():
            d = dict(zip(STATE_COLUMNS, r))
            d["hwm"] = tsql.rv_hex(d["hwm"]) if d["hwm"] is not None else None
            for k in ("database_guid", "recovery_fork_guid"):
                d[k] = str(d[k]) if d[k] is not None else None
            for k in ("last_run_at", "last_ok_at"):
                d[k] = d[k].isoformat() if d[k] is not None else None
            d["lag_s"] = round(float(r[-1]), 3) if r[-1] is not None else None
            out.append(d)
    return out


def target_oid(cur, schema, table):
    """pg_class oid of a table, or None."""
    cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s", (schema, table))
    r = cur.fetchone()
    return r[0] if r else None


def target_columns(cur, schema, table):
    """{column: format_type} of an existing table, or None if it does not exist (ordered)."""
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0"
        " AND NOT a.attisdropped ORDER BY a.attnum", (schema, table))
    rows = cur.fetchall()
    if not rows:
        cur.execute("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s", (schema, table))
        if cur.fetchone() is None:
            return None
    return dict(rows)


# ---- the engine ----------------------------------------------------------------------------------

class TablePlan(object):
    """A table resolved against the source catalog: columns, keys, rowversion, mapped types."""

    def __init__(self, spec, colmaps, keys, rv):
        self.spec = spec
        self.colmaps = colmaps          # source columns read, in SELECT order
        self.keys = keys                # key column names
        self.rv = rv                    # rowversion column name or None (mode full)
        self.source_columns = [c.name for c in colmaps]
        self.target_cols = [tc for c in colmaps for tc in c.target_columns()]
        self.notes = [c.name + ": " + c.note for c in colmaps if c.note]
        self.target_oid = None          # pg_class oid of the target once it exists (kept in the state)


def plan_table(source, spec):
    """Discover a table's columns, keys and rowversion column; validate; map types."""
    ttype = source.table_type(spec.source_schema, spec.source_table)
    if ttype is None:
        raise SyncError("table %s: not found in the source database" % spec.source_name)
    cols = source.columns(spec.source_schema, spec.source_table)
    if not cols:
        raise SyncError("table %s: no columns visible" % spec.source_name)
    names = [c["COLUMN_NAME"] for c in cols]
    byname = dict((c["COLUMN_NAME"], c) for c in cols)
    for c in spec.exclude + (spec.include or []):
        if c not in byname:
            raise SyncError("table %s: column %r (include/exclude) does not exist" % (spec.source_name, c))
    rvs = [n for n in names if is_rowversion_type(byname[n]["DATA_TYPE"])]
    rv = spec.rowversion_column
    if rv is not None:
        if rv not in byname:
            raise SyncError("table %s: rowversion column %r does not exist" % (spec.source_name, rv))
        if not is_rowversion_type(byname[rv]["DATA_TYPE"]):
            raise SyncError("table %s: column %r is %s, not rowversion" % (
                spec.source_name, rv, byname[rv]["DATA_TYPE"]))
    elif rvs:
        rv = rvs[0]
    if spec.mode == "delta" and rv is None:
        raise SyncError("table %s: no rowversion column, so no delta sync is possible; add one to the source "
                        "table or set mode: full" % spec.source_name)
    if spec.mode == "full":
        rv = None
    keys = spec.key_columns or source.primary_key(spec.source_schema, spec.source_table)
    if not keys:
        raise SyncError("table %s: no primary key; set key_columns" % spec.source_name)
    for k in keys:
        if k not in byname:
            raise SyncError("table %s: key column %r does not exist" % (spec.source_name, k))
        if k in spec.exclude:
            raise SyncError("table %s: key column %r cannot be excluded" % (spec.source_name, k))
    must = set(keys) | ({rv} if rv else set())
    if spec.soft_delete_column:
        if spec.soft_delete_column not in byname:
            raise SyncError("table %s: soft_delete_column %r does not exist" % (
                spec.source_name, spec.soft_delete_column))
        must.add(spec.soft_delete_column)
    selected = [n for n in names
                if (n in must) or ((spec.include is None or n in spec.include) and n not in spec.exclude)]
    colmaps = [map_column(byname[n]) for n in selected]
    seen = {}
    for c in colmaps:
        for tname, _t, _c in c.target_columns():
            check_pg_ident(tname, "table %s: target column" % spec.source_name)
            if tname in seen:
                raise SyncError("table %s: target column %r would hold both %r and %r" % (
                    spec.source_name, tname, seen[tname], c.name))
            seen[tname] = c.name
    return TablePlan(spec, colmaps, list(keys), rv)


def make_transform(colmaps, nul_rule, nul_counts):
    """A function turning a pymssql row into the target row, or None when rows pass unchanged."""
    idx_str = [i for i, c in enumerate(colmaps) if c.kind == "str"]
    idx_dto = [i for i, c in enumerate(colmaps) if c.kind == "dto"]
    if not idx_str and not idx_dto:
        return None
    names = [c.name for c in colmaps]
    repl = "" if nul_rule == "strip" else u"\ufffd"

    def fix_str(row):
        for i in idx_str:
            v = row[i]
            if v is not None and "\x00" in v:
                if nul_rule == "fail":
                    raise SyncError("column %r: value contains U+0000, which PostgreSQL text cannot store "
                                    "(nul_character: fail)" % names[i])
                row[i] = v.replace("\x00", repl)
                nul_counts[names[i]] = nul_counts.get(names[i], 0) + 1
        return row

    if not idx_dto:
        def transform(row):
            for i in idx_str:
                v = row[i]
                if v is not None and "\x00" in v:
                    return tuple(fix_str(list(row)))
            return row
        return transform

    dto = set(idx_dto)

    def transform(row):
        row = fix_str(list(row)) if idx_str else row
        out = []
        for i, v in enumerate(row):
            out.append(v)
            if i in dto:
                if v is None:
                    out.append(None)
                else:
                    off = v.utcoffset()
                    out.append(None if off is None else int(off.total_seconds() // 60))
        return out
    return transform


def new_acc():
    """Per-table committed counts: inserted/updated/deleted and U+0000 replacements per column."""
    return {"inserted": 0, "updated": 0, "deleted": 0, "nul": {}}


class SyncEngine(object):
    """Runs one job: a list of TableSpecs from one source database into one target database."""

    def __init__(self, source, conn, job, owner_role=None, on_rewind="fail", nul_character="strip",
                 commit_rows=50000, lock_timeout=30.0, retries=3, retry_delay=1.0, check_mode=False, full=False,
                 log=None, sleep=time.sleep, fillfactor=TARGET_FILLFACTOR, force=False, max_delete_fraction=0.5):
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
        cur.execute(sql.SQL("SELECT hwm, database_guid, recovery_fork_guid, initial_done, rows_total, target_oid"
                            " FROM {} "
                            "WHERE job = %s AND source_schema = %s AND source_table = %s FOR UPDATE").format(
                                _ident(STATE_SCHEMA, STATE_TABLE)),
                    (self.job, spec.source_schema, spec.source_table))
        r = cur.fetchone()
        if r is None:
            return None
        return {"hwm": tsql.rv_int(r[0]) if r[0] is not None else None,
                "database_guid": str(r[1]) if r[1] else None, "recovery_fork_guid": str(r[2]) if r[2] else None,
                "initial_done": r[3], "rows_total": r[4], "target_oid": r[5]}

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
        acc = self._acc if self._acc is not None else new_acc()
        self._acc = acc
        res = {"source": spec.source_name, "target": spec.target_name, "inserted": acc["inserted"],
               "updated": acc["updated"], "deleted": acc["deleted"],
               "pending": None, "watermark_from": None, "watermark_to": None, "mode": spec.mode,
               "precision_notes": list(plan.notes), "added_columns": [], "resync": None, "changed": False}
        conn = self.conn
        with conn.cursor() as cur:
            existed, added = self._ensure_target(cur, plan)
            plan.target_oid = target_oid(cur, spec.target_schema, spec.target_table)
            state = self._load_state(cur, spec) if not self.check_mode or self._state_exists(cur) else None
            res["added_columns"] = added
            reset = None
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

            if self.check_mode:
                res["pending"] = self.source.count(spec.source_schema, spec.source_table, plan.rv, lo, hi)
                if plan.rv is not None and lo is not None and lo >= hi:
                    res["pending"] = 0
                res["changed"] = bool(res["pending"]) or (not existed) or bool(added) or bool(reset)
                conn.rollback()
                res["duration_s"] = round(time.monotonic() - t0, 3)
                return res

            if reset or self.full:
                if existed:
                    cur.execute(sql.SQL("TRUNCATE {}").format(_ident(spec.target_schema, spec.target_table)))
                self._save_state(cur, plan, 0 if plan.rv else None, ident, False, 0, reset_rows=True)
                conn.commit()
                res["changed"] = True
                state = {"hwm": 0, "initial_done": False, "rows_total": 0}
            initial_done = bool(state and state.get("initial_done")) and not full_reload
            # Direct COPY into the target is an insert of keys that must not exist yet; try it while the
            # table holds nothing from an earlier complete window, and fall back to the staged upsert
            # (for the rest of the run) the first time a key exists.
            cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                _ident(spec.target_schema, spec.target_table)))
            nonempty = cur.fetchone()[0]
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
            conn.commit()
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
        cur.execute(sql.SQL(
            "WITH u AS (INSERT INTO {tgt} AS t ({cols}) {src} ON CONFLICT ({keys}) {action}"
            " RETURNING (xmax = 0) AS ins)"
            " SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM u").format(
                tgt=tgt, cols=cols, src=src, keys=keys, action=action))
        ins, upd = cur.fetchone()
        return ins, upd, deleted

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

    def _pk_diff(self, cur, plan, ident, hi, res):
        """Delete target rows whose key is no longer in the source (one transaction)."""
        spec = plan.spec
        tgt = _ident(spec.target_schema, spec.target_table)
        kstg = _ident("bq_keys_" + uuid.uuid4().hex[:12])
        keycols = [(n, t, c) for n, t, c in plan.target_cols if n in plan.keys]
        keycols.sort(key=lambda x: plan.keys.index(x[0]))
        cur.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            kstg, sql.SQL(", ").join(sql.SQL("{} {}").format(_ident(n), _type(t)) for n, t, _c in keycols)))
        # a key column is one value: a datetimeoffset key is matched on its instant (as SQL Server compares
        # it); its offset column is not part of the key and not streamed
        kcm = [ColumnMap(c.name, c.src_type, c.pg_type, c.copy_type, "str" if c.kind == "str" else None, c.nullable)
               for k in plan.keys for c in plan.colmaps if c.name == k]
        transform = make_transform(kcm, self.nul_character, {})
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
