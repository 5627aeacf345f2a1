"""Fixtures of the sync tests: a platform database and a tenant of the platform's shape."""

import itertools
import secrets

import psycopg
import pytest
from psycopg import sql

_n = itertools.count(1)


def make_tenant(conn, name, ro_password=None):
    """Tenant NAME: schema NAME owned by NOLOGIN NAME_owner; NAME_app (member) and NAME_ro logins;
    default privileges FOR ROLE NAME_owner grant SELECT on tables to NAME_ro."""
    ident = sql.Identifier
    owner, app, ro = name + "_owner", name + "_app", name + "_ro"
    for r in (owner, app, ro):
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(r)))
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(owner)))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(ident(app), ident(owner)))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(ro), sql.Literal(ro_password or "x")))
    conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(name), ident(owner)))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident(name), ident(ro)))
    conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
        ident(owner), ident(name), ident(ro)))


@pytest.fixture(scope="session")
def sync_platform_db(pg_cluster):
    name = pg_cluster.create_database("bq_sync_platform")
    with pg_cluster.connect(name) as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS berqenas")
        c.execute("REVOKE ALL ON SCHEMA berqenas FROM PUBLIC")
    return name


class Tenant:
    def __init__(self, cluster, db, name, ro_password):
        self.cluster, self.db, self.name, self.ro_password = cluster, db, name, ro_password
        self.owner = name + "_owner"

    def connect(self, autocommit=True):
        return self.cluster.connect(self.db, autocommit=autocommit)

    def rows(self, table, order="1"):
        with self.connect() as c:
            return c.execute(sql.SQL("SELECT * FROM {} ORDER BY " + order).format(
                sql.Identifier(self.name, table))).fetchall()


@pytest.fixture
def tenant(pg_cluster, sync_platform_db):
    name = "t%d_%s" % (next(_n), secrets.token_hex(3))
    pw = secrets.token_urlsafe(12)
    with pg_cluster.connect(sync_platform_db) as c:
        make_tenant(c, name, pw)
    yield Tenant(pg_cluster, sync_platform_db, name, pw)
    with pg_cluster.connect(sync_platform_db) as c:
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        c.execute(sql.SQL("DELETE FROM berqenas.sync_state WHERE target_schema = %s"), (name,)) \
            if c.execute("SELECT to_regclass('berqenas.sync_state')").fetchone()[0] else None
        for r in ("_app", "_ro", "_owner"):
            c.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name + r)))
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name + r)))


@pytest.fixture
def pg_conn(pg_cluster, sync_platform_db):
    conn = psycopg.connect(**pg_cluster.conninfo(sync_platform_db), autocommit=False)
    yield conn
    conn.close()
