import pytest

from .modrun import run_module

SCHEMA_TABLES = ("orders", "customers", "invoices")


def reset_schema(t, tables=SCHEMA_TABLES):
    with t.connect() as c:
        rows = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (t.name,)).fetchall()
        for (n,) in rows:
            c.execute('DROP TABLE IF EXISTS "%s"."%s" CASCADE' % (t.name, n))
        for n in tables:
            c.execute('CREATE TABLE "%s"."%s" (id int PRIMARY KEY, tenant_id text, total numeric, note text)'
                      % (t.name, n))


class Env:
    """A tenant with its source added, and module runners bound to the double."""

    def __init__(self, srv, tenants, pg_cluster):
        self.srv, self.tenants, self.pg = srv, tenants, pg_cluster

    @property
    def conn(self):
        return {"hasura_url": self.srv.url, "hasura_admin_secret": self.srv.double.admin_secret}

    def pg_login(self, t):
        return {"login_host": "127.0.0.1", "login_port": t.port, "login_user": t.user, "login_password": t.password,
                "login_db": t.db}

    def table(self, check=False, diff=False, **args):
        return run_module("hasura_table", dict(self.conn, **args), check, diff)

    def source(self, check=False, diff=False, **args):
        return run_module("hasura_source", dict(self.conn, **args), check, diff)

    def info(self, **args):
        return run_module("hasura_table_info", dict(self.conn, **args))

    def mirror(self, t, check=False, diff=False, **kw):
        return self.table(check, diff, source=t.name, schema=t.name, mirror=True, **dict(self.pg_login(t), **kw))


@pytest.fixture()
def henv(hasura, hasura_tenants, pg_cluster):
    e = Env(hasura, hasura_tenants, pg_cluster)
    for t in hasura_tenants.values():
        reset_schema(t)
        res = e.source(name=t.name, database_url_env=t.env)
        assert res["changed"] and not res.get("failed"), res
    hasura.double.requests.clear()
    return e
