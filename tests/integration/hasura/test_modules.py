"""hasura_table / hasura_source / hasura_table_info against the real PostgreSQL and each engine of ``henv``:
the double, and a real Hasura when BERQENAS_TEST_HASURA_URL (+ _ADMIN_SECRET, _PG_URL) is set (see conftest).
What a test asserts about requests is what the module sent (the recorder in front of the engine); tests on
``henv_double`` are double-only and say why."""

import json
import threading

import pytest

pytestmark = pytest.mark.hasura

PERM = [{"role": "hx_acme_user", "select": {"columns": ["id", "total"],
                                            "filter": {"tenant_id": {"_eq": "X-Hasura-Tenant-Id"}}, "limit": 50}}]


def writes(henv):
    return henv.writes()


def tables_of(henv, source):
    return henv.tables_of(source)


def rv(henv):
    return henv.export()[0]


def test_track_is_idempotent_one_write(henv):
    t = henv.tenants["hx_acme"]
    args = dict(source=t.name, schema=t.name, tables=[
        {"name": "orders", "custom_name": "Order", "custom_root_fields": {"select": "orders",
                                                                          "select_by_pk": "order"},
         "column_config": {"tenant_id": {"custom_name": "tenantId"}}, "permissions": PERM},
        "customers"])
    res = henv.table(**args)
    assert res["changed"] and not res.get("failed"), res
    assert writes(henv) == ["bulk"] and res["write_requests"] == 1
    assert res["tracked"] == ["hx_acme.customers", "hx_acme.orders"]
    got = tables_of(henv, t.name)
    assert got["hx_acme.orders"]["configuration"]["custom_name"] == "Order"
    assert got["hx_acme.orders"]["configuration"]["custom_root_fields"] == {"select": "orders",
                                                                            "select_by_pk": "order"}
    assert got["hx_acme.orders"]["select_permissions"] == [{"role": "hx_acme_user", "permission": {
        "columns": ["id", "total"], "filter": {"tenant_id": {"_eq": "X-Hasura-Tenant-Id"}}, "limit": 50}}]
    # the bulk carried the resource_version it read
    assert henv.target.proxy.writes()[0]["resource_version"] == res["resource_version"] - 1
    assert rv(henv) == res["resource_version"]
    henv.clear()
    again = henv.table(**args)
    assert not again["changed"] and again["actions"] == [] and again["write_requests"] == 0, again
    assert writes(henv) == [] and rv(henv) == res["resource_version"]
    # a changed permission: drop + create in one bulk
    args["tables"][0]["permissions"] = [dict(PERM[0], select=dict(PERM[0]["select"], limit=10))]
    res = henv.table(diff=True, **args)
    assert res["changed"] and writes(henv) == ["bulk"]
    assert res["actions"] == ["replace select permission of hx_acme_user on hx_acme.orders"]
    assert res["diff"]["before"]["tables"]["hx_acme.orders"]["permissions"]["hx_acme_user"]["select"]["limit"] == 50
    assert res["diff"]["after"]["tables"]["hx_acme.orders"]["permissions"]["hx_acme_user"]["select"]["limit"] == 10


def test_untrack_is_idempotent(henv):
    t = henv.tenants["hx_acme"]
    assert henv.table(source=t.name, schema=t.name, tables=["orders", "customers"])["changed"]
    henv.clear()
    res = henv.table(source=t.name, schema=t.name, tables=[{"name": "orders", "state": "absent"}])
    assert res["changed"] and res["actions"] == ["untrack hx_acme.orders in source hx_acme"], res
    assert writes(henv) == ["pg_untrack_table"] and res["tracked"] == ["hx_acme.customers"]
    henv.clear()
    res = henv.table(source=t.name, schema=t.name, tables=[{"name": "orders", "state": "absent"}])
    assert not res["changed"] and writes(henv) == []


def test_missing_table_is_a_clear_error_and_nothing_changes(henv):
    t = henv.tenants["hx_acme"]
    before = rv(henv)
    res = henv.table(source=t.name, schema=t.name, tables=["orders", "nope"])
    assert res.get("failed"), res
    assert "hx_acme.nope" in res["msg"] and "no such table/view exists" in res["msg"], res["msg"]
    assert rv(henv) == before and tables_of(henv, t.name) == {}


def test_bulk_without_pg_track_tables_on_older_servers(henv_double):
    """Double-only: a real engine cannot be made to report an older version."""
    henv = henv_double
    t = henv.tenants["hx_acme"]
    henv.double.version = "v2.20.0"
    try:
        res = henv.table(source=t.name, schema=t.name, tables=["orders", "customers"])
    finally:
        henv.double.version = "v2.40.0"
    assert res["changed"], res
    assert writes(henv) == ["bulk"]
    assert set(tables_of(henv, t.name)) == {"hx_acme.orders", "hx_acme.customers"}


def test_mirror_tracks_all_and_cleans_a_dropped_table(henv):
    t = henv.tenants["hx_acme"]
    res = henv.mirror(t, default_permissions=[{"role": "hx_acme_user", "select": {"columns": "*", "filter": {}}}])
    assert res["changed"] and res["tracked"] == ["hx_acme.customers", "hx_acme.invoices", "hx_acme.orders"], res
    assert writes(henv) == ["bulk"]
    henv.clear()
    again = henv.mirror(t, default_permissions=[{"role": "hx_acme_user", "select": {"columns": "*",
                                                                                    "filter": {}}}])
    assert not again["changed"] and writes(henv) == [], again
    # an unrelated inconsistent object in another source must survive the cleanup
    g = henv.tenants["hx_globex"]
    assert henv.table(source=g.name, schema=g.name, tables=["orders"])["changed"]
    with g.connect() as c:
        c.execute("DROP TABLE hx_globex.orders")
    with t.connect() as c:
        c.execute("DROP TABLE hx_acme.invoices")
        c.execute("CREATE TABLE hx_acme.shipments (id int PRIMARY KEY)")
    henv.clear()
    res = henv.mirror(t, diff=True)
    assert res["changed"], res
    assert sorted(res["actions"]) == ["remove hx_acme.invoices (dropped in PostgreSQL) from source hx_acme",
                                      "track hx_acme.shipments in source hx_acme"]
    assert writes(henv) == ["replace_metadata"]
    assert set(tables_of(henv, t.name)) == {"hx_acme.customers", "hx_acme.orders", "hx_acme.shipments"}
    assert "hx_globex.orders" in tables_of(henv, g.name)  # still there, still inconsistent
    assert tables_of(henv, t.name)["hx_acme.orders"]["select_permissions"][0]["role"] == "hx_acme_user"
    info = henv.info()
    assert [o["name"] for o in info["inconsistent_objects"] if " in source hx_" in o["name"]] == [
        "table hx_globex.orders in source hx_globex"]
    henv.clear()
    assert not henv.mirror(t)["changed"] and writes(henv) == []


def test_concurrent_writer_409_is_survived(henv):
    t = henv.tenants["hx_acme"]
    fired = threading.Event()

    def other_writer(body):
        # the first write of this run finds the metadata changed by someone else (a track of invoices)
        if body.get("type") != "export_metadata" and body.get("resource_version") and not fired.is_set():
            fired.set()
            henv.api("pg_track_table", {"source": t.name, "table": {"name": "invoices", "schema": t.name}})

    henv.hooks.append(other_writer)
    res = henv.table(source=t.name, schema=t.name, tables=["orders", "customers"])
    assert fired.is_set() and res.get("changed") and res["attempts"] == 2, res
    sent = [(r["type"], r["wrote"]) for r in henv.requests]
    assert sent.count(("export_metadata", False)) == 2 and sent.count(("pg_track_tables", False)) == 1  # the 409
    assert sent.count(("pg_track_tables", True)) == 1
    assert set(tables_of(henv, t.name)) == {"hx_acme.orders", "hx_acme.customers", "hx_acme.invoices"}


def test_concurrent_writer_that_tracked_the_same_table(henv):
    """Hasura answers already-tracked before a 409: the module re-reads, sees the move, and converges."""
    t = henv.tenants["hx_acme"]
    done = []

    def other_writer(body):
        if body.get("resource_version") and not done:
            done.append(body["type"])
            henv.api("pg_track_table", {"source": t.name, "table": {"name": "customers", "schema": t.name}})

    henv.hooks.append(other_writer)
    res = henv.table(source=t.name, schema=t.name, tables=["orders", "customers"])
    assert done and res.get("changed") and res["actions"] == ["track hx_acme.orders in source hx_acme"], res
    assert set(tables_of(henv, t.name)) == {"hx_acme.orders", "hx_acme.customers"}


def test_wrong_admin_secret_is_a_clear_error(henv):
    t = henv.tenants["hx_acme"]
    for mod in (henv.table, henv.source, henv.info):
        kw = {"source": t.name, "tables": ["orders"]} if mod == henv.table else \
            {"name": t.name, "database_url_env": t.env} if mod == henv.source else {}
        res = mod(**dict(kw, hasura_admin_secret="not-the-secret"))
        assert res.get("failed") and "refused the admin secret" in res["msg"], res
        assert "not-the-secret" not in json.dumps(res)
    assert writes(henv) == []


def test_check_mode_sends_no_write(henv):
    t = henv.tenants["hx_acme"]
    res = henv.table(check=True, diff=True, source=t.name, schema=t.name, tables=["orders"])
    assert res["changed"] and res["tracked"] == ["hx_acme.orders"], res
    assert res["diff"]["after"]["tables"] == {"hx_acme.orders": {}} and res["diff"]["before"]["tables"] == {}
    res = henv.mirror(t, check=True)
    assert res["changed"] and len(res["actions"]) == 3
    res = henv.source(check=True, name="hx_other", database_url_env="BERQENAS_HX_OTHER_DATABASE_URL")
    assert res["changed"] and res["actions"] == ["add source hx_other"]
    assert writes(henv) == [] and henv.requests and all(not r["wrote"] for r in henv.requests)


def test_source_idempotent_update_and_absent(henv):
    t = henv.tenants["hx_acme"]
    res = henv.source(name=t.name, database_url_env=t.env)
    assert not res["changed"] and writes(henv) == []
    res = henv.source(name=t.name, database_url_env=t.env, pool_settings={"max_connections": 5}, diff=True)
    assert res["changed"] and res["actions"] == ["update source hx_acme"] and writes(henv) == ["pg_add_source"]
    assert not henv.source(name=t.name, database_url_env=t.env, pool_settings={"max_connections": 5})["changed"]
    res = henv.source(name=t.name, database_url_env="lower-case")
    assert res.get("failed") and "environment variable name" in res["msg"]
    assert henv.source(name=t.name, state="absent")["changed"]
    assert not henv.source(name=t.name, state="absent")["changed"]
    assert [s["name"] for s in henv.our_sources()] == ["hx_globex"]


def test_info_reports_tables_permissions_inconsistencies(henv):
    t = henv.tenants["hx_acme"]
    henv.table(source=t.name, schema=t.name, tables=[{"name": "orders", "permissions": PERM}])
    info = henv.info(source=t.name)
    assert info["version"] == henv.version() and info["version"].startswith("v2")
    assert info["health"]["ok"] and info["is_consistent"], info
    assert info["sources"] == [{"name": "hx_acme", "database_url_env": t.env, "tables": {"hx_acme.orders": {
        "consistent": True, "permissions": {"hx_acme_user": {"select": {
            "columns": ["id", "total"], "filter": {"tenant_id": {"_eq": "X-Hasura-Tenant-Id"}}, "limit": 50}}}}}}]


def test_bad_input_rejected_before_any_request(henv):
    t = henv.tenants["hx_acme"]
    for tables, expect in (
        ([{"name": "orders", "custom_name": "not a name"}], "not a GraphQL name"),
        ([{"name": "orders", "custom_root_fields": {"selekt": "x"}}], "unknown custom_root_fields"),
        ([{"name": "orders", "permissions": [{"role": "admin", "select": {"columns": "*", "filter": {}}}]}],
         "admin has every permission"),
        ([{"name": "orders", "permissions": [{"role": "r", "select": {"columns": [], "filter": {}}}]}],
         "columns must be"),
        ([{"name": "orders", "permissions": [{"role": "r", "select": {"columns": "*", "filter": "x"}}]}],
         "boolean expression"),
        (["orders", "orders"], "listed twice"),
    ):
        res = henv.table(source=t.name, schema=t.name, tables=tables)
        assert res.get("failed") and expect in res["msg"], (tables, res["msg"])
    assert [r for r in henv.requests if r["type"] != "export_metadata"
            and r["type"] != "get_inconsistent_metadata"] == []


def test_secrets_never_in_results(henv):
    t = henv.tenants["hx_acme"]
    secret = henv.admin_secret
    outs = [henv.source(name=t.name, database_url_env=t.env, diff=True),
            henv.mirror(t, diff=True), henv.info(), henv.table(source=t.name, tables=["x"])]
    for o in outs:
        text = json.dumps(o)
        assert secret not in text, o
        assert not t.password or t.password not in text, o  # a real engine's test URL may use peer auth
    assert not t.password or t.password not in json.dumps(henv.export()[1])


def test_each_tenant_role_has_permissions_only_in_its_own_source(henv):
    """Isolation in the exported metadata: every permission of a source belongs to that tenant's roles and
    each source connects through its tenant's environment variable."""
    for t in henv.tenants.values():
        res = henv.mirror(t, default_permissions=[{"role": t.name + "_user", "select": {"columns": "*",
                                                                                        "filter": {}}}])
        assert res["changed"], res
    sources = henv.our_sources()
    assert {s["name"] for s in sources} == set(henv.tenants)
    for s in sources:
        t = henv.tenants[s["name"]]
        assert s["configuration"]["connection_info"]["database_url"] == {"from_env": t.env}
        assert s["tables"] and all(tb["table"]["schema"] == t.name for tb in s["tables"])
        roles = {p["role"] for tb in s["tables"] for k in ("select", "insert", "update", "delete")
                 for p in tb.get(k + "_permissions", [])}
        assert roles == {t.name + "_user"}


def test_tenant_login_and_token_reach_only_its_own_tenant(henv_double):
    """Double-only: the double's tenants are made by the tenant reconciler (each source's variable holds its own
    ``<tenant>_app`` login); a real engine's test database has one login for both schemas. A tenant's token can
    only carry that tenant's roles, so no role of acme can reach globex's tables."""
    from berqenas_orchestrator import jwt_keys as J

    henv = henv_double
    assert henv.double.environment[henv.tenants["hx_acme"].env] == henv.tenants["hx_acme"].dsn
    # the engine's connection for hx_acme is the hx_acme_app login: it cannot read hx_globex's rows
    import psycopg

    with henv.tenants["hx_acme"].connect() as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("SELECT * FROM hx_globex.orders")
    k = J.generate()
    claims = J.verify(J.issue([k], "hx_acme")["token"], [k])[J.DEFAULT_NAMESPACE]
    assert claims["x-hasura-allowed-roles"] == ["hx_acme_user"]
    with pytest.raises(J.KeyError_):
        J.issue([k], "hx_acme", "hx_globex_user")
