"""The metadata double pinned to /work/shared/reference/hasura-metadata-api.md (sections in the test names' docs)."""

import json
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.hasura


def call(srv, body, secret=None, raw=None, headers=None, path="/v1/metadata"):
    h = {"Content-Type": "application/json"}
    if secret is not False:
        h["X-Hasura-Admin-Secret"] = srv.double.admin_secret if secret is None else secret
    h.update(headers or {})
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(srv, path):
    try:
        with urllib.request.urlopen(srv.url + path, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def add_source(srv, t, **kw):
    args = {"name": t.name, "configuration": {"connection_info": {"database_url": {"from_env": t.env}}}}
    args.update(kw)
    return call(srv, {"type": "pg_add_source", "args": args})


def track(srv, source, name, schema=None, **kw):
    args = {"source": source, "table": {"schema": schema or source, "name": name}}
    args.update(kw)
    return call(srv, {"type": "pg_track_table", "args": args})


def export(srv):
    st, body = call(srv, {"type": "export_metadata", "version": 2, "args": {}})
    assert st == 200, body
    return body


@pytest.fixture()
def acme(hasura, hasura_tenants):
    t = hasura_tenants["hx_acme"]
    with t.connect() as c:
        for n in ("orders", "customers", "gone"):
            c.execute("DROP TABLE IF EXISTS hx_acme.%s" % n)
        c.execute("CREATE TABLE hx_acme.orders (id int PRIMARY KEY, tenant_id text, total numeric)")
        c.execute("CREATE TABLE hx_acme.customers (id int PRIMARY KEY, name text)")
    assert add_source(hasura, t) == (200, {"message": "success"})
    return t


def test_auth_is_checked_before_the_body(hasura):
    """§2.2/§2.4: 401 access-denied for a missing or wrong secret, even when the body is not JSON."""
    assert call(hasura, None, secret=False, raw=b"{not json") == (401, {
        "path": "$", "error": "x-hasura-admin-secret/x-hasura-access-key required, but not found",
        "code": "access-denied"})
    assert call(hasura, None, secret="wrong", raw=b"{not json") == (401, {
        "path": "$", "error": "invalid x-hasura-admin-secret/x-hasura-access-key", "code": "access-denied"})
    st, body = call(hasura, None, raw=b"{not json")
    assert st == 400 and body["code"] == "invalid-json"
    assert call(hasura, {"type": "export_metadata", "args": {}}, headers={"X-Hasura-Role": "user"}) == (400, {
        "path": "$.args", "error": "restricted access : admin only", "code": "access-denied"})
    assert hasura.double.requests == []  # nothing of these reached an operation


def test_routes_version_healthz(hasura):
    """§1.1, §1.6: only POST /v1/metadata; GET /v1/version and /healthz without auth."""
    assert get(hasura, "/v1/metadata") == (404, json.dumps(
        {"path": "$", "error": "resource does not exist", "code": "not-found"}))
    st, v = get(hasura, "/v1/version")
    assert st == 200 and json.loads(v)["version"].startswith("v2.")
    assert get(hasura, "/healthz") == (200, "OK")
    st, body = call(hasura, {"type": "frobnicate", "args": {}})
    assert st == 400 and body["code"] == "parse-failed" and "frobnicate" in body["error"]


def test_source_from_env_connects_with_its_own_credentials(hasura, hasura_tenants):
    """§4.11: from_env resolved in the engine's environment; the source must connect; no secret in metadata."""
    t = hasura_tenants["hx_acme"]
    assert add_source(hasura, t) == (200, {"message": "success"})
    st, body = add_source(hasura, t)
    assert (st, body["code"], body["error"]) == (400, "already-exists", 'source with name "hx_acme" already exists')
    md = export(hasura)
    assert t.password not in json.dumps(md)
    assert md["metadata"]["sources"][0]["configuration"]["connection_info"]["database_url"] == {"from_env": t.env}
    # a variable the engine does not have, or credentials that do not log in: invalid-configuration, not added
    st, body = call(hasura, {"type": "pg_add_source", "args": {"name": "nope", "configuration": {
        "connection_info": {"database_url": {"from_env": "BERQENAS_NOT_SET"}}}}})
    assert st == 400 and body["code"] == "invalid-configuration" and "BERQENAS_NOT_SET" in body["error"]
    bad = "postgresql://%s:wrong-password@127.0.0.1:%d/%s" % (t.user, t.port, t.db)
    st, body = call(hasura, {"type": "pg_add_source", "args": {"name": "bad", "configuration": {
        "connection_info": {"database_url": bad}}}})
    assert st == 400 and body["code"] == "invalid-configuration" and "password authentication failed" in body["error"]
    assert [s["name"] for s in export(hasura)["metadata"]["sources"]] == ["hx_acme"]
    assert call(hasura, {"type": "pg_drop_source", "args": {"name": "zz"}})[1]["code"] == "not-exists"
    assert call(hasura, {"type": "pg_drop_source", "args": {"name": "hx_acme"}}) == (200, {"message": "success"})


def test_track_untrack_codes(acme, hasura):
    """§4.2/§4.3/§5: invalid-configuration for a missing table, already-tracked, already-untracked."""
    st, body = track(hasura, "hx_acme", "nope")
    assert st == 400 and body["code"] == "invalid-configuration" and body["path"] == "$.args"
    assert body["error"] == 'Inconsistent object: no such table/view exists in source: "hx_acme.nope"'
    assert body["internal"][0]["name"] == "table hx_acme.nope in source hx_acme"
    assert track(hasura, "hx_acme", "orders") == (200, {"message": "success"})
    st, body = track(hasura, "hx_acme", "orders")
    assert (st, body) == (400, {"path": "$.args", "code": "already-tracked",
                                "error": 'view/table already tracked: "hx_acme.orders"'})
    md = export(hasura)["metadata"]
    assert md["sources"][0]["tables"] == [{"table": {"name": "orders", "schema": "hx_acme"}}]
    untrack = {"type": "pg_untrack_table", "args": {"source": "hx_acme", "table": {"schema": "hx_acme",
                                                                                     "name": "orders"}}}
    assert call(hasura, untrack) == (200, {"message": "success"})
    assert call(hasura, untrack) == (400, {"path": "$.args", "code": "already-untracked",
                                           "error": 'view/table already untracked: "hx_acme.orders"'})
    st, body = track(hasura, "nosuch", "orders")
    assert (st, body["code"], body["error"]) == (400, "not-exists", 'source with name "nosuch" does not exist')


def test_resource_version_and_conflict(acme, hasura):
    """§3: +1 per successful write, none on errors and reads, 409 only after the operation succeeded."""
    v = export(hasura)["resource_version"]
    assert track(hasura, "hx_acme", "orders")[0] == 200
    assert export(hasura)["resource_version"] == v + 1
    assert track(hasura, "hx_acme", "orders")[0] == 400
    assert export(hasura)["resource_version"] == v + 1
    # stale version on an operation that fails: the semantic error wins
    st, body = call(hasura, {"type": "pg_track_table", "resource_version": v,
                             "args": {"source": "hx_acme", "table": {"schema": "hx_acme", "name": "orders"}}})
    assert body["code"] == "already-tracked"
    st, body = call(hasura, {"type": "pg_track_table", "resource_version": v,
                             "args": {"source": "hx_acme", "table": {"schema": "hx_acme", "name": "customers"}}})
    assert (st, body) == (409, {"path": "$", "code": "conflict", "error": "metadata resource version referenced "
                                "(%d) did not match current version" % v})
    st, body = call(hasura, {"type": "pg_track_table", "resource_version": v + 1,
                             "args": {"source": "hx_acme", "table": {"schema": "hx_acme", "name": "customers"}}})
    assert st == 200 and export(hasura)["resource_version"] == v + 2
    # reads ignore a stale version
    assert call(hasura, {"type": "get_inconsistent_metadata", "resource_version": 1, "args": {}})[0] == 200
    # a resource_version that is not an integer fails the envelope's decoding (§1.2), before any operation
    st, body = call(hasura, {"type": "pg_track_table", "resource_version": str(v + 2),
                             "args": {"source": "hx_acme", "table": {"schema": "hx_acme", "name": "invoices"}}})
    assert (st, body["code"], body["path"]) == (400, "parse-failed", "$.resource_version")
    assert export(hasura)["resource_version"] == v + 2


def test_dropped_table_is_inconsistent_and_cannot_be_untracked(acme, hasura):
    """§4.3 quirk, §6, §8: the entry stays, answers already-untracked; replace_metadata removes it."""
    with acme.connect() as c:
        c.execute("CREATE TABLE hx_acme.gone (id int)")
    assert track(hasura, "hx_acme", "gone")[0] == 200
    assert track(hasura, "hx_acme", "orders")[0] == 200
    with acme.connect() as c:
        c.execute("DROP TABLE hx_acme.gone")
    st, inc = call(hasura, {"type": "get_inconsistent_metadata", "args": {}})
    assert inc == {"is_consistent": False, "inconsistent_objects": [{
        "definition": {"name": "gone", "schema": "hx_acme"}, "name": "table hx_acme.gone in source hx_acme",
        "reason": 'Inconsistent object: no such table/view exists in source: "hx_acme.gone"', "type": "table"}]}
    assert get(hasura, "/healthz") == (200, "WARN: inconsistent objects in schema")
    assert get(hasura, "/healthz?strict=true") == (500, "ERROR: inconsistent objects in schema")
    st, body = call(hasura, {"type": "pg_untrack_table", "args": {"source": "hx_acme", "table": {
        "schema": "hx_acme", "name": "gone"}}})
    assert body["code"] == "already-untracked"
    exp = export(hasura)
    assert len(exp["metadata"]["sources"][0]["tables"]) == 2  # still listed
    md = exp["metadata"]
    md["sources"][0]["tables"] = [t for t in md["sources"][0]["tables"] if t["table"]["name"] != "gone"]
    st, body = call(hasura, {"type": "replace_metadata", "version": 2, "resource_version": exp["resource_version"],
                             "args": {"allow_inconsistent_metadata": False, "metadata": md}})
    assert (st, body) == (200, {"is_consistent": True, "inconsistent_objects": []})
    assert [t["table"]["name"] for t in export(hasura)["metadata"]["sources"][0]["tables"]] == ["orders"]
    # reload_metadata counts as a write
    v = export(hasura)["resource_version"]
    assert call(hasura, {"type": "reload_metadata", "args": {}}) == (200, {"message": "success",
                                                                          "is_consistent": True})
    assert export(hasura)["resource_version"] == v + 1


def test_bulk_and_bulk_keep_going(acme, hasura):
    """§4.6: bulk is all-or-nothing with the child's error and path; bulk_keep_going keeps the good ones."""
    v = export(hasura)["resource_version"]
    children = [{"type": "pg_track_table", "args": {"source": "hx_acme", "table": {"schema": "hx_acme",
                                                                                    "name": n}}}
                for n in ("orders", "nope")]
    st, body = call(hasura, {"type": "bulk", "args": children})
    assert st == 400 and body["code"] == "invalid-configuration" and body["path"] == "$.args[1].args"
    assert export(hasura)["resource_version"] == v and export(hasura)["metadata"]["sources"][0]["tables"] == []
    st, body = call(hasura, {"type": "bulk_keep_going", "args": children})
    assert st == 200 and body[0] == {"message": "success"}
    assert body[1]["code"] == "invalid-configuration" and body[1]["path"] == "$.args[1].args"
    assert export(hasura)["resource_version"] == v + 1
    st, body = call(hasura, {"type": "bulk", "args": [children[0] | {"args": {
        "source": "hx_acme", "table": {"schema": "hx_acme", "name": "customers"}}}]})
    assert (st, body) == (200, [{"message": "success"}]) and export(hasura)["resource_version"] == v + 2


def test_pg_track_tables_by_version(acme, hasura):
    """§4.4: warnings, allow_warnings false, all failed, duplicates; absent before v2.26.0."""
    tab = [{"source": "hx_acme", "table": {"schema": "hx_acme", "name": n}} for n in ("orders", "nope")]
    st, body = call(hasura, {"type": "pg_track_tables", "args": {"allow_warnings": False, "tables": tab}})
    assert st == 400 and body["code"] == "metadata-warnings" and body["error"] == "failed due to metadata warnings"
    assert export(hasura)["metadata"]["sources"][0]["tables"] == []
    st, body = call(hasura, {"type": "pg_track_tables", "args": {"tables": tab}})
    assert st == 200 and body["warnings"] == [{
        "code": "track-table-failed", "message": 'Inconsistent object: no such table/view exists in source: '
        '"hx_acme.nope"', "name": "table hx_acme.nope in source hx_acme", "type": "table"}]
    st, body = call(hasura, {"type": "pg_track_tables", "args": {"tables": tab[:1]}})
    assert (st, body["code"], body["error"]) == (400, "invalid-configuration", "all tables failed to track")
    st, body = call(hasura, {"type": "pg_track_tables", "args": {"tables": tab[:1] * 2}})
    assert (st, body["code"], body["path"]) == (400, "bad-request", "$.args.tables")
    hasura.double.version = "v2.25.1"
    try:
        st, body = call(hasura, {"type": "pg_track_tables", "args": {"tables": tab}})
        assert (st, body["code"]) == (400, "parse-failed") and "track_tables" in body["error"]
    finally:
        hasura.double.version = "v2.40.0"


def test_permissions(acme, hasura):
    """§4.5: create, already-exists, drop missing -> bad-request, unknown column -> rejected, export shape."""
    assert track(hasura, "hx_acme", "orders")[0] == 200
    perm = {"source": "hx_acme", "table": {"schema": "hx_acme", "name": "orders"}, "role": "hx_acme_user",
            "permission": {"columns": ["id", "total"], "filter": {"tenant_id": {"_eq": "X-Hasura-Tenant-Id"}}}}
    assert call(hasura, {"type": "pg_create_select_permission", "args": perm}) == (200, {"message": "success"})
    st, body = call(hasura, {"type": "pg_create_select_permission", "args": perm})
    assert (st, body["code"]) == (400, "already-exists")
    st, body = call(hasura, {"type": "pg_create_select_permission", "args": dict(perm, role="admin")})
    assert st == 400
    st, body = call(hasura, {"type": "pg_create_update_permission", "args": dict(
        perm, permission={"columns": ["nosuch"], "filter": {}})})
    assert (st, body["code"]) == (400, "unexpected") and "nosuch" in json.dumps(body["internal"])
    drop = {"source": "hx_acme", "table": {"schema": "hx_acme", "name": "orders"}, "role": "other"}
    assert call(hasura, {"type": "pg_drop_delete_permission", "args": drop}) == (400, {
        "path": "$.args", "code": "bad-request",
        "error": 'delete permission on "hx_acme.orders" for role "other" does not exist'})
    t = export(hasura)["metadata"]["sources"][0]["tables"][0]
    assert t == {"table": {"name": "orders", "schema": "hx_acme"}, "select_permissions": [
        {"role": "hx_acme_user", "permission": perm["permission"]}]}
    assert call(hasura, {"type": "pg_drop_select_permission", "args": dict(drop, role="hx_acme_user")})[0] == 200
    # §7: exported with columns sorted and defaults (allow_aggregations false, null limit) left out
    assert call(hasura, {"type": "pg_create_select_permission", "args": dict(perm, permission={
        "columns": ["total", "id"], "filter": {}, "allow_aggregations": False, "limit": None})})[0] == 200
    assert export(hasura)["metadata"]["sources"][0]["tables"][0]["select_permissions"] == [
        {"role": "hx_acme_user", "permission": {"columns": ["id", "total"], "filter": {}}}]
    assert call(hasura, {"type": "pg_drop_select_permission", "args": dict(drop, role="hx_acme_user")})[0] == 200
    assert export(hasura)["metadata"]["sources"][0]["tables"][0] == {"table": {"name": "orders",
                                                                               "schema": "hx_acme"}}


def test_requests_are_counted(acme, hasura):
    hasura.double.requests.clear()
    export(hasura)
    track(hasura, "hx_acme", "orders")
    track(hasura, "hx_acme", "orders")
    assert hasura.double.request_types() == ["export_metadata", "pg_track_table", "pg_track_table"]
    assert [r["type"] for r in hasura.double.writes()] == ["pg_track_table"]
