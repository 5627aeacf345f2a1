# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capture of PostgreSQL changes for the reverse sync (tables with ``direction: both``).

A row trigger on the tenant's table writes one entry per changed row into ``berqenas.sync_change``
(the platform schema, which tenants cannot write; the trigger function is SECURITY DEFINER): the
operation (I/U/D), the primary key as jsonb, the rowversion the row carried before the change
(``old_rv``: what the PostgreSQL side last knew of SQL Server's version, the conflict check's base)
and the writing transaction's id. Deletes are tombstones (op D, key, old_rv). An update that changes
the key is a D of the old key and an I of the new one.

Why a trigger and not logical decoding: logical decoding needs ``wal_level = logical`` (a server
restart, more WAL for every database of the cluster) and a replication slot that pins WAL while the
sync is down, and the platform role would need REPLICATION. The trigger works on any PostgreSQL the
platform is given, commits atomically with the user's change, and costs one small insert per row.

Echo marker: the sync's own writes run on a connection with ``berqenas.sync_origin`` set (a custom
setting, ``ORIGIN_SETTING``); the trigger's WHEN condition skips them, so rows the forward sync loads are never
sent back, and such a write queues no trigger event at all (a quarter of an UPDATE's time, measured on the
reverse direction's own rowversion write-back).

The read window is the analogue of ``MIN_ACTIVE_ROWVERSION()``: entries whose transaction id is below
``pg_snapshot_xmin(pg_current_snapshot())`` belong to transactions that have committed or rolled back,
so nothing can still appear below it. Entries are read in ``(xid, id)`` order after the stored position
and below that bound; identity ids alone would not do (they are handed out at insert, not at commit).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import param_ident, sql
from ansible_collections.berqenas.platform.plugins.module_utils.sync_state import LOCK_CLASS, STATE_SCHEMA
from ansible_collections.berqenas.platform.plugins.module_utils.sync_types import SyncError

CHANGE_TABLE = "sync_change"
REVERSE_STATE_TABLE = "sync_reverse_state"
CONFLICT_TABLE = "sync_conflict"
CAPTURE_FUNCTION = "capture_change"
TRIGGER_NAME = "berqenas_capture"
ORIGIN_SETTING = "berqenas.sync_origin"

_DDL = """
CREATE TABLE IF NOT EXISTS {change} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_schema text NOT NULL,
    table_name text NOT NULL,
    op "char" NOT NULL CHECK (op IN ('I', 'U', 'D')),
    key jsonb NOT NULL,
    old_rv bytea,
    old jsonb,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE {change} ADD COLUMN IF NOT EXISTS old jsonb;
CREATE INDEX IF NOT EXISTS sync_change_window ON {change} (table_schema, table_name, xid, id);
CREATE TABLE IF NOT EXISTS {rstate} (
    job text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    last_xid xid8 NOT NULL DEFAULT '0',
    last_id bigint NOT NULL DEFAULT 0,
    applied_total bigint NOT NULL DEFAULT 0,
    conflicts_total bigint NOT NULL DEFAULT 0,
    last_run_at timestamptz,
    PRIMARY KEY (job, table_schema, table_name)
);
CREATE TABLE IF NOT EXISTS {conflict} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    key jsonb NOT NULL,
    winner text NOT NULL CHECK (winner IN ('sqlserver', 'postgresql')),
    policy text NOT NULL,
    loser_values jsonb,
    winner_values jsonb,
    at timestamptz NOT NULL DEFAULT now()
);
"""

# The trigger function: TG_ARGV[0] the rowversion column ('' for none), TG_ARGV[1..] the key columns.
_FUNCTION = """
CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    o jsonb;
    n jsonb;
    ko jsonb;
    kn jsonb;
    rv bytea;
    rvtxt text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(k, o -> k) INTO ko FROM unnest(TG_ARGV[1:]) AS k;
        IF TG_ARGV[0] <> '' THEN
            rvtxt := o ->> TG_ARGV[0];
            IF rvtxt IS NOT NULL THEN
                rv := decode(substr(rvtxt, 3), 'hex');
            END IF;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := to_jsonb(NEW);
        SELECT jsonb_object_agg(k, n -> k) INTO kn FROM unnest(TG_ARGV[1:]) AS k;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {change} (table_schema, table_name, op, key) VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'I', kn);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {change} (table_schema, table_name, op, key, old_rv, old)
        VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'D', ko, rv, o);
    ELSIF ko IS DISTINCT FROM kn THEN
        INSERT INTO {change} (table_schema, table_name, op, key, old_rv, old)
        VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'D', ko, rv, o), (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'I', kn, NULL, NULL);
    ELSE
        INSERT INTO {change} (table_schema, table_name, op, key, old_rv, old)
        VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'U', kn, rv, o);
    END IF;
    RETURN NULL;
END
$body$
"""


def _ident(*parts):
    return sql.Identifier(*parts)


def ensure_capture_schema(conn):
    """Create the change log, the reverse state, the conflict log and the trigger function (PUBLIC gets no
    rights on any of them); commits."""
    change = _ident(STATE_SCHEMA, CHANGE_TABLE)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s), to_regprocedure(%s), (SELECT 1 FROM pg_attribute"
                    " WHERE attrelid = to_regclass(%s) AND attname = 'old')", (
                        "%s.%s" % (STATE_SCHEMA, CHANGE_TABLE), "%s.%s" % (STATE_SCHEMA, CONFLICT_TABLE),
                        "%s.%s()" % (STATE_SCHEMA, CAPTURE_FUNCTION), "%s.%s" % (STATE_SCHEMA, CHANGE_TABLE)))
        if None not in cur.fetchone():
            conn.commit()
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(STATE_SCHEMA)))
        cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(_ident(STATE_SCHEMA)))
        cur.execute(sql.SQL(_DDL).format(change=change, rstate=_ident(STATE_SCHEMA, REVERSE_STATE_TABLE),
                                         conflict=_ident(STATE_SCHEMA, CONFLICT_TABLE)))
        func = _ident(STATE_SCHEMA, CAPTURE_FUNCTION)
        cur.execute(sql.SQL(_FUNCTION).format(func=func, change=change))
        for t in (CHANGE_TABLE, REVERSE_STATE_TABLE, CONFLICT_TABLE):
            cur.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(_ident(STATE_SCHEMA, t)))
        cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(func))
    conn.commit()


def _trigger(cur, schema, table):
    """The capture trigger on a table: (its arguments [rv, key...], whether it has the WHEN condition), or None."""
    cur.execute("SELECT t.tgargs, t.tgnargs, t.tgqual IS NOT NULL FROM pg_trigger t JOIN pg_class c"
                " ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s", (schema, table, TRIGGER_NAME))
    r = cur.fetchone()
    if r is None:
        return None
    raw = bytes(r[0])
    return [a.decode("utf-8") for a in raw.split(b"\x00")[:r[1]]], r[2]


def trigger_args(cur, schema, table):
    """The capture trigger's arguments on a table ([rv, key...]), or None when it has none."""
    t = _trigger(cur, schema, table)
    return None if t is None else t[0]


def install_capture(conn, schema, table, keys, rv_column=None):
    """Put the capture trigger on ``schema.table`` (re-created when its key or rowversion column changed);
    returns True when it changed anything (also a trigger of an earlier version, without the WHEN condition).
    Commits."""
    if not keys:
        raise SyncError("capture on %s.%s: no key columns" % (schema, table))
    ensure_capture_schema(conn)
    want = [rv_column or ""] + list(keys)
    with conn.cursor() as cur:
        if _trigger(cur, schema, table) == (want, True):
            conn.commit()
            return False
        tgt = _ident(schema, table)
        # WHEN: a row written on a marked connection (mark_sync_session) queues no trigger event at all
        unmarked = sql.SQL("coalesce(current_setting({}, true), '') = ''").format(sql.Literal(ORIGIN_SETTING))
        cur.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(_ident(TRIGGER_NAME), tgt))
        cur.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW WHEN ({})"
                            " EXECUTE FUNCTION {}({})").format(
            _ident(TRIGGER_NAME), tgt, unmarked, _ident(STATE_SCHEMA, CAPTURE_FUNCTION),
            sql.SQL(", ").join(sql.Literal(a) for a in want)))
    conn.commit()
    return True


def remove_capture(conn, schema, table):
    """Drop the capture trigger (the table's pending entries stay in the log); commits."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(_ident(TRIGGER_NAME), _ident(schema, table)))
    conn.commit()


def mark_sync_session(conn):
    """Mark every later write on this connection as the sync's own (the capture trigger skips them)."""
    with conn.cursor() as cur:
        cur.execute("SELECT set_config(%s, 'mssql', false)", (ORIGIN_SETTING,))
    conn.commit()


def window_bound(cur):
    """The exclusive upper bound of the read window: every transaction below it has ended."""
    cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
    return int(cur.fetchone()[0])


def pending(cur, schema, table, after, bound, limit, columns=None, keys=None):
    """Up to ``limit`` change-log entries of a table after position ``after`` = (xid, id) and below the
    transaction id ``bound``, in (xid, id) order: [(xid, id, op, key dict, old_rv bytes or None, at, old row as
    JSON text or None)] (the old row is decoded only where it is needed: the conflict check of a key whose
    rowversion moved). Ordered by the xid8 column itself (an unqualified ``xid`` in ORDER BY is the text output
    column: '1000' before '999', a sort of every later entry instead of an index range, and a page past the
    entries of the smaller transaction id).

    ``columns`` (the table's columns) and ``keys`` (its key columns, among them): each entry also carries the
    table's current row of its key, read in the same statement, as {column: value}, or None when no such row is
    there now."""
    page = sql.SQL(
        "SELECT c.xid, c.id, c.op, c.key, c.old_rv, c.at, c.old FROM {} c WHERE c.table_schema = %s"
        " AND c.table_name = %s AND (c.xid, c.id) > (%s::text::xid8, %s) AND c.xid < %s::text::xid8"
        " ORDER BY c.xid, c.id LIMIT %s").format(_ident(STATE_SCHEMA, CHANGE_TABLE))
    args = (schema, table, str(after[0]), int(after[1]), str(bound), int(limit))
    head = sql.SQL("c.xid::text, c.id, c.op, c.key, c.old_rv, c.at, c.old::text")
    if not columns:
        cur.execute(sql.SQL("SELECT {} FROM ({}) c ORDER BY c.xid, c.id").format(head, page), args)
        return [(int(x), i, op, k, bytes(rv) if rv is not None else None, at, old)
                for x, i, op, k, rv, at, old in cur.fetchall()]
    # the current row by key: a lateral index lookup per entry (the entry's key typed by the table's row type)
    tgt = param_ident(schema, table)
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = (jsonb_populate_record(NULL::{tgt}, c.key)).{c}").format(
        c=param_ident(k), tgt=tgt) for k in keys)
    cur.execute(sql.SQL("SELECT {}, {} FROM ({}) c LEFT JOIN LATERAL (SELECT {} FROM {} t WHERE {}) r ON true"
                        " ORDER BY c.xid, c.id").format(
        head, sql.SQL(", ").join(sql.SQL("r.{}").format(param_ident(n)) for n in columns), page,
        sql.SQL(", ").join(sql.SQL("t.{}").format(param_ident(n)) for n in columns), tgt, match), args)
    at_key = columns.index(keys[0])
    return [(int(r[0]), r[1], r[2], r[3], bytes(r[4]) if r[4] is not None else None, r[5], r[6],
             dict(zip(columns, r[7:])) if r[7 + at_key] is not None else None) for r in cur.fetchall()]


def count_pending(cur, schema, table, after):
    """Committed entries after ``after`` (including those still waiting for an older open transaction)."""
    cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE table_schema = %s AND table_name = %s"
                        " AND (xid, id) > (%s::text::xid8, %s)").format(_ident(STATE_SCHEMA, CHANGE_TABLE)),
                (schema, table, str(after[0]), int(after[1])))
    return cur.fetchone()[0]


def purge(cur, schema, table, upto):
    """Delete a table's entries at or before position ``upto`` (they are applied)."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE table_schema = %s AND table_name = %s"
                        " AND (xid, id) <= (%s::text::xid8, %s)").format(_ident(STATE_SCHEMA, CHANGE_TABLE)),
                (schema, table, str(upto[0]), int(upto[1])))
    return cur.rowcount


def coalesce(entries, keys):
    """One action per key from entries in commit order: {key tuple: (last op, key dict, last old_rv, last at,
    first old row, current row)}.

    The last op says what to do now (I/U: write the row's current values, D: delete); a tombstone's old_rv
    is the version PostgreSQL last knew of the deleted row (the conflict base of a delete); the first entry's
    old row holds the values PostgreSQL started from in this window (None when it began with an insert); the
    current row is the one ``pending(columns=...)`` read with the entries (None when it is gone or was not read)."""
    out = {}
    for e in entries:
        _x, _i, op, key, old_rv, at = e[:6]
        k = tuple(key.get(c) for c in keys)
        first_old = out[k][4] if k in out else (e[6] if len(e) > 6 else None)
        out[k] = (op, key, old_rv, at, first_old, e[7] if len(e) > 7 else None)
    return out
