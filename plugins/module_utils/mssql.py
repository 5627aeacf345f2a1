# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQL Server side of the platform: connect through pymssql, classify its errors, ping.

``PymssqlSource`` is the sync engine's *source adapter* (every statement comes from mssql_tsql);
``mssql_source_spec`` is the argument spec of the modules' ``source`` option (doc fragment
berqenas.platform.mssql). pymssql is imported behind a guard so ``ansible-test sanity`` imports this
file without it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql as tsql

try:
    import pymssql
    import pymssql._mssql  # quote_simple_value
    HAS_PYMSSQL = True
    PYMSSQL_IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover
    HAS_PYMSSQL = False
    PYMSSQL_IMPORT_ERROR = e


class SourceError(Exception):
    """SQL Server failed. ``transient`` errors are retried (connection drops, timeouts)."""

    def __init__(self, msg, transient=False):
        super(SourceError, self).__init__(msg)
        self.transient = transient


# SQL Server error numbers of a refused login: retrying cannot help, and the message says what to check.
# 18456 login failed, 18452 untrusted domain login, 18470 account disabled, 18486 account locked out,
# 18487 / 18488 password expired / must be changed; 4060 the login cannot open the requested database.
LOGIN_ERRORS = frozenset([18456, 18452, 18470, 18486, 18487, 18488])
DATABASE_REFUSED_ERRORS = frozenset([4060])


DBLIB_SERVER_MESSAGE = 20018  # "General SQL Server error: Check messages from the SQL Server"
_DBLIB_RE = re.compile(r"DB-Lib error message (\d+)")


def _args(exc):
    """(number or None, message text) of a pymssql exception: it raises ``X((number, message))``."""
    args = getattr(exc, "args", ())
    while args and isinstance(args[0], tuple):
        args = args[0]
    number = args[0] if args and isinstance(args[0], int) and not isinstance(args[0], bool) else None
    if number is not None:
        text = args[1] if len(args) > 1 else ""
    else:
        text = args[0] if args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return number, " ".join(str(text).split())


def server_error_number(exc):
    """The SQL Server error number this failure carries, or None when the server sent none.

    pymssql keeps the last server message number process-wide and only replaces it with a message of
    higher severity, so after a failed login a later refused connection still carries 18456. The message
    text is this failure's own: the number counts only when that text says the server sent a message
    (DB-Lib 20018), or when it holds no DB-Lib part at all (a server message alone).
    """
    number, text = _args(exc)
    n = getattr(exc, "number", None)
    if number is None and isinstance(n, int) and not isinstance(n, bool) and n:
        number = n
    dblib = [int(x) for x in _DBLIB_RE.findall(text)]
    if dblib and DBLIB_SERVER_MESSAGE not in dblib:
        return None
    return number


def classify(exc, action):
    """A SourceError for a pymssql failure: refused logins by the server's error number (never by message
    text), programming errors permanent, everything else (network, timeouts, deadlocks) transient."""
    number = server_error_number(exc)
    text = _args(exc)[1]
    if number in LOGIN_ERRORS:
        return SourceError("%s: login failed (check user and password; SQL Server error %d)" % (action, number),
                           transient=False)
    if number in DATABASE_REFUSED_ERRORS:
        return SourceError("%s: the login cannot open the database (check its name and the login's access; SQL "
                           "Server error %d)" % (action, number), transient=False)
    if HAS_PYMSSQL and isinstance(exc, (pymssql.exceptions.ProgrammingError, pymssql.exceptions.IntegrityError,
                                        pymssql.exceptions.DataError, pymssql.exceptions.NotSupportedError)):
        return SourceError("%s: %s" % (action, text), transient=False)
    return SourceError("%s: %s" % (action, text), transient=True)


def _quote_value(v):
    q = pymssql._mssql.quote_simple_value(v)
    return q.decode("utf-8") if isinstance(q, bytes) else q


def render(text, params=None, quote=None):
    """``text`` with its value places (``mssql_tsql.SLOT``) filled with ``params`` quoted as literals by
    pymssql's own quoting (``quote``: that function, for tests); ``text`` itself when ``params`` is None.

    Every statement goes to pymssql rendered and without parameters: pymssql's ``execute(text, params)``
    takes every ``%s``/``%d`` in the text for a placeholder, also inside a bracket-quoted name, and has no
    escape for them. A literal is never scanned again."""
    if params is None:
        return text
    pieces = text.split(tsql.SLOT)
    if len(pieces) != len(params) + 1:
        raise tsql.TsqlError("statement has %d value places for %d values" % (len(pieces) - 1, len(params)))
    quote = quote or _quote_value
    out = [pieces[0]]
    for v, piece in zip(params, pieces[1:]):
        out.append(quote(v))
        out.append(piece)
    return "".join(out)


class PymssqlSource(object):
    """The engine's view of SQL Server through pymssql; every statement comes from mssql_tsql.

    One autocommit connection (no implicit ``BEGIN TRAN`` that would freeze a snapshot or pin
    MIN_ACTIVE_ROWVERSION); one active result set at a time (pymssql has no MARS), so the engine
    never interleaves a stream with another query. Statements with values are sent rendered (:func:`render`).
    """

    def __init__(self, host, port=1433, user=None, password=None, database=None, login_timeout=10, timeout=0,
                 tds_version=None, encryption=None, batch_size=5000, appname="berqenas-sync"):
        self.params = dict(server=host, port=str(port), user=user, password=password, database=database or "",
                           login_timeout=int(login_timeout), timeout=int(timeout), autocommit=True,
                           appname=appname)
        if tds_version:
            self.params["tds_version"] = tds_version
        if encryption:
            self.params["encryption"] = encryption
        self.where = "%s:%s/%s" % (host, port, database or "")
        self.batch_size = int(batch_size)
        self.conn = None

    def connect(self):
        if not HAS_PYMSSQL:
            raise SourceError("pymssql is required (pip install pymssql)")
        self.close()
        try:
            self.conn = pymssql.connect(**self.params)
        except Exception as e:  # pymssql raises its own hierarchy and sometimes plain errors
            raise classify(e, "connect to SQL Server %s" % self.where) from e
        return self

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _query(self, text, params=None, action="query"):
        if self.conn is None:
            self.connect()
        try:
            text = render(text, params)
            cur = self.conn.cursor()
            cur.execute(text)
            rows = cur.fetchall()
            cur.close()
            return rows
        except Exception as e:
            raise classify(e, "%s on %s" % (action, self.where)) from e

    def server_version(self):
        r = self._query(tsql.SERVER_VERSION, action="read server version")
        return {"product_version": r[0][0], "version": r[0][1]}

    def identity(self):
        """(database_guid, recovery_fork_guid) as strings, or (None, None) if not visible."""
        r = self._query(tsql.DATABASE_IDENTITY, action="read recovery GUIDs")
        if not r:
            return None, None
        return tuple(None if v is None else str(v).lower() for v in r[0][:2])

    def watermarks(self):
        """(MIN_ACTIVE_ROWVERSION(), @@DBTS) as ints."""
        r = self._query(tsql.WATERMARKS, action="read MIN_ACTIVE_ROWVERSION()")
        return tsql.rv_int(r[0][0]), tsql.rv_int(r[0][1])

    def table_type(self, schema, table):
        r = self._query(tsql.TABLE_EXISTS, (schema, table), action="find table")
        return r[0][0] if r else None

    def columns(self, schema, table):
        keys = ("COLUMN_NAME", "DATA_TYPE", "CHARACTER_MAXIMUM_LENGTH", "NUMERIC_PRECISION", "NUMERIC_SCALE",
                "DATETIME_PRECISION", "IS_NULLABLE", "ORDINAL_POSITION")
        return [dict(zip(keys, r)) for r in self._query(tsql.COLUMNS, (schema, table), action="read columns")]

    def primary_key(self, schema, table):
        return [r[0] for r in self._query(tsql.PRIMARY_KEY, (schema, table), action="read primary key")]

    def count(self, schema, table, rv_column=None, lo=None, hi=None):
        if rv_column is None:
            r = self._query(tsql.full_count(schema, table), action="count rows")
        else:
            r = self._query(tsql.window_count(schema, table, rv_column), (tsql.rv_param(lo), tsql.rv_param(hi)),
                            action="count pending rows")
        return int(r[0][0])

    def _stream(self, text, params, action):
        if self.conn is None:
            self.connect()
        try:
            text = render(text, params)
            cur = self.conn.cursor()
            cur.arraysize = self.batch_size
            cur.execute(text)
            while True:
                rows = cur.fetchmany(self.batch_size)
                if not rows:
                    break
                yield rows
            cur.close()
        except GeneratorExit:
            self.close()  # abandoned mid-result: drop the connection rather than drain it
            raise
        except Exception as e:
            raise classify(e, "%s on %s" % (action, self.where)) from e

    def batches(self, schema, table, columns, rv_column=None, lo=None, hi=None):
        """Row batches (lists of tuples in ``columns`` order); rowversion order in a window."""
        if rv_column is None:
            return self._stream(tsql.full_select(schema, table, columns), None, "read table")
        return self._stream(tsql.window_select(schema, table, columns, rv_column),
                            (tsql.rv_param(lo), tsql.rv_param(hi)), "read window")

    def key_batches(self, schema, table, key_columns):
        return self._stream(tsql.pk_select(schema, table, key_columns), None, "read primary keys")

    def ct_versions(self, schema, table):
        """(CHANGE_TRACKING_CURRENT_VERSION(), CHANGE_TRACKING_MIN_VALID_VERSION(table)); None where not tracked."""
        r = self._query(tsql.ct_versions(), (tsql.quote_table(schema, table),), action="read change tracking versions")
        return tuple(None if v is None else int(v) for v in r[0][:2])

    def ct_deleted_keys(self, schema, table, key_columns, last, context=None):
        """One SNAPSHOT transaction: (current version, min valid version, keys deleted since ``last``). The
        current version is the window's upper bound: every change up to it is visible in the snapshot and
        none after it. The keys are None when ``last`` is below the min valid version (too old). With
        ``context`` (bytes), deletes whose last change carried that change tracking context are left out."""
        if self.conn is None:
            self.connect()
        try:
            cur = self.conn.cursor()
            cur.execute(tsql.CT_SNAPSHOT)
            try:
                cur.execute(tsql.CT_BEGIN)
                cur.execute(render(tsql.ct_versions(), (tsql.quote_table(schema, table),)))
                current, min_valid = (None if v is None else int(v) for v in cur.fetchone()[:2])
                keys = None
                if current is not None and min_valid is not None and int(last) >= min_valid:
                    cur.execute(render(tsql.ct_deleted_keys(schema, table, key_columns, context is not None), (
                        (int(last),) if context is None else (int(last), bytearray(context)))))
                    keys = [tuple(r) for r in cur.fetchall()]
                cur.execute(tsql.CT_COMMIT)
            finally:
                cur.execute(tsql.CT_READ_COMMITTED)
            cur.close()
            return current, min_valid, keys
        except Exception as e:
            self.close()  # whatever the transaction's state, a new connection starts clean
            raise classify(e, "read change tracking deletes on %s" % self.where) from e


def mssql_source_spec():
    """Argument spec of the ``source`` option (doc fragment berqenas.platform.mssql)."""
    return dict(
        host=dict(type="str", required=True),
        port=dict(type="int", default=1433),
        user=dict(type="str", required=True),
        password=dict(type="str", required=True, no_log=True),
        database=dict(type="str", required=True),
        login_timeout=dict(type="int", default=10),
        timeout=dict(type="int", default=0),
        tds_version=dict(type="str", default="7.4", choices=["7.0", "7.1", "7.2", "7.3", "7.4"]),
        encryption=dict(type="str", choices=["default", "off", "request", "require"]),
    )


def source_from_params(src, batch_size=5000):
    """A PymssqlSource from the module's ``source`` dict."""
    return PymssqlSource(host=src["host"], port=src["port"], user=src["user"], password=src["password"],
                         database=src["database"], login_timeout=src["login_timeout"], timeout=src["timeout"],
                         tds_version=src["tds_version"], encryption=src["encryption"], batch_size=batch_size)


def ping(source):
    """Connect, read the server version; returns dict with latency_ms (one round trip, after login)."""
    t0 = time.monotonic()
    source.connect()
    try:
        login_ms = (time.monotonic() - t0) * 1000.0
        t1 = time.monotonic()
        v = source.server_version()
        v["latency_ms"] = round((time.monotonic() - t1) * 1000.0, 2)
        v["login_ms"] = round(login_ms, 2)
        return v
    finally:
        source.close()
