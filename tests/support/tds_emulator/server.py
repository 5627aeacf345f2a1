"""The TCP server: one thread per client session (plus a reader thread for attention), one PostgreSQL
connection per session."""

import contextlib
import decimal
import hmac
import os
import queue
import re
import socket
import struct
import threading
import time
import uuid

import psycopg
from psycopg import sql

from . import protocol as P
from . import rpc
from .catalog import Catalog, dto_from_text, pg_error, sqltype_from_pg
from .protocol import SqlType
from .translate import CATALOG_COLUMN_NAMES, Context, TsqlError, parse_statement, split_statements, tokenize

_SCHEMA_SQL = os.path.join(os.path.dirname(__file__), "schema.sql")
_FETCH = 2000


class Faults:
    """Fault injection for one database (see README)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self.drop_after_rows = None
            self.packet_delay = 0.0
            self.refuse_logins = False
            self._fail = []
            self._delay = []
            self.delaying = threading.Event()  # set when a delayed statement starts to wait

    def delay_statement(self, pattern, seconds, times=1):
        """The next ``times`` statements matching ``pattern`` wait ``seconds`` before they run (a server still
        busy with a batch; the statement runs even when its client is gone meanwhile, as SQL Server may)."""
        with self._lock:
            self.delaying.clear()
            self._delay.append([re.compile(pattern, re.I), float(seconds), int(times)])

    def _wait(self, text):
        seconds = self._take(self._delay, text)
        if seconds is not None:
            self.delaying.set()
            time.sleep(seconds)

    def fail_statement(self, pattern, number, message=None, times=1):
        with self._lock:
            self._fail.append([re.compile(pattern, re.I), (int(number), message), int(times)])

    def _match(self, text):
        hit = self._take(self._fail, text)
        if hit is None:
            return None
        number, message = hit
        return TsqlError(number, message or "tds_emulator: injected error %d" % number)

    def _take(self, entries, text):
        """The payload of the first [regex, payload, times left] entry matching ``text``, used once; else None."""
        with self._lock:
            for entry in entries:
                if entry[2] > 0 and entry[0].search(text):
                    entry[2] -= 1
                    if entry[2] <= 0:
                        entries.remove(entry)
                    return entry[1]
        return None

    def _take_drop(self):
        with self._lock:
            n = self.drop_after_rows
            self.drop_after_rows = None
            return n


class Database:
    """A SQL Server database served from one PostgreSQL database."""

    def __init__(self, name, conninfo, database_id):
        self.name = name
        if isinstance(conninfo, dict):
            conninfo = psycopg.conninfo.make_conninfo(**conninfo)
        self.conninfo = conninfo
        self.database_id = database_id
        self.faults = Faults()
        self.col_cache = {}
        self.constraint_names = {}
        self.cache_lock = threading.Lock()

    def connect(self):
        conn = psycopg.connect(self.conninfo, autocommit=True, application_name="tds_emulator")
        conn.execute("SET search_path = dbo, tds_ops")
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def install(self):
        with open(_SCHEMA_SQL, encoding="utf-8") as f:
            script = f.read()
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('tds_emulator install'))")
            conn.execute(script)
            conn.execute(
                "INSERT INTO tds_meta.dbinfo VALUES (1, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET name ="
                " EXCLUDED.name", (self.name, self.database_id, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()))

    def invalidate(self):
        with self.cache_lock:
            self.col_cache.clear()


class TdsEmulator:
    """See README.md."""

    def __init__(self, user="sa", password="", host="127.0.0.1", port=0):
        self.user = user
        self._password = password
        self.host = host
        self._bind_port = port
        self.port = None
        self._databases = {}
        self._default_db = None
        self._sessions = {}
        self._lock = threading.Lock()
        self._next_spid = 51
        self._sock = None
        self._thread = None
        self._stopping = threading.Event()

    @property
    def password(self):
        return self._password

    # -- configuration -------------------------------------------------------------------------
    def add_database(self, name, pg_conninfo):
        with self._lock:
            db = Database(name, pg_conninfo, 5 + len(self._databases))
        db.install()
        with self._lock:
            self._databases[name.lower()] = db
            if self._default_db is None:
                self._default_db = db
        return db

    def remove_database(self, name):
        """Stop serving a database (its sessions are dropped; the PostgreSQL database is left alone)."""
        with self._lock:
            db = self._databases.pop(name.lower(), None)
            if db is self._default_db:
                self._default_db = next(iter(self._databases.values()), None)
        if db is not None:
            self.kill_sessions_of(db)

    def kill_sessions_of(self, db):
        with self._lock:
            victims = [s for s in self._sessions.values() if s.db is db]
        for s in victims:
            s.kill()
        for s in victims:
            s.join(5)
        return len(victims)

    def database(self, name):
        db = self._databases.get((name or "").lower())
        if db is None:
            raise KeyError("tds_emulator: no database %r" % name)
        return db

    def faults(self, name):
        return self.database(name).faults

    def connect_params(self, database=None, **overrides):
        db = self.database(database) if database else self._default_db
        params = dict(server=self.host, port=str(self.port), user=self.user, password=self._password,
                      database=db.name, tds_version="7.4", login_timeout=10, autocommit=True)
        params.update(overrides)
        return params

    def simulate_restore(self, database, dbts=None, discard_newer=False):
        """A restore of an older backup: new database/fork GUIDs and the rowversion counter set back to
        ``dbts`` (default: the highest rowversion stored in any table, or 2000). A real restored database
        never holds a rowversion above its @@DBTS, so a lower ``dbts`` needs ``discard_newer=True``, which
        deletes the rows stamped after it (changes made after the backup are lost). Returns the new @@DBTS."""
        db = self.database(database)
        with db.connect() as conn, conn.transaction():
            tables = conn.execute(
                "SELECT s.pg_name, t.pg_name, c.pg_name FROM tds_meta.columns c JOIN tds_meta.tables t"
                " USING (object_id) JOIN tds_meta.schemas s USING (schema_id) WHERE c.type_name = 'timestamp'"
            ).fetchall()
            highest = 2000
            for schema, table, col in tables:
                row = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1 DESC LIMIT 1").format(
                    sql.Identifier(col), sql.Identifier(schema, table))).fetchone()
                if row is not None:
                    highest = max(highest, int.from_bytes(row[0], "big"))
            if dbts is None:
                dbts = highest
            if dbts < highest:
                if not discard_newer:
                    raise ValueError("simulate_restore: rows with rowversion up to %d exist; a restored database never "
                                     "holds values above its @@DBTS (pass discard_newer=True to delete them)" % highest)
                for schema, table, col in tables:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE {} > {}").format(
                        sql.Identifier(schema, table), sql.Identifier(col), sql.Literal(int(dbts).to_bytes(8, "big"))))
            conn.execute("SELECT setval('tds_meta.rowversion', %s, true)", (int(dbts),))
            conn.execute("UPDATE tds_meta.dbinfo SET database_guid = %s, recovery_fork_guid = %s",
                         (uuid.uuid4(), uuid.uuid4()))
        return dbts

    def change_tracking_cleanup(self, database, version=None):
        """Change tracking's retention cleanup, run now: the change records of versions up to ``version``
        (default: the current version) are removed and every tracked table's minimum valid version moves up to
        it, so a client whose last sync version is lower must reinitialise. Returns that version."""
        db = self.database(database)
        with db.connect() as conn, conn.transaction():
            if version is None:
                version = conn.execute("SELECT tds_meta.ct_current_version()").fetchone()[0]
            if version is None:
                raise ValueError("change_tracking_cleanup: change tracking is not enabled on %s" % database)
            conn.execute("DELETE FROM tds_meta.ct_changes WHERE version <= %s", (version,))
            conn.execute("UPDATE tds_meta.ct_tables SET min_valid = greatest(min_valid, %s)", (version,))
        return version

    def kill_sessions(self, database):
        return self.kill_sessions_of(self.database(database))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._bind_port))
        sock.listen(64)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="tds-accept", daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                break
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                spid = self._next_spid
                self._next_spid += 1
                s = Session(self, conn, spid)
                self._sessions[spid] = s
            s.start()

    def _forget(self, session):
        with self._lock:
            self._sessions.pop(session.spid, None)

    def session(self, spid):
        with self._lock:
            return self._sessions.get(spid)

    def stop(self):
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.kill()
        for s in sessions:
            s.join(5)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _check_login(self, user, password):
        return hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
            password.encode("utf-8"), self._password.encode("utf-8"))


class _Dropped(Exception):
    pass


class _Writer:
    """Collects one response message and sends it as TDS packets of the negotiated size."""

    def __init__(self, session):
        self.s = session
        self.buf = bytearray()
        self.cap = session.packet_size - 8

    def add(self, data):
        self.buf += data
        if len(self.buf) > self.cap:
            self._flush(final=False)

    def _flush(self, final):
        while len(self.buf) > self.cap or final:
            chunk = bytes(self.buf[:self.cap])
            del self.buf[:self.cap]
            last = final and not self.buf
            self.s.send_packet(chunk, last)
            if last:
                break

    def finish(self):
        self._flush(final=True)


class Session(threading.Thread):
    def __init__(self, server, sock, spid):
        super().__init__(name="tds-session-%d" % spid, daemon=True)
        self.server = server
        self.sock = sock
        self.spid = spid
        self.db = None
        self.pg = None
        self.packet_size = 4096
        self.packet_id = 0
        self.trancount = 0
        self.rowcount = 0
        self.nocount = False
        self.xact_abort = False
        self.isolation = "READ COMMITTED"
        self.identity_insert = set()
        self.tds_version = 0x74000004
        self.params = {}  # RPC parameters bound for the statements being run
        self.done_token = 0xFD  # DONE, or DONEINPROC inside an RPC
        self.prepared = {}  # sp_prepare/sp_prepexec handle -> (declarations, statement text)
        self.next_handle = 1
        self.xact_seq = 0
        self.xact_lost = False  # the last error rolled the transaction back (ENVCHANGE 10 due)
        self.inbox = queue.Queue()
        self.attn = threading.Event()
        self.dead = threading.Event()
        self._send_lock = threading.Lock()

    # -- I/O -------------------------------------------------------------------------------------
    def send_packet(self, payload, last):
        if self.dead.is_set():
            raise _Dropped()
        delay = self.db.faults.packet_delay if self.db is not None else 0
        if delay:
            time.sleep(delay)
        self.packet_id = (self.packet_id + 1) & 0xFF
        hdr = P.HEADER.pack(P.PKT_REPLY, 0x01 if last else 0x00, len(payload) + 8, self.spid, self.packet_id, 0)
        try:
            with self._send_lock:
                self.sock.sendall(hdr + payload)
        except OSError as e:
            raise _Dropped() from e

    def writer(self):
        return _Writer(self)

    def send_message(self, data):
        w = _Writer(self)
        w.add(data)
        w.finish()

    def read_message(self):
        ptype, status, payload = P.read_packet(self.sock)
        data = bytearray(payload)
        while not status & 0x01:
            ptype2, status, payload = P.read_packet(self.sock)
            data += payload
        return ptype, bytes(data)

    def kill(self):
        """Drop the client connection (KILL, fault injection, stop)."""
        self.dead.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        pg = self.pg
        if pg is not None:
            with contextlib.suppress(Exception):
                pg.cancel_safe(timeout=2)

    # -- main loop ---------------------------------------------------------------------------------
    def run(self):
        try:
            if not self.handshake():
                return
            reader = threading.Thread(target=self._reader, name="tds-reader-%d" % self.spid, daemon=True)
            reader.start()
            while True:
                item = self.inbox.get()
                if item is None or self.dead.is_set():
                    break
                if item == "ATTN":
                    if self.attn.is_set():
                        self.attn.clear()
                        self.send_message(P.done(P.DONE_ATTN))
                    continue
                ptype, payload = item
                if ptype == P.PKT_SQL_BATCH:
                    self.batch(payload)
                elif ptype == P.PKT_TRANSACTION:
                    rpc.transaction_request(self, payload)
                elif ptype == P.PKT_RPC:
                    rpc.rpc_request(self, payload)
                else:
                    self.send_message(P.message_token(
                        8009, "tds_emulator: packet type 0x%02X is not supported (no bulk load)" % ptype)
                        + P.done(P.DONE_ERROR))
                if self.attn.is_set():
                    self.attn.clear()
                    self.send_message(P.done(P.DONE_ATTN))
        except (_Dropped, P.ConnectionClosed, OSError, P.ProtocolError):
            pass
        finally:
            self.dead.set()
            with contextlib.suppress(OSError):
                self.sock.close()
            if self.pg is not None:
                with contextlib.suppress(Exception):
                    self.pg.close()
            self.server._forget(self)

    def _reader(self):
        try:
            while not self.dead.is_set():
                ptype, status, payload = P.read_packet(self.sock)
                if ptype == P.PKT_ATTENTION:
                    self.attn.set()
                    pg = self.pg
                    if pg is not None:
                        with contextlib.suppress(Exception):
                            pg.cancel_safe(timeout=2)
                    self.inbox.put("ATTN")
                    continue
                data = bytearray(payload)
                while not status & 0x01:
                    _, status, payload = P.read_packet(self.sock)
                    data += payload
                self.inbox.put((ptype, bytes(data)))
        except (P.ConnectionClosed, OSError, P.ProtocolError):
            pass
        finally:
            self.dead.set()
            self.inbox.put(None)
            pg = self.pg
            if pg is not None:
                with contextlib.suppress(Exception):
                    pg.cancel_safe(timeout=2)

    # -- login ------------------------------------------------------------------------------------
    def handshake(self):
        ptype, payload = self.read_message()
        if ptype == P.PKT_PRELOGIN:
            opts = P.parse_prelogin(payload)
            enc = opts.get(0x01, b"\x02")
            if enc and enc[0] in (0x01, 0x03):  # ENCRYPT_ON / ENCRYPT_REQ: we cannot
                self.send_message(P.build_prelogin_response())
                return False
            self.send_message(P.build_prelogin_response())
            ptype, payload = self.read_message()
        if ptype != P.PKT_LOGIN7:
            return False
        login = P.parse_login7(payload)
        if login["tds_version"] < 0x730A0003:
            # TDS <= 7.2 clients need date/time types downgraded to strings: not emulated
            # (as a login failure, 18456 class 14: pymssql keeps the highest-severity login message of the
            # whole process, so a higher class here would mask later login failures' numbers)
            self.send_message(P.message_token(
                18456, "Login failed for user '%s'. (tds_emulator: TDS version 0x%08X is not supported; use "
                "tds_version 7.3 or 7.4)" % (login["user"], login["tds_version"]), state=1, cls=14)
                + P.done(P.DONE_ERROR))
            return False
        self.tds_version = login["tds_version"] if login["tds_version"] in P.TDS_VERSIONS else 0x74000004
        if 512 <= login["packet_size"] <= 32767:
            self.packet_size = login["packet_size"]
        user = login["user"]
        dbname = login["database"]
        srv = self.server
        db = srv._databases.get(dbname.lower()) if dbname else srv._default_db

        def fail(extra=None):
            msg = b""
            if extra is not None:
                msg += P.message_token(extra[0], extra[1], state=1, cls=11)
            msg += P.message_token(18456, "Login failed for user '%s'." % user, state=1, cls=14)
            self.send_message(msg + P.done(P.DONE_ERROR))
            # like SQL Server, leave the closing to the client (closing first can cost it the message text)
            self.sock.settimeout(2)
            with contextlib.suppress(OSError, P.ConnectionClosed, P.ProtocolError):
                while True:
                    P.read_packet(self.sock)
            return False

        if not srv._check_login(user, login["password"]):
            return fail()
        if db is None:
            return fail((4060, 'Cannot open database "%s" requested by the login. The login failed.' % dbname))
        if db.faults.refuse_logins:
            return fail()
        try:
            self.pg = db.connect()
        except psycopg.Error:
            return fail((4060, 'Cannot open database "%s" requested by the login. The login failed.' % db.name))
        self.db = db
        out = bytearray()
        out += P.envchange_str(1, db.name, "master")
        out += P.message_token(5701, "Changed database context to '%s'." % db.name, state=2, cls=0, info=True)
        out += P.envchange_bytes(7, P.COLLATION)
        out += P.envchange_str(2, "us_english")
        out += P.message_token(5703, "Changed language setting to us_english.", state=1, cls=0, info=True)
        out += P.loginack(self.tds_version)
        out += P.envchange_str(4, str(self.packet_size), "4096")
        out += P.done(P.DONE_FINAL)
        self.send_message(bytes(out))
        return True

    # -- batches ----------------------------------------------------------------------------------
    def ctx(self):
        return Context(self.db.name, self.spid, self.trancount, self.rowcount, self.params)

    def done(self, status=P.DONE_FINAL, curcmd=0, rowcount=0):
        """DONE after a statement of a batch, DONEINPROC inside an RPC."""
        return P.done(status, curcmd, rowcount, token=self.done_token)

    def batch(self, payload):
        if self.tds_version >= 0x72000000 and len(payload) >= 4:
            total = struct.unpack_from("<I", payload, 0)[0]
            if 4 <= total <= len(payload):
                payload = payload[total:]
        text = payload.decode("utf-16-le", errors="surrogatepass")
        w = _Writer(self)
        if self.run_text(text, w) is None:
            w.add(P.done(P.DONE_FINAL))
        if self.attn.is_set():
            self.attn.clear()
            w.add(P.done(P.DONE_ATTN))
        w.finish()

    def run_text(self, text, w, in_proc=False):
        """Compile and run one batch of statements into ``w``. Returns None when it held no statement, else
        the number of the error that stopped it (0: none). Inside an RPC (``in_proc``) every statement ends with
        DONE_MORE (RETURNSTATUS and DONEPROC follow) and ``self.params`` are bound."""
        try:
            units = split_statements(tokenize(text))
            # compile the whole batch first, like SQL Server; a statement is translated again before it runs
            # only when the session state it reads may have changed since (a variable such as @@TRANCOUNT or
            # @@ROWCOUNT, or the current database after a USE)
            compiled = [parse_statement(stoks, text, self.ctx()) for stoks in units]
        except TsqlError as e:
            w.add(self.error_tokens(e) + self.done(P.DONE_ERROR | (P.DONE_MORE if in_proc else 0)))
            return e.number
        if not units:
            return None
        failed = 0
        db_at_compile = self.db
        for idx, stoks in enumerate(units):
            more = P.DONE_MORE if in_proc or idx < len(units) - 1 else 0
            if self.attn.is_set():
                break
            try:
                stmt = compiled[idx]
                if self.db is not db_at_compile or any(t.kind == "var" for t in stoks):
                    stmt = parse_statement(stoks, text, self.ctx())
                injected = self.db.faults._match(stmt.source)
                if injected is not None:
                    raise injected
                self.db.faults._wait(stmt.source)
                self.execute(stmt, w, more)
            except (_Dropped, _Cancelled, P.ConnectionClosed):
                if self.dead.is_set():
                    raise _Dropped() from None
                break
            except Exception as e:  # noqa: BLE001 - every failure becomes a SQL Server error token
                if self.attn.is_set() or self.dead.is_set():
                    break
                if isinstance(e, psycopg.Error) and not isinstance(e, psycopg.OperationalError):
                    e = pg_error(e, None)
                if not isinstance(e, TsqlError):
                    e = TsqlError(50000, "tds_emulator: internal error: %s: %s" % (type(e).__name__, e))
                    if self.pg.closed:
                        w.add(self.error(e) + self.done(P.DONE_ERROR))
                        w.finish()
                        raise _Dropped() from None
                w.add(self.error_tokens(e) + self.done(P.DONE_ERROR | (P.DONE_MORE if in_proc else 0)))
                failed = e.number
                break
        return failed

    def error(self, e):
        return P.message_token(e.number, e.message, state=e.state, cls=e.cls)

    def error_tokens(self, e):
        """The error, then ENVCHANGE 10 (rollback) when it rolled the whole transaction back (XACT_ABORT,
        deadlock): clients that track the transaction descriptor (TM requests) learn it is gone."""
        out = self.error(e)
        if self.xact_lost:
            self.xact_lost = False
            out += P.envchange_bytes(10, b"", self._descriptor())
        return out

    # -- transactions ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def statement_scope(self, always=False):
        """Run one statement atomically: a savepoint inside a user transaction, else its own transaction
        (only when ``always``: a single PostgreSQL statement is atomic by itself)."""
        pg = self.pg
        if self.trancount and self.xact_abort:
            # SET XACT_ABORT ON: any error (an attention too) rolls the whole transaction back, as on SQL
            # Server, so no statement savepoint is needed (two PostgreSQL round trips less per statement)
            try:
                yield
            except BaseException as exc:
                self._after_error(exc, savepoint=False)
                raise
        elif self.trancount:
            pg.execute("SAVEPOINT tds_stmt")
            try:
                yield
            except BaseException as exc:
                self._after_error(exc, savepoint=True)
                raise
            else:
                pg.execute("RELEASE SAVEPOINT tds_stmt")
        elif always:
            pg.execute("BEGIN")
            try:
                yield
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    pg.execute("ROLLBACK")
                raise
            else:
                pg.execute("COMMIT")
        else:
            yield

    def _descriptor(self):
        return struct.pack("<Q", self.spid << 32 | self.xact_seq)

    def begin_xact(self, w):
        """BEGIN TRAN / TM_BEGIN_XACT: the outermost one starts the PostgreSQL transaction and announces its
        descriptor (ENVCHANGE 8); nested ones count @@TRANCOUNT."""
        if self.trancount == 0:
            self._pg_exec(lambda: self.pg.execute("BEGIN ISOLATION LEVEL " + self.isolation))
            self.xact_seq = (self.xact_seq + 1) & 0xFFFFFFFF
            w.add(P.envchange_bytes(8, self._descriptor()))
        self.trancount += 1

    def commit_xact(self, w, whole=False):
        """COMMIT TRAN (one level) or TM_COMMIT_XACT (``whole``: the transaction)."""
        if self.trancount == 0:
            raise TsqlError(3902, "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                            state=1, cls=16)
        self.trancount = 0 if whole else self.trancount - 1
        if self.trancount == 0:
            try:
                self._pg_exec(lambda: self.pg.execute("COMMIT"))
            finally:
                w.add(P.envchange_bytes(9, b"", self._descriptor()))

    def rollback_xact(self, w):
        if self.trancount == 0:
            raise TsqlError(3903, "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                            state=1, cls=16)
        self.trancount = 0
        try:
            self._pg_exec(lambda: self.pg.execute("ROLLBACK"))
        finally:
            w.add(P.envchange_bytes(10, b"", self._descriptor()))

    def _after_error(self, exc, savepoint):
        pg = self.pg
        code = getattr(exc, "sqlstate", None)
        whole = self.xact_abort or code in ("40P01", "40001") or (
            isinstance(exc, TsqlError) and exc.number in (1205, 3960))
        if whole:
            with contextlib.suppress(psycopg.Error):
                pg.execute("ROLLBACK")
            self.trancount = 0
            self.xact_lost = True
            return
        try:
            pg.execute("ROLLBACK TO SAVEPOINT tds_stmt")
            pg.execute("RELEASE SAVEPOINT tds_stmt")
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                pg.execute("ROLLBACK")
            self.trancount = 0

    def _pg_exec(self, fn):
        """Run fn() translating PostgreSQL errors."""
        try:
            return fn()
        except psycopg.errors.QueryCanceled as e:
            if self.attn.is_set() or self.dead.is_set():
                raise _Cancelled() from e
            raise pg_error(e, None) from e
        except psycopg.OperationalError as e:
            if self.dead.is_set():
                raise _Dropped() from e
            raise
        except psycopg.Error as e:
            raise pg_error(e, self._constraint_lookup) from e

    def _constraint_lookup(self, pg_con):
        hit = self.db.constraint_names.get(pg_con)
        if hit is None and not self.trancount:
            with contextlib.suppress(psycopg.Error):
                hit = Catalog(self.pg, self.db).constraint(pg_con)
        return hit

    # -- statements -------------------------------------------------------------------------------------
    def execute(self, stmt, w, more):
        k = stmt.kind
        if k == "query":
            try:
                # WITH CHANGE_TRACKING_CONTEXT: the context and the change in one PostgreSQL transaction
                with self.statement_scope(always=getattr(stmt, "ct_context", None) is not None):
                    self._pg_exec(lambda: self.query(stmt, w, more))
            except _Cancelled:
                return
            return
        if k == "set":
            self.set_option(stmt)
            w.add(self.done(more))
            return
        if k == "begin":
            self.begin_xact(w)
            w.add(self.done(more))
            return
        if k == "commit":
            self.commit_xact(w)
            w.add(self.done(more))
            return
        if k == "rollback":
            self.rollback_xact(w)
            w.add(self.done(more))
            return
        if k == "use":
            db = self.server._databases.get(stmt.database.lower())
            if db is None:
                raise TsqlError(911, "Database '%s' does not exist. Make sure that the name is entered correctly."
                                % stmt.database)
            if db is not self.db:
                if self.trancount:
                    raise TsqlError(3902, "tds_emulator: USE inside a transaction is not supported")
                old = self.db
                newpg = db.connect()
                self.pg.close()
                self.pg = newpg
                self.db = db
                w.add(P.envchange_str(1, db.name, old.name))
                w.add(P.message_token(5701, "Changed database context to '%s'." % db.name, state=1, cls=0, info=True))
            w.add(self.done(more))
            return
        if k == "waitfor":
            try:
                with self.statement_scope():
                    self._pg_exec(lambda: self.pg.execute("SELECT pg_sleep(%s)", (stmt.seconds,)))
            except _Cancelled:
                return
            w.add(self.done(more))
            return
        if k == "kill":
            if stmt.spid == self.spid:
                raise TsqlError(6104, "Cannot use KILL to kill your own process.")
            victim = self.server.session(stmt.spid)
            if victim is None:
                raise TsqlError(6106, "Process ID %d is not an active process ID." % stmt.spid)
            victim.kill()
            w.add(self.done(more))
            return
        # DDL
        cat = Catalog(self.pg, self.db)
        fn = {"create_table": cat.create_table, "drop_table": cat.drop_table, "alter_add": cat.alter_add,
              "alter_drop": cat.alter_drop, "alter_column": cat.alter_column, "create_index": cat.create_index,
              "truncate": cat.truncate, "alter_database": cat.alter_database, "ct_table": cat.ct_table,
              "create_schema": lambda s: cat.create_schema(s.name)}.get(k)
        if fn is None:
            raise TsqlError(102, "Incorrect syntax near '%s'." % stmt.source[:20], cls=15)
        try:
            with self.statement_scope(always=True):
                self._pg_exec(lambda: fn(stmt))
        except _Cancelled:
            return
        finally:
            self.db.invalidate()
        w.add(self.done(more))

    def set_option(self, stmt):
        opt, val = stmt.option, stmt.value
        if opt == "BOOL":
            names, on = val
            for n in names:
                if n == "NOCOUNT":
                    self.nocount = on
                elif n == "XACT_ABORT":
                    self.xact_abort = on
                elif n in ("FMTONLY", "NOEXEC", "PARSEONLY") and on:
                    raise TsqlError(102, "Incorrect syntax near '%s'. (tds_emulator: not supported)" % n, cls=15)
        elif opt == "ISOLATION":
            self.isolation = val
            if self.trancount:
                raise TsqlError(102, "tds_emulator: changing the isolation level inside a transaction is not "
                                     "supported", cls=15)
        elif opt == "LOCK_TIMEOUT":
            self._pg_exec(lambda: self.pg.execute(sql.SQL("SET lock_timeout = {}").format(
                sql.Literal("%dms" % max(val, 0)))))
        elif opt == "IDENTITY_INSERT":
            table, on = val
            key = (table[0].lower(), table[1].lower())
            (self.identity_insert.add if on else self.identity_insert.discard)(key)

    def query(self, stmt, w, more):
        pgtext = stmt.pg
        if stmt.cmd == P.CMD_INSERT and (stmt.table[0].lower(), stmt.table[1].lower()) in self.identity_insert:
            pgtext = self._overriding(pgtext)
        cur = self.pg.cursor(binary=True)
        ctx = getattr(stmt, "ct_context", None)
        if ctx is not None:  # the change tracking context of this one statement (schema.sql, ct_set_context)
            value = self.pg.execute("SELECT " + ctx).fetchone()[0]
            if value is None or len(value) > 128:
                raise TsqlError(50000, "tds_emulator: the WITH CHANGE_TRACKING_CONTEXT context must be a non-NULL "
                                       "varbinary(128)")
            self.pg.execute("SELECT tds_meta.ct_set_context(%s)", (bytes(value),))
            self._run(cur, stmt, pgtext)
            self.pg.execute("SELECT tds_meta.ct_set_context(NULL)")
        else:
            self._run(cur, stmt, pgtext)
        if cur.description is None:
            self.rowcount = max(cur.rowcount, 0)
            status = more | (0 if self.nocount else P.DONE_COUNT)
            w.add(self.done(status, stmt.cmd, self.rowcount))
            return
        self._stream(cur, stmt, w, more)

    def _run(self, cur, stmt, pgtext):
        """Run the translated statement. An UPDATE ... FROM (``seek_join``) runs with PostgreSQL's hash and merge
        joins off: its planner hashes a derived table of a thousand rows against a sequential scan of the whole
        target (the table's size in work per statement), where SQL Server seeks the target's key per source row.
        The plan only: the rows updated are the same. A failed statement's rollback (savepoint or transaction)
        undoes the SET; outside a transaction it is reset here."""
        if not getattr(stmt, "seek_join", False):
            cur.execute(pgtext)
            return
        pg = self.pg
        pg.execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
        try:
            cur.execute(pgtext)
        except BaseException:
            if pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    pg.execute("RESET enable_hashjoin; RESET enable_mergejoin")
            raise
        pg.execute("RESET enable_hashjoin; RESET enable_mergejoin")

    @staticmethod
    def _overriding(pgtext):
        # INSERT INTO t (cols) VALUES -> ... OVERRIDING SYSTEM VALUE VALUES
        m = re.search(r"\s(VALUES|SELECT)\s", pgtext)
        if not m:
            return pgtext
        return pgtext[:m.start()] + " OVERRIDING SYSTEM VALUE" + pgtext[m.start():]

    def _result_columns(self, cur, stmt):
        res = cur.pgresult
        desc = cur.description
        refs = [(res.ftable(i), res.ftablecol(i)) for i in range(len(desc))]
        db = self.db
        with db.cache_lock:
            missing = {r[0] for r in refs if r[0] and r not in db.col_cache}
        if missing:
            rows = Catalog(self.pg, db).columns_of(missing)
            with db.cache_lock:
                for relid in missing:
                    db.col_cache.setdefault((relid, -1), None)
                for relid, attnum, name, pg_name, tname, length, prec, scale, nullable in rows:
                    db.col_cache[(relid, attnum)] = (name, pg_name, SqlType(tname, length, prec, scale), nullable)
        cols = []
        convs = []
        for i, col in enumerate(desc):
            info = db.col_cache.get(refs[i]) if refs[i][0] else None
            pgn = col.name
            if info is not None:
                name = info[0] if pgn == info[1] else stmt.aliases.get(pgn, pgn)
                t = info[2]
                nullable = info[3]
            else:
                if pgn in stmt.aliases:
                    name = stmt.aliases[pgn]
                elif pgn in CATALOG_COLUMN_NAMES:
                    name = CATALOG_COLUMN_NAMES[pgn]
                elif refs[i][0]:
                    name = pgn
                else:
                    name = ""
                t = sqltype_from_pg(col)
                nullable = True
            conv = None
            if t.name == "datetimeoffset" and col.type_code == 25:
                conv = dto_from_text
            cols.append([name, t, nullable])
            convs.append(conv)
        return cols, convs

    def _stream(self, cur, stmt, w, more):
        cols, convs = self._result_columns(cur, stmt)
        rows = cur.fetchmany(_FETCH)
        for i, (_name, t, _nullable) in enumerate(cols):
            if t.name == "decimal" and t.scale is None:
                scale = 0
                for r in rows:
                    v = r[i]
                    if isinstance(v, decimal.Decimal) and v.is_finite():
                        scale = max(scale, -v.as_tuple().exponent)
                t.scale = min(scale, 38)
        meta, encoders = P.colmetadata(cols)
        w.add(meta)
        row = P.row_encoder(encoders)
        conv_idx = [(i, c) for i, c in enumerate(convs) if c is not None]
        drop = self.db.faults._take_drop()
        sent = 0
        attn = self.attn
        while rows:
            if conv_idx:
                rows = [list(r) for r in rows]
                for r in rows:
                    for i, c in conv_idx:
                        r[i] = c(r[i])
            if drop is not None and sent + len(rows) > drop:
                rows = rows[:drop - sent]
                w.add(b"".join(map(row, rows)))
                sent += len(rows)
                self._drop_now(w)
            w.add(b"".join(map(row, rows)))
            sent += len(rows)
            if attn.is_set():
                raise _Cancelled()
            rows = cur.fetchmany(_FETCH)
        if drop is not None and sent >= drop:
            self._drop_now(w)
        self.rowcount = sent
        # an INSERT / UPDATE with OUTPUT: its rows are the result set, its DONE is the statement's
        w.add(self.done(more | P.DONE_COUNT, stmt.cmd if getattr(stmt, "output", False) else P.CMD_SELECT, sent))

    def _drop_now(self, w):
        # send what is buffered (rows up to N), then cut the connection
        with contextlib.suppress(_Dropped):
            w._flush(final=False)
            if w.buf:
                self.send_packet(bytes(w.buf), False)
        self.kill()
        raise _Dropped()


class _Cancelled(Exception):
    pass
