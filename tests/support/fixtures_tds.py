"""pytest fixtures for SQL Server sources: the TDS emulator on the harness's PostgreSQL, or a real server.

- ``tds_emulator`` (session): a started TdsEmulator (login ``sa``, random password).
- ``mssql_server`` (session, params ``emulator`` / ``real``): a :class:`MssqlServer`; ``real`` reads
  ``BERQENAS_TEST_MSSQL_DSN`` (``mssql://user:password@host:port/``) and is skipped, naming that variable,
  when it is unset.
- ``mssql_db`` (function): a fresh empty database on ``mssql_server``, dropped afterwards.
- ``emulated_mssql_db`` (function): a fresh database on the emulator only (fault injection, restore).
- ``tds_client`` (params ``pymssql`` / ``pytds``): the driver adapter of tests/support/tds_clients.py.
- ``client_db`` (function): ``mssql_db`` connected to through ``tds_client`` (both servers, both drivers).

See tests/support/tds_emulator/README.md.
"""

import contextlib
import os
import secrets
import urllib.parse
import uuid

import pytest

DSN_VAR = "BERQENAS_TEST_MSSQL_DSN"


class MssqlDatabase:
    def __init__(self, server, name, client=None):
        from tests.support.tds_clients import CLIENTS

        self.server = server
        self.name = name
        self.client = client or CLIENTS["pymssql"]

    def with_client(self, client):
        """The same database, connected to through another driver (tests/support/tds_clients.py)."""
        return MssqlDatabase(self.server, self.name, client)

    def params(self, **overrides):
        p = dict(server=self.server.host, port=str(self.server.port), user=self.server.user,
                 password=self.server.password, database=self.name, tds_version="7.4", login_timeout=10,
                 autocommit=True)
        p.update(overrides)
        return p

    def connect(self, **overrides):
        """A connection of this database's client driver (pymssql unless :meth:`with_client`)."""
        return self.client.connect(self.params(**overrides))

    def execute(self, statement, params=None):
        """Run one batch (autocommit); returns the fetched rows of a result set, else None."""
        with contextlib.closing(self.connect()) as conn:
            cur = conn.cursor()
            cur.execute(statement, params) if params is not None else cur.execute(statement)
            return cur.fetchall() if cur.description else None

    # emulator only
    @property
    def faults(self):
        return self.server.emulator.faults(self.name)

    def simulate_restore(self, dbts=None, discard_newer=False):
        return self.server.emulator.simulate_restore(self.name, dbts, discard_newer)

    def change_tracking_cleanup(self, version=None):
        return self.server.emulator.change_tracking_cleanup(self.name, version)

    def kill_sessions(self):
        return self.server.emulator.kill_sessions(self.name)

    def pg_connect(self):
        """psycopg connection to the backing PostgreSQL database (emulator only; for bulk seeding)."""
        return self.server.emulator.database(self.name).connect()


class MssqlServer:
    def __init__(self, kind, host, port, user, password, emulator=None, pg_cluster=None):
        self.kind = kind
        self.host = host
        self.port = int(port)
        self.user = user
        self.password = password
        self.emulator = emulator
        self.pg_cluster = pg_cluster

    def new_database(self, prefix="src"):
        name = "%s_%s" % (prefix, uuid.uuid4().hex[:10])
        if self.emulator is not None:
            self.pg_cluster.create_database("tds_" + name.lower())
            self.emulator.add_database(name, self.pg_cluster.conninfo("tds_" + name.lower()))
        else:
            self._master("CREATE DATABASE [%s]" % name)
        return MssqlDatabase(self, name)

    def drop_database(self, db):
        if self.emulator is not None:
            self.emulator.remove_database(db.name)
            with self.pg_cluster.connect() as c:
                from psycopg import sql

                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier("tds_" + db.name.lower())))
        else:
            with contextlib.suppress(Exception):
                self._master("ALTER DATABASE [%s] SET SINGLE_USER WITH ROLLBACK IMMEDIATE" % db.name)
            self._master("DROP DATABASE [%s]" % db.name)

    def _master(self, statement):
        import pymssql

        with contextlib.closing(pymssql.connect(server=self.host, port=str(self.port), user=self.user,
                                                password=self.password, database="master", autocommit=True,
                                                tds_version="7.4", login_timeout=10)) as conn:
            conn.cursor().execute(statement)


def real_server_from_env():
    dsn = os.environ.get(DSN_VAR)
    if not dsn:
        pytest.skip("real SQL Server variant: set %s=mssql://user:password@host:port/ to run it" % DSN_VAR)
    u = urllib.parse.urlsplit(dsn)
    if u.scheme not in ("mssql", "sqlserver") or not u.hostname or not u.username:
        pytest.fail("%s must look like mssql://user:password@host:port/" % DSN_VAR)
    return MssqlServer("real", u.hostname, u.port or 1433, urllib.parse.unquote(u.username),
                       urllib.parse.unquote(u.password or ""))


@pytest.fixture(scope="session")
def tds_emulator(pg_cluster):
    from tests.support.tds_emulator import TdsEmulator

    emu = TdsEmulator(user="sa", password=secrets.token_urlsafe(18))
    emu.start()
    yield emu
    emu.stop()


def _emulated_server(emu, pg_cluster):
    return MssqlServer("emulator", emu.host, emu.port, emu.user, emu.password, emulator=emu, pg_cluster=pg_cluster)


@pytest.fixture(scope="session", params=["emulator", "real"])
def mssql_server(request):
    if request.param == "real":
        return real_server_from_env()
    return _emulated_server(request.getfixturevalue("tds_emulator"), request.getfixturevalue("pg_cluster"))


@pytest.fixture
def mssql_db(mssql_server):
    db = mssql_server.new_database()
    yield db
    mssql_server.drop_database(db)


@pytest.fixture
def emulated_mssql_db(tds_emulator, pg_cluster):
    server = _emulated_server(tds_emulator, pg_cluster)
    db = server.new_database()
    yield db
    server.drop_database(db)


@pytest.fixture(params=["pymssql", "pytds"])
def tds_client(request):
    from tests.support.tds_clients import CLIENTS

    return CLIENTS[request.param]


@pytest.fixture
def client_db(mssql_db, tds_client):
    return mssql_db.with_client(tds_client)
