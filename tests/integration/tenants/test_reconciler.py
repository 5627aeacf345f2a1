"""The bulk reconciler against the real server: create, idempotence, drift repair, check mode, lock, delete."""

import os
import stat
import threading

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import tenants as T
from ansible_collections.berqenas.platform.plugins.module_utils import validation

pytestmark = pytest.mark.tenants


@pytest.fixture()
def platform_db(pg_cluster, tmp_path):
    db = pg_cluster.create_database("plat_" + os.urandom(3).hex())
    store = T.CredentialStore(str(tmp_path / "creds"))
    conn = pg_cluster.connect(db)
    names = []
    yield conn, db, store, names
    conn.close()
    with pg_cluster.connect() as c:
        c.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(db)))
        for n in names:
            for r in T.role_names(n).values():
                c.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(r)))


def _specs(names, **kw):
    return [T.TenantSpec(n, **kw) for n in names]


def test_create_then_rerun_changes_nothing(platform_db):
    conn, db, store, names = platform_db
    names += ["rc_a", "rc_b", "rc_c"]
    first = T.reconcile(conn, _specs(names), db, store)
    assert first["changed"] and [t["status"] for t in first["tenants"]] == ["created"] * 3
    second = T.reconcile(conn, _specs(names), db, store)
    assert not second["changed"], [t for t in second["tenants"] if t["changed"]]
    assert second["database_actions"] == []
    # credentials: 0600 files in a 0700 directory, never containing { } % #
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    for n in names:
        assert stat.S_IMODE(os.stat(store.path(n)).st_mode) == 0o600
        doc = store.load(n)
        for kind in ("app", "ro"):
            assert not set("{}%#") & set(doc[kind]["password"])
            assert doc[kind]["verifier"].startswith("SCRAM-SHA-256$4096:")
    # the server holds exactly the verifiers we computed client-side
    row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'rc_a_app'").fetchone()
    assert row[0] == store.load("rc_a")["app"]["verifier"]


def test_drift_is_repaired(platform_db):
    conn, db, store, names = platform_db
    names += ["dr_a", "dr_b"]
    T.reconcile(conn, _specs(names), db, store)
    conn.execute("GRANT USAGE ON SCHEMA dr_a TO dr_b_app")          # cross-tenant leak
    conn.execute("ALTER ROLE dr_a_app CONNECTION LIMIT 99")
    conn.execute("ALTER ROLE dr_a_ro IN DATABASE %s RESET statement_timeout" % db)
    conn.execute("ALTER ROLE dr_b_app PASSWORD 'changed-by-hand-123'")
    conn.execute("REVOKE berqenas_tenants FROM dr_b_ro")
    res = T.reconcile(conn, _specs(names), db, store)
    by = {t["name"]: t for t in res["tenants"]}
    assert by["dr_a"]["status"] == "updated" and by["dr_b"]["status"] == "updated"
    assert not conn.execute("SELECT has_schema_privilege('dr_b_app', 'dr_a', 'USAGE')").fetchone()[0]
    assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'dr_a_app'").fetchone()[0] == 10
    assert conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'dr_b_app'").fetchone()[0] == \
        store.load("dr_b")["app"]["verifier"]
    assert not T.reconcile(conn, _specs(names), db, store)["changed"]


def test_check_mode_predicts_and_touches_nothing(platform_db):
    conn, db, store, names = platform_db
    names += ["cm_a"]
    res = T.reconcile(conn, _specs(names), db, store, check_mode=True)
    assert res["changed"] and res["tenants"][0]["status"] == "created"
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'cm_a%'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'cm_a'").fetchone()[0] == 0
    assert not os.path.exists(store.path("cm_a"))


def test_limits_and_settings(platform_db):
    conn, db, store, names = platform_db
    names += ["lim_a"]
    T.reconcile(conn, _specs(names, connection_limit=3, statement_timeout="5s"), db, store)
    assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'lim_a_ro'").fetchone()[0] == 3
    settings = conn.execute("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                            "WHERE r.rolname = 'lim_a_app'").fetchone()[0]
    assert sorted(settings) == ["role=lim_a_owner", "search_path=lim_a", "statement_timeout=5s"]
    # changing a limit is an update, not a re-creation
    res = T.reconcile(conn, _specs(names, connection_limit=4, statement_timeout="5s"), db, store)
    assert res["tenants"][0]["status"] == "updated"
    assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'lim_a_ro'").fetchone()[0] == 4


def test_concurrent_run_waits_then_reports_locked(platform_db, pg_cluster):
    conn, db, store, names = platform_db
    names += ["lk_a"]
    holder = pg_cluster.connect(db)
    holder.execute("SELECT pg_advisory_lock(%s)", (T.LOCK_KEY,))
    try:
        with pytest.raises(T.TenantLocked, match="another run holds the tenant lock"):
            T.reconcile(conn, _specs(names), db, store, lock_timeout=0.5)
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lk_a%'").fetchone()[0] == 0
        # a waiting run proceeds as soon as the lock is released
        done = {}
        t = threading.Thread(target=lambda: done.update(r=T.reconcile(pg_cluster.connect(db), _specs(names), db,
                                                                        store, lock_timeout=10)))
        t.start()
        t.join(0.5)
        assert t.is_alive()
        holder.execute("SELECT pg_advisory_unlock(%s)", (T.LOCK_KEY,))
        t.join(10)
        assert done["r"]["tenants"][0]["status"] == "created"
    finally:
        holder.close()


def test_drop_removes_schema_roles_and_data(platform_db):
    conn, db, store, names = platform_db
    names += ["del_a", "del_b"]
    T.reconcile(conn, _specs(names), db, store)
    conn.execute("CREATE TABLE del_a.t (id int)")
    conn.execute("ALTER TABLE del_a.t OWNER TO del_a_owner")
    T.drop_tenant(conn, "del_a")
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'del\\_a\\_%'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'del_a'").fetchone()[0] == 0
    assert T.tenant_exists(conn, "del_b")
    assert not T.reconcile(conn, _specs(["del_b"]), db, store)["changed"]


@pytest.mark.parametrize("bad", ["Acme", "1acme", "acme-corp", "a" * 41, "", "public", "pg_x", "berqenas",
                                 "berqenas_x", "postgres", "template1", "information_schema", "select", "all",
                                 "ab{{ 6*7 }}cd", "{{ lookup('pipe','id') }}", "acme;drop", "acme\n", "null", "yes"])
def test_bad_names_are_rejected_before_anything(bad):
    with pytest.raises(validation.ValidationError):
        T.TenantSpec(bad)


@pytest.mark.parametrize("field,value", [("connection_limit", "ten"), ("connection_limit", -5),
                                         ("statement_timeout", "30 s; DROP"), ("statement_timeout", "{{ x }}"),
                                         ("app_password", "short"), ("app_password", "has{{ 6*7 }}template"),
                                         ("ro_password", "percent%sign-long-enough")])
def test_bad_options_are_rejected(field, value):
    with pytest.raises(validation.ValidationError):
        T.TenantSpec("goodname", **{field: value})


def test_duplicates_rejected():
    with pytest.raises(validation.ValidationError, match="duplicate"):
        T.validate_specs([T.TenantSpec("dup"), T.TenantSpec("dup")])


def test_given_password_is_used(platform_db, pg_cluster):
    conn, db, store, names = platform_db
    names += ["pw_a"]
    T.reconcile(conn, [T.TenantSpec("pw_a", app_password="Given-Password-123")], db, store)
    conn.execute("GRANT CONNECT ON DATABASE %s TO pw_a_app" % db)  # this test cluster has no pg_hba block
    with pg_cluster.tcp_connect(db, "pw_a_app", "Given-Password-123") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "pw_a_owner"  # SET role = owner at login
