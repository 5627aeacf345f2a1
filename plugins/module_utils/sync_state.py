# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sync state in the target database: schema ``berqenas`` (no rights for PUBLIC), the watermark table
``sync_state`` and the lock table ``sync_job``, plus catalog reads of the target tables."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as tsql
from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import sql

STATE_SCHEMA = "berqenas"
STATE_TABLE = "sync_state"
LOCK_CLASS = 0x6271  # 'bq': first key of the two-key advisory lock, the second is the job's lock_id
JOB_TABLE = "sync_job"  # job -> lock_id (unique, from an identity): no two jobs share a lock key


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
STATE_ADDED_COLUMNS = (("target_oid", "oid"), ("ct_version", "bigint"))  # ct_version: delete_detection change_tracking

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
