"""pytest fixtures for Hasura: the metadata double on 127.0.0.1 and tenants whose sources it connects to.

- ``hasura_server`` (session): a started :class:`HasuraDoubleServer` with a random admin secret.
- ``hasura`` (function): the same server, its metadata reset (no sources, resource_version 1, no requests).
- ``hasura_tenants`` (session): two tenants (``hx_acme``, ``hx_globex``) made by the tenant reconciler in a
  platform database of ``pg_cluster``; each has ``dsn`` (its own ``<tenant>_app`` login over TCP) and ``env``
  (the variable the engine reads it from, set in the double's environment; never in metadata).

A real engine (``BERQENAS_TEST_HASURA_URL`` and friends) is reached through ``hasura_target`` in
tests/integration/hasura/conftest.py.
"""

import os
import secrets
import shutil
import tempfile

import pytest

URL_VAR = "BERQENAS_TEST_HASURA_URL"
SECRET_VAR = "BERQENAS_TEST_HASURA_ADMIN_SECRET"


class TenantSource:
    def __init__(self, name, db, user, password, port):
        self.name, self.db, self.user, self.password, self.port = name, db, user, password, port
        self.env = "BERQENAS_%s_DATABASE_URL" % name.upper()
        self.dsn = "postgresql://%s:%s@127.0.0.1:%d/%s" % (user, password, port, db)

    def connect(self):
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def hasura_server():
    from tests.support.hasura_double import HasuraDoubleServer

    srv = HasuraDoubleServer(admin_secret="hs-" + secrets.token_urlsafe(24))
    yield srv
    srv.stop()


@pytest.fixture()
def hasura(hasura_server):
    hasura_server.double.reset()
    yield hasura_server
    hasura_server.double.reset()


@pytest.fixture(scope="session")
def hasura_tenants(pg_cluster, hasura_server):
    import psycopg
    from ansible_collections.berqenas.platform.plugins.module_utils import tenants as T

    db = pg_cluster.create_database("hasura_plat")
    store_dir = tempfile.mkdtemp(prefix="bq-hx-creds-")
    store = T.CredentialStore(os.path.join(store_dir, "c"))
    names = ["hx_acme", "hx_globex"]
    with pg_cluster.connect(db) as conn:
        T.reconcile(conn, [T.TenantSpec(n) for n in names], db, store)
    out = {}
    for n in names:
        doc = store.load(n)
        out[n] = TenantSource(n, db, doc["app"]["user"], doc["app"]["password"], pg_cluster.port)
        hasura_server.double.environment[out[n].env] = out[n].dsn
    yield out
    with pg_cluster.connect() as c:
        c.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(db)))
        for n in names:
            for r in T.role_names(n).values():
                c.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(r)))
    shutil.rmtree(store_dir, ignore_errors=True)
