"""The module tests' engine: ``henv`` runs each test against the double AND a real Hasura.

``hasura_target`` (session) is parametrized over ``double`` and ``real``. The real variant needs
- ``BERQENAS_TEST_HASURA_URL`` and ``BERQENAS_TEST_HASURA_ADMIN_SECRET``: the engine and its admin secret;
- ``BERQENAS_TEST_HASURA_PG_URL``: a PostgreSQL URL (as the tests reach it) of the database the engine's sources
  read; its user creates and drops the schemas ``hx_acme`` and ``hx_globex`` there;
- ``BERQENAS_TEST_HASURA_PG_ENV`` (default ``PG_DATABASE_URL``): the variable in the ENGINE's environment holding
  that same database's URL (as the engine reaches it); the tests' sources read it with ``from_env``.
Without them the real variant is skipped naming the variables. The tests add and drop only the sources
``hx_acme``/``hx_globex`` (dropped again when the session ends, with the two schemas).

Both variants are reached through a :class:`RecordingProxy`, so a test proves "no write request" from what the
module sent, and a concurrent writer changes the metadata through the engine's own API. Tests that look inside
the double (its reported version, its tenants' login roles) use ``henv_double`` and say so.
"""

import json
import os
import urllib.error
import urllib.request

import psycopg
import pytest
from psycopg import sql

from tests.support.fixtures_hasura import SECRET_VAR, URL_VAR

from .modrun import run_module
from .recorder import RecordingProxy

PG_URL_VAR = "BERQENAS_TEST_HASURA_PG_URL"
PG_ENV_VAR = "BERQENAS_TEST_HASURA_PG_ENV"
TENANTS = ("hx_acme", "hx_globex")
SCHEMA_TABLES = ("orders", "customers", "invoices")


def reset_schema(t, tables=SCHEMA_TABLES):
    with t.connect() as c:
        if not c.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (t.name,)).fetchone():
            c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(t.name)))  # a real engine's database
        rows = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (t.name,)).fetchall()
        for (n,) in rows:
            c.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(t.name, n)))
        for n in tables:
            c.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, tenant_id text, total numeric, note text)")
                      .format(sql.Identifier(t.name, n)))


class RealTenant:
    """A tenant schema in the database a real engine reaches (one login for both tenants)."""

    def __init__(self, name, pg_url, env):
        info = psycopg.conninfo.conninfo_to_dict(pg_url)
        self.name, self.dsn, self.env = name, pg_url, env
        self.host = info.get("host") or "127.0.0.1"
        self.port = int(info.get("port") or 5432)
        self.user, self.password, self.db = info.get("user"), info.get("password") or "", info.get("dbname")

    def connect(self):
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)


class Target:
    """One engine: ``upstream`` (its own URL), ``proxy`` (what the modules talk to), ``tenants``."""

    def __init__(self, kind, upstream, admin_secret, tenants, double=None):
        self.kind, self.upstream, self.admin_secret, self.tenants, self.double = (
            kind, upstream.rstrip("/"), admin_secret, tenants, double)
        self.proxy = RecordingProxy(self.upstream)

    def _call(self, method, path, body=None):
        headers = {"Content-Type": "application/json"}
        if self.admin_secret:
            headers["X-Hasura-Admin-Secret"] = self.admin_secret
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.upstream + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def api(self, typ, args, version=1, expect=200):
        """A metadata request straight to the engine (not recorded: another writer)."""
        status, body = self._call("POST", "/v1/metadata", {"type": typ, "version": version, "args": args})
        assert expect is None or status == expect, (typ, status, body)
        return body

    def export(self):
        d = self.api("export_metadata", {}, version=2)
        return d["resource_version"], d["metadata"]

    def version(self):
        return self._call("GET", "/v1/version")[1]["version"]

    def reset(self):
        self.proxy.clear()
        if self.double is not None:
            self.double.reset()
            return
        names = {s["name"] for s in self.export()[1].get("sources", [])}
        for n in TENANTS + ("hx_other",):
            if n in names:
                self.api("pg_drop_source", {"name": n, "cascade": True})

    def stop(self):
        self.reset()
        self.proxy.stop()


class Env:
    """A tenant with its source added, and module runners bound to the target (through its recorder)."""

    def __init__(self, target):
        self.target, self.tenants = target, target.tenants
        self.kind, self.double, self.admin_secret = target.kind, target.double, target.admin_secret
        self.export, self.api, self.version = target.export, target.api, target.version

    @property
    def conn(self):
        return {"hasura_url": self.target.proxy.url, "hasura_admin_secret": self.admin_secret}

    # what the modules sent
    @property
    def requests(self):
        return list(self.target.proxy.requests)

    def writes(self):
        return [r["type"] for r in self.target.proxy.writes()]

    def clear(self):
        self.target.proxy.clear()

    @property
    def hooks(self):
        return self.target.proxy.hooks

    def tables_of(self, source):
        src = next(s for s in self.export()[1]["sources"] if s["name"] == source)
        return {"%s.%s" % (t["table"]["schema"], t["table"]["name"]): t for t in src.get("tables", [])}

    def our_sources(self):
        return [s for s in self.export()[1].get("sources", []) if s["name"] in TENANTS + ("hx_other",)]

    def pg_login(self, t):
        return {"login_host": getattr(t, "host", "127.0.0.1"), "login_port": t.port, "login_user": t.user,
                "login_password": t.password, "login_db": t.db}

    def table(self, check=False, diff=False, **args):
        return run_module("hasura_table", dict(self.conn, **args), check, diff)

    def source(self, check=False, diff=False, **args):
        return run_module("hasura_source", dict(self.conn, **args), check, diff)

    def info(self, **args):
        return run_module("hasura_table_info", dict(self.conn, **args))

    def mirror(self, t, check=False, diff=False, **kw):
        return self.table(check, diff, source=t.name, schema=t.name, mirror=True, **dict(self.pg_login(t), **kw))


@pytest.fixture(scope="session")
def double_target(hasura_server, hasura_tenants):
    tgt = Target("double", hasura_server.url, hasura_server.double.admin_secret, hasura_tenants,
                 double=hasura_server.double)
    yield tgt
    tgt.stop()


@pytest.fixture(scope="session")
def real_target():
    url, secret = os.environ.get(URL_VAR), os.environ.get(SECRET_VAR)
    if not url or not secret:
        pytest.skip("real Hasura not configured: set %s and %s" % (URL_VAR, SECRET_VAR))
    pg_url = os.environ.get(PG_URL_VAR)
    if not pg_url:
        pytest.skip("real Hasura: set %s (the database its sources read, as the tests reach it; the engine's "
                    "environment holds its URL in %s, default PG_DATABASE_URL)" % (PG_URL_VAR, PG_ENV_VAR))
    env = os.environ.get(PG_ENV_VAR) or "PG_DATABASE_URL"
    tenants = {n: RealTenant(n, pg_url, env) for n in TENANTS}
    tgt = Target("real", url, secret, tenants)
    tgt.reset()
    yield tgt
    tgt.stop()
    with tenants[TENANTS[0]].connect() as c:
        for n in TENANTS:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(n)))


@pytest.fixture(scope="session", params=["double", "real"])
def hasura_target(request):
    return request.getfixturevalue(request.param + "_target")


def _env(target):
    target.reset()
    e = Env(target)
    for t in target.tenants.values():
        reset_schema(t)
        res = e.source(name=t.name, database_url_env=t.env)
        assert res["changed"] and not res.get("failed"), res
    e.clear()
    return e


@pytest.fixture()
def henv(hasura_target):
    yield _env(hasura_target)
    hasura_target.reset()


@pytest.fixture()
def henv_double(double_target):
    """Double-only: for tests that set the double's state (its reported version) or its tenants' logins."""
    yield _env(double_target)
    double_target.reset()
