"""playbooks/sync_run.yml and sync_status.yml through the orchestrator's runner adapter (ansible-runner)."""

import os
import sys

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

from .emu import target_rows

pytestmark = pytest.mark.sync


@pytest.fixture
def inventory(tmp_path):
    p = tmp_path / "hosts.yml"
    p.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                 "      ansible_python_interpreter: %s\n  children:\n    berqenas_db:\n      hosts:\n"
                 "        localhost: {}\n" % sys.executable)
    return p


def extravars(db, pg_cluster, tenant, tmp_path, **kw):
    p = db.params()
    pw = tmp_path / "remotedb.password"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(p["password"])
    ev = {"berqenas_remotedb": "erp",
          "berqenas_remotedbs": [{"name": "erp", "tenant": tenant.name, "host": p["server"], "port": int(p["port"]),
                                  "user": p["user"], "database": p["database"], "password_file": str(pw),
                                  "tables": ["[dbo].[Orders]"]}],
          "berqenas_db_socket": pg_cluster.host, "berqenas_db_port": pg_cluster.port,
          "berqenas_db_user": pg_cluster.superuser, "berqenas_db_name": tenant.db}
    ev.update(kw)
    return ev


def test_sync_run_check_run_status_and_locked(mssql_db, pg_cluster, tenant, inventory, tmp_path):
    from berqenas_orchestrator import runner

    mssql_db.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, amount money NULL, rv rowversion)")
    mssql_db.execute("INSERT INTO dbo.Orders (id, amount) VALUES (1, 10.5), (2, 20.25), (3, 0)")
    ev = extravars(mssql_db, pg_cluster, tenant, tmp_path)

    r = runner.run_playbook("sync_run.yml", inventory=inventory, extravars=ev, check=True)
    assert r.ok, r.failures
    res = r.data["berqenas_result"]
    assert res["status"] == "ok" and res["tables"][0]["pending"] == 3
    with tenant.connect() as c:
        assert c.execute("SELECT to_regclass(%s)", ('"%s"."Orders"' % tenant.name,)).fetchone()[0] is None

    r = runner.run_playbook("sync_run.yml", inventory=inventory, extravars=ev)
    assert r.ok, r.failures
    t = r.data["berqenas_result"]["tables"][0]
    assert t["inserted"] == 3 and t["target"] == "%s.Orders" % tenant.name
    assert target_rows(tenant, "Orders", "id, amount::text") == [(1, "10.5000"), (2, "20.2500"), (3, "0.0000")]

    r = runner.run_playbook("sync_status.yml", inventory=inventory, extravars=ev)
    assert r.ok, r.failures
    st = [x for x in r.data["berqenas_result"]["tables"] if x["job"] == "erp"]
    assert st and st[0]["source"] == "[dbo].[Orders]" and st[0]["rows_total"] == 3 and st[0]["last_result"] == "ok"
    assert st[0]["watermark"] == t["watermark_to"]

    # another run holds the job's lock: this one reports locked
    holder = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (S.LOCK_CLASS, S.job_lock_id(holder, "erp")))
        r = runner.run_playbook("sync_run.yml", inventory=inventory,
                                extravars=dict(ev, berqenas_sync_lock_timeout=0.5))
    finally:
        holder.close()
    assert not r.ok and r.data["berqenas_result"]["status"] == "locked"
    assert any("another run holds the lock" in f for f in r.failures), r.failures
    # the password never reaches the results
    assert mssql_db.params()["password"] not in repr(r.data) + repr(r.failures)


def test_sync_run_unknown_remotedb(pg_cluster, tenant, inventory):
    from berqenas_orchestrator import runner

    r = runner.run_playbook("sync_run.yml", inventory=inventory, extravars={
        "berqenas_remotedb": "nope", "berqenas_remotedbs": []})
    assert not r.ok and any("no such remote database" in f for f in r.failures), r.failures


def test_sync_run_with_hasura_down_fails_that_step_and_keeps_the_data(mssql_db, pg_cluster, tenant, inventory,
                                                                        tmp_path):
    """A Hasura endpoint is configured but not answering: the mirror step fails clearly, the sync committed."""
    import socket

    from berqenas_orchestrator import runner

    with socket.socket() as s:  # a free loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mssql_db.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, amount money NULL, rv rowversion)")
    mssql_db.execute("INSERT INTO dbo.Orders (id, amount) VALUES (1, 10.5)")
    ev = extravars(mssql_db, pg_cluster, tenant, tmp_path, berqenas_hasura_url="http://127.0.0.1:%d" % port,
                   berqenas_hasura_admin_secret="not-a-secret-the-engine-is-down")
    r = runner.run_playbook("sync_run.yml", inventory=inventory, extravars=ev)
    assert not r.ok
    assert any("Hasura at http://127.0.0.1:%d did not answer" % port in f for f in r.failures), r.failures
    assert r.data["berqenas_result"]["status"] == "ok"
    assert target_rows(tenant, "Orders", "id") == [(1,)]
