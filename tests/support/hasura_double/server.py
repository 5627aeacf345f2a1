"""An HTTP double of the Hasura GraphQL Engine v2 metadata API subset berqenas uses.

Faithful to /work/shared/reference/hasura-metadata-api.md (section numbers below refer to it):
- POST /v1/metadata only (§1.1); the admin secret is checked before the body is parsed (§2.4), 401
  ``access-denied`` (§2.2); a non-admin ``X-Hasura-Role`` gets 400 ``restricted access : admin only`` (§2.3).
- Errors are ``{"path","error","code"[,"internal"]}`` with Hasura's codes and statuses (§1.5, §5); inside
  ``bulk`` the path is ``$.args[i].args`` (§4.6).
- ``resource_version`` (§3): +1 per successful modifying request (a whole bulk once, reload_metadata too), the
  409 ``conflict`` is raised only after the operation succeeded in memory, read-only calls ignore it.
- Tables are checked against the REAL PostgreSQL catalog, read by connecting with the source's own connection
  string (``from_env`` resolved in the double's environment, like Hasura's process environment): tracking a
  missing table is ``invalid-configuration`` (§4.2); a table dropped after tracking stays in metadata as an
  inconsistent object (§6, §8) and answers ``already-untracked`` to ``pg_untrack_table`` (§4.3 quirk).
- ``pg_track_tables`` / ``pg_untrack_tables`` exist only when the reported version is >= v2.26.0 (§4.4).
- GET /healthz (plain text, §1.6) and GET /v1/version.

Every request is recorded in ``requests`` (type, whether it wrote) so tests can prove that a run sent no write.
"""

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

PERM_TYPES = ("insert", "select", "update", "delete")
ROOT_FIELD_KEYS = ("select", "select_by_pk", "select_aggregate", "select_stream", "insert", "insert_one", "update",
                   "update_by_pk", "update_many", "delete", "delete_by_pk")
TRACK_TABLES_SINCE = (2, 26, 0)
_RELKINDS = ("r", "v", "m", "f", "p")
_CATALOG_SQL = """
SELECT n.nspname, c.relname, coalesce(array_agg(a.attname::text ORDER BY a.attnum)
                                      FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped), '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'hdb_catalog')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
GROUP BY n.nspname, c.relname
"""


class QErr(Exception):
    def __init__(self, status, code, error, path="$.args", internal=None):
        super().__init__(error)
        self.status, self.code, self.error, self.path, self.internal = status, code, error, path, internal

    def body(self, with_internal=True):
        b = {"path": self.path, "error": self.error, "code": self.code}
        if self.internal is not None and with_internal:
            b["internal"] = self.internal
        return b


def err400(code, error, path="$.args", internal=None):
    return QErr(400, code, error, path, internal)


def parse_failed(msg, path="$"):
    return QErr(400, "parse-failed", msg, path)


def version_tuple(v):
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", v or "")
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


# --------------------------------------------------------------------------------------------------- names
def qualified(table, path="$.args"):
    """TableName (§4.1): a string (schema public) or {"schema","name"} -> (schema, name)."""
    if isinstance(table, str):
        return ("public", table)
    if isinstance(table, dict) and isinstance(table.get("name"), str):
        schema = table.get("schema", "public")
        if not isinstance(schema, str):
            raise parse_failed("parsing Text failed, expected String", path + ".table.schema")
        return (schema, table["name"])
    raise parse_failed("When parsing the table name: expected String or Object with a name", path + ".table")


def shown(qt):
    """How Hasura prints a table in messages: bare in public, else schema.name."""
    return qt[1] if qt[0] == "public" else "%s.%s" % qt


def table_json(qt):
    return {"name": qt[1], "schema": qt[0]}


def _is_empty(v):
    return v is None or v == {} or v == []


def clean_config(cfg):
    """TableConfig as exported: null keys dropped; custom_column_names mirrors column_config names (§7)."""
    if not cfg:
        return None
    out = {}
    for k in ("custom_root_fields", "column_config", "custom_column_names", "custom_name", "comment"):
        if cfg.get(k) is not None:
            out[k] = copy.deepcopy(cfg[k])
    cc = out.get("column_config") or {}
    names = dict(out.get("custom_column_names") or {})
    for col, c in cc.items():
        if isinstance(c, dict) and c.get("custom_name"):
            names[col] = c["custom_name"]
    for col, n in list(names.items()):
        cc.setdefault(col, {})
        if isinstance(cc[col], dict):
            cc[col].setdefault("custom_name", n)
    if cc:
        out["column_config"] = cc
    if names:
        out["custom_column_names"] = names
    for k in list(out):
        if k in ("custom_root_fields",) and not isinstance(out[k], dict):
            raise parse_failed("custom_root_fields must be an object", "$.args.configuration")
    crf = out.get("custom_root_fields")
    if crf:
        unknown = set(crf) - set(ROOT_FIELD_KEYS)
        if unknown:
            raise parse_failed("unexpected fields in custom_root_fields: %s" % ", ".join(sorted(unknown)),
                               "$.args.configuration.custom_root_fields")
        out["custom_root_fields"] = {k: v for k, v in crf.items() if v is not None}
    return out if any(not _is_empty(v) for v in out.values()) else None


# ------------------------------------------------------------------------------------------- the double
class HasuraDouble:
    """State of one engine: metadata + resource_version; ``environment`` is the engine's process env."""

    def __init__(self, admin_secret="", version="v2.40.0", environment=None):
        self.admin_secret = admin_secret
        self.version = version
        self.environment = dict(environment or {})
        self.lock = threading.RLock()
        self.requests = []
        self.hooks = []          # callables(body) run before a POST is processed (tests: concurrent writers)
        self.reset()

    # -- test helpers
    def reset(self):
        with self.lock:
            self.metadata = {"version": 3, "sources": []}
            self.resource_version = 1
            self.requests = []
            self.hooks = []

    def writes(self):
        return [r for r in self.requests if r["wrote"]]

    def request_types(self):
        return [r["type"] for r in self.requests]

    # -- catalog
    def _dsn(self, source):
        ci = ((source.get("configuration") or {}).get("connection_info") or {})
        url = ci.get("database_url")
        if isinstance(url, dict) and "from_env" in url:
            var = url["from_env"]
            if var not in self.environment:
                raise LookupError("environment variable '%s' not set" % var)
            return self.environment[var]
        if isinstance(url, dict) and "connection_parameters" in url:
            p = url["connection_parameters"]
            return psycopg.conninfo.make_conninfo(host=p.get("host"), port=p.get("port"), user=p.get("username"),
                                                  password=p.get("password"), dbname=p.get("database"))
        if isinstance(url, str):
            return url
        raise LookupError("no database_url in connection_info")

    def catalog(self, source):
        """{(schema, name): [columns]} as the source's own role sees pg_catalog; raises on connection failure.
        Read once per request (like Hasura's schema-cache build), so a bulk of 500 children connects once."""
        dsn = self._dsn(source)
        cache = self._catalogs
        if dsn not in cache:
            try:
                with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as c:
                    rows = c.execute(_CATALOG_SQL, (list(_RELKINDS),)).fetchall()
                cache[dsn] = {(s, n): list(cols) for s, n, cols in rows}
            except psycopg.Error as e:
                cache[dsn] = e
        if isinstance(cache[dsn], Exception):
            raise cache[dsn]
        return cache[dsn]

    def build(self, metadata):
        """The schema cache: per source its catalog (or None) and the list of inconsistent objects."""
        catalogs, inconsistent = {}, []
        for src in metadata["sources"]:
            try:
                catalogs[src["name"]] = self.catalog(src)
            except (LookupError, psycopg.Error) as e:
                catalogs[src["name"]] = None
                reason = "Inconsistent object: %s" % (str(e).strip().splitlines() or ["connection error"])[0]
                inconsistent.append({"definition": src["name"], "name": "source %s" % src["name"],
                                     "reason": reason, "type": "source"})
                continue
            cat = catalogs[src["name"]]
            for t in src["tables"]:
                qt = qualified(t["table"])
                if qt not in cat:
                    reason = 'Inconsistent object: no such table/view exists in source: "%s"' % shown(qt)
                    inconsistent.append({"definition": table_json(qt),
                                         "name": "table %s in source %s" % (shown(qt), src["name"]),
                                         "reason": reason, "type": "table"})
                    continue
                cols = set(cat[qt])
                for pt in PERM_TYPES:
                    for p in t.get(pt + "_permissions", []):
                        bad = _unknown_columns(p.get("permission") or {}, cols)
                        if bad:
                            reason = ('Inconsistent object: in table "%s": in permission for role "%s": '
                                      'column "%s" does not exist' % (shown(qt), p["role"], bad))
                            inconsistent.append({
                                "definition": {"role": p["role"], "source": src["name"], "comment": p.get("comment"),
                                               "permission": p.get("permission"), "table": table_json(qt)},
                                "name": "%s_permission %s in table %s in source %s" % (
                                    pt, p["role"], shown(qt), src["name"]),
                                "reason": reason, "type": pt + "_permission"})
        return catalogs, inconsistent

    def is_consistent_table(self, source_name, qt, cache):
        cat = cache[0].get(source_name)
        return cat is not None and qt in cat

    # -- HTTP entry points
    def handle_post(self, path, headers, raw):
        """Returns (status, body_json). Order of checks as in §2.4."""
        if path != "/v1/metadata":
            raise QErr(404, "not-found", "resource does not exist", "$")
        secret = headers.get("x-hasura-admin-secret", headers.get("x-hasura-access-key"))
        if self.admin_secret:
            if secret is None:
                raise QErr(401, "access-denied", "x-hasura-admin-secret/x-hasura-access-key required, but not found",
                           "$")
            if secret != self.admin_secret:
                raise QErr(401, "access-denied", "invalid x-hasura-admin-secret/x-hasura-access-key", "$")
        try:
            body = json.loads(raw.decode("utf-8") if raw else "")
        except (ValueError, UnicodeDecodeError) as e:
            raise QErr(400, "invalid-json", "Error in $: %s" % e, "$") from None
        if not isinstance(body, dict) or "type" not in body or "args" not in body:
            raise parse_failed("key \"%s\" not found" % ("type" if not isinstance(body, dict) or "type" not in body
                                                         else "args"))
        rv = body.get("resource_version")
        if rv is not None and (not isinstance(rv, int) or isinstance(rv, bool)):
            raise parse_failed("parsing Int failed, expected Number", "$.resource_version")  # envelope (§1.2)
        role = headers.get("x-hasura-role", "admin")
        if role != "admin":
            raise err400("access-denied", "restricted access : admin only")
        for hook in list(self.hooks):
            hook(body)
        with self.lock:
            self._catalogs = {}
            entry = {"type": body["type"], "wrote": False, "resource_version": body.get("resource_version")}
            self.requests.append(entry)
            work = copy.deepcopy(self.metadata)
            result, modified = self.run(body, work, "$")
            if modified:
                want = body.get("resource_version")
                if want is not None:
                    if want != self.resource_version:
                        raise QErr(409, "conflict", "metadata resource version referenced (%s) did not match "
                                   "current version" % want, "$")
                self.metadata = work
                self.resource_version += 1
                entry["wrote"] = True
            return 200, result

    def healthz(self, strict=False):
        with self.lock:
            self._catalogs = {}
            _, inc = self.build(self.metadata)
        if inc:
            return (500, "ERROR: inconsistent objects in schema") if strict else (
                200, "WARN: inconsistent objects in schema")
        return 200, "OK"

    # -- operations
    def run(self, body, md, path):
        """Run one request against ``md`` (mutated in place). Returns (result, modified)."""
        typ, args, ver = body.get("type"), body.get("args"), body.get("version", 1)
        if not isinstance(typ, str):
            raise parse_failed("expected String", path + ".type")
        args_path = path + ".args"
        if typ in ("bulk", "bulk_keep_going"):
            return self._bulk(typ, args, md, args_path)
        op = _OPS.get(typ)
        if typ in ("pg_track_tables", "pg_untrack_tables") and version_tuple(self.version) < TRACK_TABLES_SINCE:
            op = None
        if op is None:
            backend, _, rest = typ.partition("_")
            if typ in _OPS or backend == "pg":
                raise parse_failed('unknown metadata command "%s" for backend postgres' % rest, path)
            raise parse_failed('unknown metadata command "%s"; "%s" was not recognized as a valid backend name'
                               % (typ, backend), path)
        before = self.build(md)
        try:
            return op(self, args, md, ver, before, "$.args")
        except QErr as e:
            if e.path.startswith("$.args") and path != "$":
                e.path = args_path + e.path[len("$.args"):]
            raise

    def _bulk(self, typ, args, md, path):
        if not isinstance(args, list):
            raise parse_failed("expected Array", path)
        results, modified = [], False
        for i, child in enumerate(args):
            cpath = "%s[%d]" % (path, i)
            if not isinstance(child, dict):
                raise parse_failed("expected Object", cpath)
            if typ == "bulk":
                res, mod = self.run(child, md, cpath)
                results.append(res)
                modified = modified or mod
                continue
            scratch = copy.deepcopy(md)
            try:
                res, mod = self.run(child, scratch, cpath)
            except QErr as e:
                results.append(e.body())
                continue
            md.clear()
            md.update(scratch)
            results.append(res)
            modified = modified or mod
        return results, modified

    def _check_new_inconsistency(self, md, before, allow=()):
        after = self.build(md)
        old = {o["name"] for o in before[1]}
        new = [o for o in after[1] if o["name"] not in old and o["name"] not in allow]
        if new:
            raise err400("unexpected", "cannot continue due to new inconsistent metadata", internal=new)
        return after


def _unknown_columns(permission, cols):
    columns = permission.get("columns")
    if isinstance(columns, list):
        for c in columns:
            if c not in cols:
                return c
    for key in ("filter", "check"):
        f = permission.get(key)
        bad = _filter_columns(f, cols) if isinstance(f, dict) else None
        if bad:
            return bad
    for c in (permission.get("set") or {}):
        if c not in cols:
            return c
    return None


def _filter_columns(f, cols):
    for k, v in f.items():
        if k in ("_and", "_or", "$and", "$or"):
            for sub in v if isinstance(v, list) else []:
                bad = _filter_columns(sub, cols) if isinstance(sub, dict) else None
                if bad:
                    return bad
        elif k in ("_not", "$not"):
            bad = _filter_columns(v, cols) if isinstance(v, dict) else None
            if bad:
                return bad
        elif k in ("_exists",):
            continue
        elif k not in cols:
            return k
    return None


def _source(md, name, path="$.args"):
    for s in md["sources"]:
        if s["name"] == name:
            return s
    raise err400("not-exists", 'source with name "%s" does not exist' % name, path)


def _find_table(src, qt):
    for t in src["tables"]:
        if qualified(t["table"]) == qt:
            return t
    return None


def _need_obj(args, path):
    if not isinstance(args, dict):
        raise parse_failed("expected Object", path)
    return args


def _sort_md(md):
    md["sources"].sort(key=lambda s: s["name"])
    for s in md["sources"]:
        s["tables"].sort(key=lambda t: qualified(t["table"]))
        for t in s["tables"]:
            for pt in PERM_TYPES:
                k = pt + "_permissions"
                if k in t:
                    t[k].sort(key=lambda p: p["role"])


# --- export / replace / reload / inconsistency
def op_export(d, args, md, ver, before, path):
    out = copy.deepcopy(md)
    if ver == 2:
        return {"resource_version": d.resource_version, "metadata": out}, False
    return out, False


def op_replace(d, args, md, ver, before, path):
    args = _need_obj(args, path)
    form_b = "metadata" in args
    if ver == 2 and not form_b:
        raise parse_failed('key "metadata" not found', path)
    new = args["metadata"] if form_b else args
    if not isinstance(new, dict) or not isinstance(new.get("sources", []), list):
        raise parse_failed("expected Object", path)
    replaced = {"version": 3, "sources": []}
    for s in new.get("sources", []):
        src = {"name": s["name"], "kind": s.get("kind", "postgres"), "tables": [],
               "configuration": copy.deepcopy(s.get("configuration") or {})}
        for k in ("customization",):
            if s.get(k):
                src[k] = copy.deepcopy(s[k])
        for t in s.get("tables", []):
            entry = copy.deepcopy(t)
            entry["table"] = table_json(qualified(t["table"]))
            cfg = clean_config(t.get("configuration"))
            entry.pop("configuration", None)
            if cfg:
                entry["configuration"] = cfg
            for pt in PERM_TYPES:
                if not entry.get(pt + "_permissions"):
                    entry.pop(pt + "_permissions", None)
            src["tables"].append(entry)
        replaced["sources"].append(src)
    _sort_md(replaced)
    _, inc = d.build(replaced)
    allow = bool(args.get("allow_inconsistent_metadata")) if form_b else False
    if inc and not allow:
        raise err400("unexpected", "cannot continue due to inconsistent metadata", internal=inc)
    md.clear()
    md.update(replaced)
    if form_b:
        return {"is_consistent": not inc, "inconsistent_objects": inc}, True
    return {"message": "success"}, True


def op_get_inconsistent(d, args, md, ver, before, path):
    return {"is_consistent": not before[1], "inconsistent_objects": before[1]}, False


def op_reload(d, args, md, ver, before, path):
    args = _need_obj(args or {}, path)
    rs = args.get("reload_sources", True)
    if isinstance(rs, list):
        names = {s["name"] for s in md["sources"]}
        for n in rs:
            if n not in names:
                raise err400("not-exists", 'source with name "%s" does not exist' % n)
    res = {"message": "success", "is_consistent": not before[1]}
    if before[1]:
        res["inconsistent_objects"] = before[1]
    return res, True


def op_drop_inconsistent(d, args, md, ver, before, path):
    bad_tables = {(o["name"]) for o in before[1] if o["type"] == "table"}
    bad_sources = {o["definition"] for o in before[1] if o["type"] == "source"}
    bad_perms = {o["name"] for o in before[1] if o["type"].endswith("_permission")}
    md["sources"] = [s for s in md["sources"] if s["name"] not in bad_sources]
    for s in md["sources"]:
        s["tables"] = [t for t in s["tables"]
                       if "table %s in source %s" % (shown(qualified(t["table"])), s["name"]) not in bad_tables]
        for t in s["tables"]:
            for pt in PERM_TYPES:
                k = pt + "_permissions"
                if k in t:
                    t[k] = [p for p in t[k] if "%s_permission %s in table %s in source %s" % (
                        pt, p["role"], shown(qualified(t["table"])), s["name"]) not in bad_perms]
                    if not t[k]:
                        del t[k]
    return {"message": "success"}, True


# --- sources
def op_add_source(d, args, md, ver, before, path):
    args = _need_obj(args, path)
    name = args.get("name")
    if not isinstance(name, str) or "configuration" not in args:
        raise parse_failed('key "%s" not found' % ("name" if not isinstance(name, str) else "configuration"), path)
    ci = (args["configuration"] or {}).get("connection_info")
    if not isinstance(ci, dict) or "database_url" not in ci:
        raise parse_failed('key "connection_info" not found', path + ".configuration")
    existing = [s for s in md["sources"] if s["name"] == name]
    if existing and not args.get("replace_configuration"):
        raise err400("already-exists", 'source with name "%s" already exists' % name)
    if existing:
        existing[0]["configuration"] = copy.deepcopy(args["configuration"])
        if args.get("customization") is not None:
            existing[0]["customization"] = copy.deepcopy(args["customization"])
    else:
        src = {"name": name, "kind": "postgres", "tables": [], "configuration": copy.deepcopy(args["configuration"])}
        if args.get("customization"):
            src["customization"] = copy.deepcopy(args["customization"])
        md["sources"].append(src)
    _sort_md(md)
    after = d.build(md)
    new = [o for o in after[1] if o["type"] == "source" and o["definition"] == name]
    if new:
        raise err400("invalid-configuration", new[0]["reason"], internal=new)
    return {"message": "success"}, True


def op_drop_source(d, args, md, ver, before, path):
    args = _need_obj(args, path)
    name = args.get("name")
    _source(md, name)
    md["sources"] = [s for s in md["sources"] if s["name"] != name]
    return {"message": "success"}, True


# --- tables
def _track_one(d, args, md, before, path):
    if isinstance(args, (str,)) or (isinstance(args, dict) and "table" not in args and "name" in args):
        args = {"table": args}  # legacy: bare TableName as args
    args = _need_obj(args, path)
    if "table" not in args:
        raise parse_failed('key "table" not found', path)
    qt = qualified(args["table"], path)
    src = _source(md, args.get("source", "default"), path)
    existing = _find_table(src, qt)
    if existing is not None and d.is_consistent_table(src["name"], qt, before):
        raise err400("already-tracked", 'view/table already tracked: "%s"' % shown(qt), path)
    if existing is not None:  # inconsistent entry: re-tracking replaces it (schema cache says "not tracked")
        src["tables"].remove(existing)
    entry = {"table": table_json(qt)}
    if args.get("is_enum"):
        entry["is_enum"] = True
    cfg = clean_config(args.get("configuration"))
    if cfg:
        entry["configuration"] = cfg
    src["tables"].append(entry)
    _sort_md(md)
    return qt, src


def op_track_table(d, args, md, ver, before, path):
    qt, src = _track_one(d, args, md, before, path)
    after = d.build(md)
    name = "table %s in source %s" % (shown(qt), src["name"])
    mine = [o for o in after[1] if o["name"] == name]
    if mine:
        raise err400("invalid-configuration", mine[0]["reason"], path, internal=mine)
    d._check_new_inconsistency(md, before)
    return {"message": "success"}, True


def _untrack_one(d, args, md, before, path):
    args = _need_obj(args, path)
    if "table" not in args:
        raise parse_failed('key "table" not found', path)
    qt = qualified(args["table"], path)
    name = args.get("source", "default")
    src = next((s for s in md["sources"] if s["name"] == name), None)
    t = _find_table(src, qt) if src else None
    if t is None or not d.is_consistent_table(name, qt, before):
        raise err400("already-untracked", 'view/table already untracked: "%s"' % shown(qt), path)
    src["tables"].remove(t)
    return qt


def op_untrack_table(d, args, md, ver, before, path):
    _untrack_one(d, args, md, before, path)
    return {"message": "success"}, True


def _bulk_tables(d, args, md, before, path, track):
    args = _need_obj(args, path)
    tables = args.get("tables")
    if not isinstance(tables, list):
        raise parse_failed('key "tables" not found', path)
    keys = [((t.get("source", "default") if isinstance(t, dict) else "default"),
             qualified(t.get("table") if isinstance(t, dict) else t, path)) for t in tables]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise err400("bad-request", "The following tables occur more than once in the request: %s"
                     % ", ".join("%s in source %s" % (shown(qt), s) for s, qt in dups), path + ".tables")
    warnings = []
    for t, (sname, qt) in zip(tables, keys, strict=True):
        scratch = copy.deepcopy(md)
        try:
            if track:
                _track_one(d, t, scratch, before, path)
                after = d.build(scratch)
                mine = [o for o in after[1] if o["name"] == "table %s in source %s" % (shown(qt), sname)]
                if mine:
                    raise err400("invalid-configuration", mine[0]["reason"], path)
            else:
                _untrack_one(d, t, scratch, before, path)
        except QErr as e:
            warnings.append({"code": "track-table-failed" if track else "untrack-table-failed", "message": e.error,
                             "name": "table %s in source %s" % (shown(qt), sname), "type": "table"})
            continue
        md.clear()
        md.update(scratch)
    if tables and len(warnings) == len(tables):
        raise err400("invalid-configuration", "all tables failed to %s" % ("track" if track else "untrack"), path,
                     internal=warnings)
    if warnings and not args.get("allow_warnings", True):
        raise err400("metadata-warnings", "failed due to metadata warnings", path, internal=warnings)
    res = {"message": "success"}
    if warnings:
        res["warnings"] = warnings
    return res, len(warnings) < len(tables)


def op_track_tables(d, args, md, ver, before, path):
    return _bulk_tables(d, args, md, before, path, True)


def op_untrack_tables(d, args, md, ver, before, path):
    return _bulk_tables(d, args, md, before, path, False)


def op_set_customization(d, args, md, ver, before, path):
    args = _need_obj(args, path)
    qt = qualified(args.get("table"), path)
    src = _source(md, args.get("source", "default"), path)
    t = _find_table(src, qt)
    if t is None or not d.is_consistent_table(src["name"], qt, before):
        raise err400("not-exists", 'table "%s" does not exist in source: %s' % (shown(qt), src["name"]), path)
    cfg = clean_config(args.get("configuration"))
    t.pop("configuration", None)
    if cfg:
        t["configuration"] = cfg
    return {"message": "success"}, True


# --- permissions
def _exported_select(perm):
    """A select permission as export_metadata serializes it (§7): columns sorted, ``limit`` only when set,
    ``computed_fields`` when non-empty, ``allow_aggregations`` only when true, root fields only when restricted."""
    out = {}
    for k, v in copy.deepcopy(perm).items():
        if v is None or (k == "allow_aggregations" and v is False) or (k == "computed_fields" and not v):
            continue
        out[k] = sorted(v) if k == "columns" and isinstance(v, list) else v
    return out


def _perm_op(kind, create):
    def op(d, args, md, ver, before, path):
        args = _need_obj(args, path)
        for k in ("table", "role") + (("permission",) if create else ()):
            if k not in args:
                raise parse_failed('key "%s" not found' % k, path)
        qt = qualified(args["table"], path)
        src = _source(md, args.get("source", "default"), path)
        t = _find_table(src, qt)
        if t is None or not d.is_consistent_table(src["name"], qt, before):
            raise err400("not-exists", 'table "%s" does not exist in source: %s' % (shown(qt), src["name"]), path)
        role = args["role"]
        key = kind + "_permissions"
        perms = t.setdefault(key, [])
        existing = next((p for p in perms if p["role"] == role), None)
        if create:
            if role == "admin":
                raise err400("constraint-violation", "cannot define permission for admin role", path)
            if existing is not None:
                raise err400("already-exists", '%s permission already defined on table "%s" with role "%s"'
                             % (kind, shown(qt), role), path)
            perm = args["permission"]
            if not isinstance(perm, dict) or ("columns" not in perm and kind in ("select", "insert", "update")):
                raise parse_failed('key "columns" not found', path + ".permission")
            if kind in ("select", "update", "delete") and "filter" not in perm:
                raise parse_failed('key "filter" not found', path + ".permission")
            entry = {"role": role, "permission": _exported_select(perm) if kind == "select" else copy.deepcopy(perm)}
            if args.get("comment") is not None:
                entry["comment"] = args["comment"]
            perms.append(entry)
            _sort_md(md)
            d._check_new_inconsistency(md, before)
        else:
            if existing is None:
                raise err400("bad-request", '%s permission on "%s" for role "%s" does not exist'
                             % (kind, shown(qt), role), path)
            perms.remove(existing)
        if not perms:
            del t[key]
        return {"message": "success"}, True

    return op


_OPS = {
    "export_metadata": op_export,
    "replace_metadata": op_replace,
    "get_inconsistent_metadata": op_get_inconsistent,
    "reload_metadata": op_reload,
    "drop_inconsistent_metadata": op_drop_inconsistent,
    "pg_add_source": op_add_source,
    "pg_drop_source": op_drop_source,
    "pg_track_table": op_track_table,
    "pg_untrack_table": op_untrack_table,
    "pg_track_tables": op_track_tables,
    "pg_untrack_tables": op_untrack_tables,
    "pg_set_table_customization": op_set_customization,
}
for _k in PERM_TYPES:
    _OPS["pg_create_%s_permission" % _k] = _perm_op(_k, True)
    _OPS["pg_drop_%s_permission" % _k] = _perm_op(_k, False)


# ---------------------------------------------------------------------------------------------------- HTTP
class _Handler(BaseHTTPRequestHandler):
    server_version = "hasura-double"
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16             # headers and body leave in one write (no Nagle/delayed-ACK stall)
    disable_nagle_algorithm = True

    def log_message(self, *a):  # quiet
        pass

    def _send(self, status, payload, text=False):
        data = payload.encode() if text else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        d = self.server.double
        path, _, query = self.path.partition("?")
        if path in ("/healthz", "/hasura/healthz"):
            status, text = d.healthz(strict="strict=true" in query)
            return self._send(status, text, text=True)
        if path == "/v1/version":
            return self._send(200, {"version": d.version})
        return self._send(404, {"path": "$", "error": "resource does not exist", "code": "not-found"})

    def do_POST(self):
        d = self.server.double
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, body = d.handle_post(self.path.partition("?")[0], headers, raw)
        except QErr as e:
            return self._send(e.status, e.body())
        except Exception as e:  # a bug in the double must be visible, not a hang
            return self._send(500, {"path": "$", "error": "double: %r" % e, "code": "unexpected"})
        return self._send(status, body)


class HasuraDoubleServer:
    """The double served on 127.0.0.1 (a free port) from a thread: ``url``, ``double``, ``stop()``."""

    def __init__(self, admin_secret="", version="v2.40.0", environment=None):
        self.double = HasuraDouble(admin_secret, version, environment)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.double = self.double
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="hasura-double", daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
