"""module_utils/hasura.py: the pure difference logic and the client's error mapping (no HTTP, no server)."""

import json

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H

pytestmark = pytest.mark.unit

SEL = {"columns": ["total", "id"], "filter": {"tenant_id": {"_eq": "X-Hasura-Tenant-Id"}}}


def spec(name, **kw):
    return H.TableSpec.from_param(dict(name=name, **kw), "acme")


def exported(tables):
    return {"name": "acme", "tables": tables}


def test_normalize_config_treats_missing_null_and_empty_alike():
    assert H.normalize_config(None) == H.normalize_config({}) == H.normalize_config(
        {"custom_root_fields": {}, "column_config": {}, "custom_column_names": {}, "comment": None}) == {}
    a = H.normalize_config({"custom_column_names": {"tenant_id": "tenantId"}})
    b = H.normalize_config({"column_config": {"tenant_id": {"custom_name": "tenantId"}},
                            "custom_column_names": {"tenant_id": "tenantId"}})
    assert a == b == {"column_config": {"tenant_id": {"custom_name": "tenantId"}}}
    assert H.normalize_config({"custom_root_fields": {"select": {"name": "orders"}}}) == {
        "custom_root_fields": {"select": "orders"}}


def test_permission_normalization_sorts_columns_and_drops_defaults():
    assert H.normalize_permission("select", dict(SEL, allow_aggregations=False, limit=None)) == {
        "columns": ["id", "total"], "filter": SEL["filter"]}
    assert H.normalize_permission("insert", {"columns": "*"}) == {"columns": "*", "check": {}}


def test_plan_tracks_missing_and_leaves_equal_alone():
    cur = H.current_tables(exported([{"table": {"schema": "acme", "name": "orders"}}]))
    p = H.plan("acme", cur, [spec("orders"), spec("customers", custom_name="Customer")])
    assert p.actions == ["track acme.customers in source acme"]
    assert p.ops == [{"type": "pg_track_table", "args": {"source": "acme", "table": {"schema": "acme",
                                                                                       "name": "customers"},
                                                           "configuration": {"custom_name": "Customer"}}}]
    assert not H.plan("acme", cur, [spec("orders")]).changed


def test_plan_permissions_replace_drop_create_and_leave_alone():
    cur = H.current_tables(exported([{"table": {"schema": "acme", "name": "orders"}, "select_permissions": [
        {"role": "u", "permission": {"columns": ["id", "total"], "filter": SEL["filter"]}}],
        "delete_permissions": [{"role": "old", "permission": {"filter": {}}}]}]))
    same = spec("orders", permissions=[{"role": "u", "select": SEL}])
    p = H.plan("acme", cur, [same])
    assert p.actions == ["drop delete permission of old on acme.orders"]
    assert [o["type"] for o in p.ops] == ["pg_drop_delete_permission"]
    changed = spec("orders", permissions=[{"role": "u", "select": dict(SEL, limit=5)}])
    assert [o["type"] for o in H.plan("acme", cur, [changed]).ops] == [
        "pg_drop_delete_permission", "pg_drop_select_permission", "pg_create_select_permission"]
    assert not H.plan("acme", cur, [spec("orders")]).changed  # permissions omitted: left alone


def test_plan_mirror_removes_dropped_through_replace_and_untracks_consistent():
    cur = H.current_tables(exported([{"table": {"schema": "acme", "name": n}} for n in ("a", "gone", "stale")]
                                    + [{"table": {"schema": "other", "name": "x"}}]))
    p = H.plan("acme", cur, [], inconsistent={("acme", "gone")}, mirror_schema="acme",
               catalog={("acme", "a"), ("acme", "new"), ("other", "y")})
    assert p.remove_inconsistent == [("acme", "gone")]
    assert [(o["type"], o["args"]["table"]["name"]) for o in p.ops] == [("pg_track_table", "new"),
                                                                         ("pg_untrack_table", "stale")]
    md = {"version": 3, "sources": [dict(exported([{"table": {"schema": "acme", "name": n}}
                                                   for n in ("a", "gone", "stale")]), kind="postgres")]}
    body = H.write_request(p, md, "acme", 7, [{"name": "table y in source other"}])
    assert body["type"] == "replace_metadata" and body["resource_version"] == 7 and body["version"] == 2
    assert body["args"]["allow_inconsistent_metadata"] is True
    assert [t["table"]["name"] for t in body["args"]["metadata"]["sources"][0]["tables"]] == ["a", "new"]
    assert md["sources"][0]["tables"][1]["table"]["name"] == "gone"  # the export is not mutated


def test_write_request_forms_by_server_version():
    p = H.plan("acme", {}, [spec("a"), spec("b", permissions=[{"role": "u", "select": SEL}])])
    new = H.write_request(p, {}, "acme", 3, [], "v2.26.0")
    assert new["type"] == "bulk" and new["resource_version"] == 3
    assert [c["type"] for c in new["args"]] == ["pg_track_tables", "pg_create_select_permission"]
    assert new["args"][0]["args"]["allow_warnings"] is False and len(new["args"][0]["args"]["tables"]) == 2
    old = H.write_request(p, {}, "acme", 3, [], "v2.25.9")
    assert [c["type"] for c in old["args"]] == ["pg_track_table", "pg_track_table", "pg_create_select_permission"]


@pytest.mark.parametrize("bad,msg", [
    ({"name": "t", "custom_name": "1x"}, "not a GraphQL name"),
    ({"name": "t", "custom_root_fields": {"nope": "x"}}, "unknown custom_root_fields"),
    ({"name": "t", "permissions": [{"role": "admin", "select": SEL}]}, "admin"),
    ({"name": "t", "permissions": [{"role": "u", "select": {"columns": "*"}, "bogus": {}}]}, "unknown keys"),
    ({"name": "t", "permissions": [{"role": "u", "select": {"columns": "*", "filter": {
        "a": {"_eq": "X-Hasura-Bad Name"}}}}]}, "session variable"),
    ({"name": "t", "state": "gone"}, "state must be"),
    ({"name": ""}, "PostgreSQL name"),
])
def test_bad_specs_are_refused(bad, msg):
    with pytest.raises(H.HasuraError, match=msg):
        H.TableSpec.from_param(bad, "acme")


def fake_transport(answers, seen):
    def transport(method, url, data, headers, timeout):
        seen.append((method, url, json.loads(data) if data else None, dict(headers)))
        status, body = answers.pop(0)
        return status, json.dumps(body).encode() if not isinstance(body, bytes) else body
    return transport


def test_client_maps_errors_and_never_leaks_the_secret():
    seen = []
    c = H.Client("http://127.0.0.1:1", "s3cret", fake_transport([
        (401, {"path": "$", "code": "access-denied", "error": "invalid x-hasura-admin-secret/x-hasura-access-key"}),
        (409, {"path": "$", "code": "conflict", "error": "metadata resource version referenced (1) did not match"}),
        (0, b"connection refused for s3cret"),
    ], seen))
    with pytest.raises(H.HasuraError, match="refused the admin secret") as e:
        c.export()
    assert e.value.status == 401
    with pytest.raises(H.HasuraConflict):
        c.metadata({"type": "bulk", "args": []}, write=True)
    with pytest.raises(H.HasuraError, match="did not answer") as e:
        c.export()
    assert "s3cret" not in str(e.value)
    assert seen[0][3]["X-Hasura-Admin-Secret"] == "s3cret" and seen[0][2]["version"] == 2
    with pytest.raises(H.HasuraError, match="http"):
        H.Client("ftp://x", "", None)


def test_run_reconcile_retries_a_conflict_by_rereading():
    src = {"name": "acme", "kind": "postgres", "tables": []}
    md = {"version": 3, "sources": [src]}
    seen = []
    answers = [(200, {"resource_version": 4, "metadata": md}), (200, {"inconsistent_objects": []}),
               (409, {"path": "$", "code": "conflict", "error": "stale"}),
               (200, {"resource_version": 5, "metadata": md}), (200, {"inconsistent_objects": []}),
               (200, {"message": "success"})]
    c = H.Client("http://127.0.0.1:1", "", fake_transport(answers, seen))
    res = H.run_reconcile(c, "acme", [spec("orders")])
    assert res["attempts"] == 2 and res["resource_version"] == 6 and c.writes == 2
    assert [s[2].get("resource_version") for s in seen if s[2]["type"] == "pg_track_table"] == [4, 5]
    assert "X-Hasura-Admin-Secret" not in seen[0][3]  # no secret configured: no header
