"""An in-memory SQL Server stand-in at the source-adapter level (the engine's seam).

Database-wide rowversion counter, MIN_ACTIVE_ROWVERSION() with open transactions, recovery GUIDs,
and injectable stream failures. Used to test the engine's logic before/beside the TDS emulator.
"""

import uuid

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S


class FakeTable:
    def __init__(self, columns, pk, kind="BASE TABLE"):
        self.kind = kind  # TABLE_TYPE: "BASE TABLE" or "VIEW"
        # columns: list of (name, data_type, extra dict)
        self.columns = []
        for i, (name, dt, extra) in enumerate(columns, 1):
            d = {"COLUMN_NAME": name, "DATA_TYPE": dt, "CHARACTER_MAXIMUM_LENGTH": None, "NUMERIC_PRECISION": None,
                 "NUMERIC_SCALE": None, "DATETIME_PRECISION": None, "IS_NULLABLE": "YES", "ORDINAL_POSITION": i}
            d.update(extra or {})
            self.columns.append(d)
        self.pk = list(pk)
        self.rows = {}  # key tuple -> dict

    @property
    def names(self):
        return [c["COLUMN_NAME"] for c in self.columns]

    def rv_col(self):
        for c in self.columns:
            if c["DATA_TYPE"] == "timestamp":
                return c["COLUMN_NAME"]
        return None


class FakeDb:
    def __init__(self):
        self.dbts = 2000
        self.tables = {}
        self.open_txns = {}  # id -> list of pending (table, key, row|None)
        self.guid = str(uuid.uuid4())
        self.fork = str(uuid.uuid4())

    def create(self, schema, table, columns, pk, kind="BASE TABLE"):
        self.tables[(schema, table)] = FakeTable(columns, pk, kind)
        return self.tables[(schema, table)]

    def _next(self):
        self.dbts += 1
        return self.dbts

    def _apply(self, t, key, row):
        if row is None:
            t.rows.pop(key, None)
        else:
            t.rows[key] = row

    def write(self, schema, table, txn=None, _rv=None, **vals):
        """Insert or update (by pk) one row; bumps the rowversion. In txn: visible at commit.

        ``_rv``: stamp this (already used) rowversion instead, as a view over a join shows one base
        row's rowversion on several rows."""
        t = self.tables[(schema, table)]
        key = tuple(vals[k] for k in t.pk)
        old = t.rows.get(key, {})
        row = dict(old)
        row.update(vals)
        rv = t.rv_col()
        if rv:
            row[rv] = (self._next() if _rv is None else _rv).to_bytes(8, "big")
        if txn is None:
            self._apply(t, key, row)
        else:
            self.open_txns[txn].append((t, key, row))
        return row

    def delete(self, schema, table, *key):
        self.tables[(schema, table)].rows.pop(tuple(key), None)

    def begin(self):
        tid = uuid.uuid4().hex
        self.open_txns[tid] = []
        return tid

    def commit(self, tid):
        for t, key, row in self.open_txns.pop(tid):
            self._apply(t, key, row)

    def min_active(self):
        vals = [int.from_bytes(r[t.rv_col()], "big") for pend in self.open_txns.values()
                for t, _k, r in pend if r is not None and t.rv_col()]
        return min(vals) if vals else self.dbts + 1

    def restore(self, dbts, keep_guids=False):
        """An older backup: rows written after ``dbts`` vanish, the counter and the GUIDs change
        (``keep_guids``: they do not, as after a failover to an asynchronous replica that lost log)."""
        for t in self.tables.values():
            rv = t.rv_col()
            if rv:
                t.rows = {k: r for k, r in t.rows.items() if int.from_bytes(r[rv], "big") <= dbts}
        self.dbts = dbts
        if not keep_guids:
            self.guid = str(uuid.uuid4())
            self.fork = str(uuid.uuid4())


class FakeSource:
    """Implements the engine's source adapter over a FakeDb."""

    def __init__(self, db, batch_size=3, fail_after_rows=None, refuse=False, key_limit=None):
        self.db = db
        self.batch_size = batch_size
        self.fail_after_rows = fail_after_rows  # one-shot mid-stream drop
        self.key_limit = key_limit  # the key stream ends (silently) after this many keys
        self.refuse = refuse
        self.connected = False
        self.connects = 0

    def connect(self):
        if self.refuse:
            raise S.SourceError("connect to SQL Server fake: login failed (check user and password)")
        self.connected = True
        self.connects += 1
        return self

    def close(self):
        self.connected = False

    def server_version(self):
        return {"product_version": "16.0.0.0", "version": "fake"}

    def identity(self):
        return self.db.guid, self.db.fork

    def watermarks(self):
        return self.db.min_active(), self.db.dbts

    def table_type(self, schema, table):
        t = self.db.tables.get((schema, table))
        return t.kind if t is not None else None

    def columns(self, schema, table):
        return [dict(c) for c in self.db.tables[(schema, table)].columns]

    def primary_key(self, schema, table):
        return list(self.db.tables[(schema, table)].pk)

    def _rows(self, schema, table, rv, lo, hi):
        t = self.db.tables[(schema, table)]
        rows = list(t.rows.values())
        if rv is not None:
            rows = [r for r in rows if lo <= int.from_bytes(r[rv], "big") < hi]
            rows.sort(key=lambda r: r[rv])
        return rows

    def count(self, schema, table, rv_column=None, lo=None, hi=None):
        return len(self._rows(schema, table, rv_column, lo, hi))

    def _stream(self, rows):
        sent = 0
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i:i + self.batch_size]
            if self.fail_after_rows is not None and sent + len(chunk) > self.fail_after_rows:
                self.fail_after_rows = None
                self.connected = False
                raise S.SourceError("read window on fake: connection dropped", transient=True)
            sent += len(chunk)
            yield chunk

    def batches(self, schema, table, columns, rv_column=None, lo=None, hi=None):
        rows = self._rows(schema, table, rv_column, lo, hi)
        return self._stream([tuple(r.get(c) for c in columns) for r in rows])

    def key_batches(self, schema, table, key_columns):
        rows = self._rows(schema, table, None, None, None)[:self.key_limit]
        return self._stream([tuple(r.get(c) for c in key_columns) for r in rows])


# ---- helpers of the engine tests that use the fake ------------------------------------------------

COLS = [("id", "int", None), ("name", "nvarchar", {"CHARACTER_MAXIMUM_LENGTH": 50}),
        ("rv", "timestamp", {"IS_NULLABLE": "NO"})]


def engine(src, conn, tenant, **kw):
    kw.setdefault("retry_delay", 0.01)
    kw.setdefault("commit_rows", 4)
    return S.SyncEngine(src, conn, job="job-" + tenant.name, owner_role=tenant.owner, **kw)


def run(src, conn, tenant, tables=("[dbo].[T]",), **kw):
    specs = S.table_specs(list(tables), tenant.name)
    return engine(src, conn, tenant, **kw).run(specs)


def source_rows(db, table="T", cols=("id", "name")):
    t = db.tables[("dbo", table)]
    return sorted(tuple(r.get(c) for c in cols) for r in t.rows.values())


def target_rows(tenant, table="T", cols="id, name"):
    with tenant.connect() as c:
        return sorted(c.execute('SELECT %s FROM "%s"."%s"' % (cols, tenant.name, table)).fetchall())
