# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hasura v2 metadata API: a small client and the pure difference logic behind the hasura_* modules.

Reading is one ``export_metadata`` (version 2, so the ``resource_version`` comes with it); the difference
between that and the desired tables/permissions is computed here without I/O, and written in ONE request
carrying that ``resource_version``: a ``bulk`` of fine-grained operations, or, when tables dropped in
PostgreSQL must leave the metadata (``pg_untrack_table`` answers ``already-untracked`` for those), one
``replace_metadata`` of the exported metadata minus exactly those tables. A 409 ``conflict`` (another writer
went first) is retried by re-reading. Nothing is written when nothing differs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import re

from ansible_collections.berqenas.platform.plugins.module_utils import validation

PERM_KINDS = ("select", "insert", "update", "delete")
ROOT_FIELDS = ("select", "select_by_pk", "select_aggregate", "select_stream", "insert", "insert_one", "update",
               "update_by_pk", "update_many", "delete", "delete_by_pk")
TRACK_TABLES_SINCE = (2, 26, 0)
GRAPHQL_NAME_RE = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*\Z")
SESSION_VAR_RE = re.compile(r"^x-hasura-[a-z0-9-]+\Z", re.I)
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}\Z")
PG_IDENT_RE = re.compile(r"^[^\x00]{1,63}\Z")
REDACTED = "********"


class HasuraError(Exception):
    """A metadata API failure or a refused input; ``code``/``status`` as Hasura sent them."""

    def __init__(self, msg, status=None, code=None, body=None):
        super(HasuraError, self).__init__(msg)
        self.status, self.code, self.body = status, code, body


class HasuraConflict(HasuraError):
    """409: the metadata changed since it was read."""


def hasura_argument_spec():
    return dict(
        hasura_url=dict(type="str", required=True),
        hasura_admin_secret=dict(type="str", no_log=True),
        validate_certs=dict(type="bool", default=True),
        hasura_timeout=dict(type="float", default=30),
    )


def version_tuple(v):
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", str(v or ""))
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


# ------------------------------------------------------------------------------------------------ client
class Client(object):
    """``transport(method, url, data_bytes_or_None, headers, timeout) -> (status, body_bytes)``; status 0 =
    no answer (body = the reason). The admin secret goes only into the request header."""

    def __init__(self, url, admin_secret, transport, timeout=30):
        if not re.match(r"^https?://[^\s/?#]+", url or ""):
            raise HasuraError("hasura_url %r: expected http(s)://host[:port]" % (url,))
        self.url = url.rstrip("/")
        self._secret = admin_secret
        self._transport = transport
        self.timeout = timeout
        self.writes = 0
        self.requests = 0

    def _headers(self):
        h = {"Content-Type": "application/json"}
        if self._secret:
            h["X-Hasura-Admin-Secret"] = self._secret
        return h

    def _redact(self, text):
        text = str(text)
        return text.replace(self._secret, REDACTED) if self._secret else text

    def metadata(self, body, write=False):
        self.requests += 1
        if write:
            self.writes += 1
        status, raw = self._transport("POST", self.url + "/v1/metadata", json.dumps(body).encode("utf-8"),
                                      self._headers(), self.timeout)
        what = body.get("type")
        if status == 0:
            raise HasuraError("%s: Hasura at %s did not answer: %s" % (what, self.url, self._redact(raw)))
        try:
            data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except ValueError:
            data = None
        if 200 <= status < 300 and data is not None:
            return data
        code = data.get("code") if isinstance(data, dict) else None
        err = data.get("error") if isinstance(data, dict) else self._redact(raw)[:200]
        if status == 401:
            raise HasuraError("%s: Hasura refused the admin secret (%s: %s)" % (what, code, err), status, code, data)
        if status == 409:
            raise HasuraConflict("%s: %s" % (what, err), status, code, data)
        if code == "access-denied":
            raise HasuraError("%s: not an admin request (%s)" % (what, err), status, code, data)
        raise HasuraError("%s: HTTP %s %s: %s" % (what, status, code, err), status, code, data)

    def get(self, path):
        status, raw = self._transport("GET", self.url + path, None, {}, self.timeout)
        if status == 0:
            raise HasuraError("GET %s: Hasura at %s did not answer: %s" % (path, self.url, self._redact(raw)))
        return status, raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw

    def server_version(self):
        status, text = self.get("/v1/version")
        if status != 200:
            raise HasuraError("GET /v1/version: HTTP %s" % status, status)
        try:
            return json.loads(text).get("version", "")
        except (ValueError, AttributeError):
            raise HasuraError("GET /v1/version: not JSON")

    def health(self):
        status, text = self.get("/healthz")
        return {"status": status, "text": text.strip(), "ok": status == 200 and text.strip() == "OK"}

    def export(self):
        data = self.metadata({"type": "export_metadata", "version": 2, "args": {}})
        if not isinstance(data, dict) or "metadata" not in data:
            raise HasuraError("export_metadata: unexpected answer (no resource_version/metadata)")
        return data["resource_version"], data["metadata"]

    def inconsistent(self):
        data = self.metadata({"type": "get_inconsistent_metadata", "args": {}})
        return data.get("inconsistent_objects") or []


def fetch_url_transport(module):
    """A transport over ansible.module_utils.urls.fetch_url (proxies, certs, the module's validate_certs)."""
    from ansible.module_utils.urls import fetch_url

    def transport(method, url, data, headers, timeout):
        resp, info = fetch_url(module, url, data=data, headers=headers, method=method, timeout=timeout)
        status = info.get("status", -1)
        if status == -1:
            return 0, info.get("msg", "connection failed")
        if status >= 400 or resp is None:
            return status, info.get("body") or b""  # fetch_url keeps an error's body in info
        return status, resp.read()

    return transport


def open_url_transport(validate_certs=True):
    """The same through open_url (callers without an AnsibleModule, e.g. benchmarks)."""
    from ansible.module_utils.urls import open_url
    from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError

    def transport(method, url, data, headers, timeout):
        try:
            r = open_url(url, data=data, headers=headers, method=method, timeout=timeout,
                         validate_certs=validate_certs)
            return r.getcode(), r.read()
        except HTTPError as e:
            return e.code, e.read()
        except (URLError, OSError) as e:
            return 0, str(getattr(e, "reason", e))

    return transport


# ------------------------------------------------------------------------------------------ validation
def qualified(table, default_schema="public"):
    """TableName -> (schema, name)."""
    if isinstance(table, dict):
        return (table.get("schema") or default_schema, table["name"])
    return (default_schema, table)


def shown(qt):
    return "%s.%s" % qt


def table_json(qt):
    return {"schema": qt[0], "name": qt[1]}


def _check_pg_ident(v, what):
    if not isinstance(v, str) or not PG_IDENT_RE.match(v):
        raise HasuraError("%s %r: expected a PostgreSQL name of 1-63 characters" % (what, v))
    try:  # quoted wherever it goes, but no control or invisible character and no template syntax
        validation.table_text(v, what)
    except validation.ValidationError as exc:
        raise HasuraError(str(exc))


def _check_gql(v, what):
    if not isinstance(v, str) or not GRAPHQL_NAME_RE.match(v):
        raise HasuraError("%s %r: not a GraphQL name ([_A-Za-z][_0-9A-Za-z]*)" % (what, v))


def check_role(role):
    _check_gql(role, "role")
    if role == "admin":
        raise HasuraError("role admin: admin has every permission implicitly; name another role")
    return role


def check_env_name(name):
    if not isinstance(name, str) or not ENV_NAME_RE.match(name):
        raise HasuraError("database_url_env %r: expected an environment variable name ([A-Z_][A-Z0-9_]*)" % (name,))
    return name


def _check_bool_exp(exp, what):
    if not isinstance(exp, dict):
        raise HasuraError("%s: a boolean expression is a mapping, got %s" % (what, type(exp).__name__))
    for k, v in exp.items():
        if k in ("_and", "_or"):
            if not isinstance(v, list):
                raise HasuraError("%s: %s takes a list" % (what, k))
            for sub in v:
                _check_bool_exp(sub, what)
        elif k in ("_not", "_exists"):
            if not isinstance(v, dict):
                raise HasuraError("%s: %s takes a mapping" % (what, k))
        elif isinstance(v, dict):
            for op, val in v.items():
                if not op.startswith("_"):
                    _check_bool_exp({op: val}, what)
                elif isinstance(val, str) and val.lower().startswith("x-hasura-") and not SESSION_VAR_RE.match(val):
                    raise HasuraError("%s: session variable %r is not a valid X-Hasura-* name" % (what, val))


_PERM_KEYS = {
    "select": ("columns", "filter", "limit", "allow_aggregations", "computed_fields", "query_root_fields",
               "subscription_root_fields"),
    "insert": ("columns", "check", "set", "backend_only"),
    "update": ("columns", "filter", "check", "set"),
    "delete": ("filter", "backend_only"),
}


def normalize_permission(kind, perm):
    """The permission body as compared: defaults and empties removed, column lists sorted."""
    out = {}
    for k, v in (perm or {}).items():
        if v is None or (k in ("allow_aggregations", "backend_only") and v is False):
            continue
        if k in ("set", "computed_fields") and not v:
            continue
        if k == "columns" and isinstance(v, list):
            v = sorted(v)
        out[k] = v
    if kind in ("select", "update", "delete"):
        out.setdefault("filter", {})
    if kind == "insert":
        out.setdefault("check", {})
    return out


def permission_spec(kind, role, perm):
    """Validate one desired permission; returns its normalized body."""
    check_role(role)
    if not isinstance(perm, dict):
        raise HasuraError("%s permission for %s: expected a mapping" % (kind, role))
    unknown = set(perm) - set(_PERM_KEYS[kind]) - {"comment"}
    if unknown:
        raise HasuraError("%s permission for %s: unknown keys %s" % (kind, role, ", ".join(sorted(unknown))))
    if kind != "delete":
        cols = perm.get("columns")
        if cols != "*" and not (isinstance(cols, list) and cols):
            raise HasuraError("%s permission for %s: columns must be a non-empty list or '*'" % (kind, role))
        if isinstance(cols, list):
            for c in cols:
                _check_pg_ident(c, "%s permission for %s: column" % (kind, role))
    for k in ("filter", "check"):
        if perm.get(k) is not None:
            _check_bool_exp(perm[k], "%s permission for %s: %s" % (kind, role, k))
    if perm.get("limit") is not None and (not isinstance(perm["limit"], int) or perm["limit"] < 0):
        raise HasuraError("select permission for %s: limit must be a non-negative integer" % role)
    body = dict((k, v) for k, v in perm.items() if k != "comment")
    return normalize_permission(kind, body)


def normalize_config(cfg):
    """TableConfig as compared: missing, null and {} are equal; custom_column_names folded into column_config."""
    cfg = cfg or {}
    out = {}
    cc = {}
    for col, c in (cfg.get("column_config") or {}).items():
        c = dict((k, v) for k, v in (c or {}).items() if v is not None)
        if c:
            cc[col] = c
    for col, n in (cfg.get("custom_column_names") or {}).items():
        cc.setdefault(col, {}).setdefault("custom_name", n)
    if cc:
        out["column_config"] = cc
    rf = {}
    for k, v in (cfg.get("custom_root_fields") or {}).items():
        if isinstance(v, dict) and not v.get("comment"):
            v = v.get("name")
        if v is not None:
            rf[k] = v
    if rf:
        out["custom_root_fields"] = rf
    for k in ("custom_name", "comment"):
        if cfg.get(k) is not None:
            out[k] = cfg[k]
    return out


def config_for_api(norm):
    """A normalized config as sent to Hasura (custom_column_names left for the server to derive)."""
    return copy.deepcopy(norm) if norm else {}


class TableSpec(object):
    """One desired table: state, configuration (None = leave as is), permissions (None = leave as is)."""

    def __init__(self, schema, name, state="present", configuration=None, permissions=None):
        self.schema, self.name, self.state = schema, name, state
        self.configuration = configuration
        self.permissions = permissions

    @property
    def qt(self):
        return (self.schema, self.name)

    @classmethod
    def from_param(cls, d, default_schema, default_permissions=None, default_state="present"):
        if isinstance(d, str):
            d = {"name": d}
        name = d.get("name")
        schema = d.get("schema") or default_schema
        _check_pg_ident(name, "table")
        _check_pg_ident(schema, "schema")
        state = d.get("state") or default_state
        if state not in ("present", "absent"):
            raise HasuraError("table %s.%s: state must be present or absent" % (schema, name))
        keys = ("custom_name", "custom_root_fields", "column_config", "comment")
        configuration = None
        if any(d.get(k) is not None for k in keys):
            if d.get("custom_name") is not None:
                _check_gql(d["custom_name"], "table %s.%s: custom_name" % (schema, name))
            rf = d.get("custom_root_fields") or {}
            unknown = set(rf) - set(ROOT_FIELDS)
            if unknown:
                raise HasuraError("table %s.%s: unknown custom_root_fields %s (known: %s)"
                                  % (schema, name, ", ".join(sorted(unknown)), ", ".join(ROOT_FIELDS)))
            for k, v in rf.items():
                _check_gql(v.get("name") if isinstance(v, dict) else v,
                           "table %s.%s: custom_root_fields.%s" % (schema, name, k))
            for col, c in (d.get("column_config") or {}).items():
                _check_pg_ident(col, "table %s.%s: column_config column" % (schema, name))
                if (c or {}).get("custom_name") is not None:
                    _check_gql(c["custom_name"], "table %s.%s: column_config.%s.custom_name" % (schema, name, col))
            configuration = normalize_config(dict((k, d.get(k)) for k in keys))
        perms = d.get("permissions")
        if perms is None:
            perms = default_permissions
        permissions = None if perms is None else parse_permissions(perms, "%s.%s" % (schema, name))
        return cls(schema, name, state, configuration, permissions)


def parse_permissions(perms, where):
    """[{role, select: {...}, insert: {...}, ...}] -> {(kind, role): (body, comment)}."""
    out = {}
    if not isinstance(perms, list):
        raise HasuraError("%s: permissions must be a list of {role, select/insert/update/delete}" % where)
    for p in perms:
        if not isinstance(p, dict) or "role" not in p:
            raise HasuraError("%s: each permission needs a role" % where)
        role = check_role(p["role"])
        unknown = set(p) - set(PERM_KINDS) - {"role", "comment"}
        if unknown:
            raise HasuraError("%s: permission for %s: unknown keys %s" % (where, role, ", ".join(sorted(unknown))))
        for kind in PERM_KINDS:
            if p.get(kind) is None:
                continue
            if (kind, role) in out:
                raise HasuraError("%s: %s permission for %s given twice" % (where, kind, role))
            body = permission_spec(kind, role, p[kind])
            out[(kind, role)] = (body, p[kind].get("comment", p.get("comment")))
    return out


# ------------------------------------------------------------------------------------------ state reading
def find_source(metadata, name):
    for s in metadata.get("sources") or []:
        if s.get("name") == name:
            return s
    return None


def current_tables(source):
    """{(schema, name): {"configuration": normalized, "permissions": {(kind, role): (body, comment)}}}."""
    out = {}
    for t in (source or {}).get("tables") or []:
        qt = qualified(t["table"])
        perms = {}
        for kind in PERM_KINDS:
            for p in t.get(kind + "_permissions") or []:
                perms[(kind, p["role"])] = (normalize_permission(kind, p.get("permission")), p.get("comment"))
        out[qt] = {"configuration": normalize_config(t.get("configuration")), "permissions": perms}
    return out


def inconsistent_tables(objects, source):
    """Tables of ``source`` that Hasura reports inconsistent (dropped in PostgreSQL)."""
    out = set()
    suffix = " in source %s" % source
    for o in objects or []:
        if o.get("type") == "table" and str(o.get("name", "")).endswith(suffix) and isinstance(o.get("definition"),
                                                                                               dict):
            out.add(qualified(o["definition"]))
    return out


# ------------------------------------------------------------------------------------------------- plan
class Plan(object):
    def __init__(self):
        self.ops = []             # fine-grained metadata operations (for one bulk)
        self.actions = []         # human lines
        self.remove_inconsistent = []  # tables to cut out of the metadata (replace_metadata)

    @property
    def changed(self):
        return bool(self.ops or self.remove_inconsistent)


def plan(source_name, current, specs, inconsistent=(), mirror_schema=None, catalog=None, cascade=False,
         default_permissions=None):
    """Pure: the operations that bring ``current`` (current_tables()) to ``specs``.

    ``mirror_schema`` + ``catalog`` (the set of (schema, name) in PostgreSQL): every catalog table of that schema is
    tracked (with ``default_permissions`` unless a spec says otherwise); tracked tables of that schema that are
    not in the catalog leave the metadata; inconsistent ones through ``remove_inconsistent``.
    """
    inconsistent = set(inconsistent)
    by_qt = {}
    for s in specs:
        if s.qt in by_qt:
            raise HasuraError("table %s listed twice" % shown(s.qt))
        by_qt[s.qt] = s
    if mirror_schema is not None:
        catalog = set(catalog or ())
        for qt in sorted(catalog):
            if qt[0] == mirror_schema and qt not in by_qt:
                by_qt[qt] = TableSpec(qt[0], qt[1], "present", None, default_permissions)
        for qt in sorted(current):
            if qt[0] == mirror_schema and qt not in catalog and qt not in by_qt:
                by_qt[qt] = TableSpec(qt[0], qt[1], "absent")
    p = Plan()
    src = source_name
    for qt in sorted(by_qt):
        s = by_qt[qt]
        cur = current.get(qt)
        tj = table_json(qt)
        if s.state == "absent":
            if cur is None:
                continue
            if qt in inconsistent:
                p.remove_inconsistent.append(qt)
                p.actions.append("remove %s (dropped in PostgreSQL) from source %s" % (shown(qt), src))
            else:
                p.ops.append({"type": "pg_untrack_table", "args": {"source": src, "table": tj, "cascade": cascade}})
                p.actions.append("untrack %s in source %s" % (shown(qt), src))
            continue
        if cur is None or qt in inconsistent:
            if cur is not None:  # inconsistent entry of a table that exists again: re-track replaces it
                p.actions.append("re-track %s (was inconsistent) in source %s" % (shown(qt), src))
            else:
                p.actions.append("track %s in source %s" % (shown(qt), src))
            args = {"source": src, "table": tj}
            if s.configuration:
                args["configuration"] = config_for_api(s.configuration)
            p.ops.append({"type": "pg_track_table", "args": args})
            have = {}
        else:
            if s.configuration is not None and s.configuration != cur["configuration"]:
                p.ops.append({"type": "pg_set_table_customization",
                              "args": {"source": src, "table": tj, "configuration": config_for_api(s.configuration)}})
                p.actions.append("customize %s in source %s" % (shown(qt), src))
            have = cur["permissions"]
        if s.permissions is None:
            continue
        want = s.permissions
        for key in sorted(set(have) | set(want)):
            kind, role = key
            h, w = have.get(key), want.get(key)
            if h is not None and w is not None and h == w:
                continue
            if h is not None:
                drop = {"source": src, "table": tj, "role": role}
                p.ops.append({"type": "pg_drop_%s_permission" % kind, "args": drop})
            if w is not None:
                args = {"source": src, "table": tj, "role": role, "permission": w[0]}
                if w[1] is not None:
                    args["comment"] = w[1]
                p.ops.append({"type": "pg_create_%s_permission" % kind, "args": args})
            p.actions.append("%s %s permission of %s on %s" % (
                "create" if h is None else "drop" if w is None else "replace", kind, role, shown(qt)))
    return p


def metadata_without(metadata, source_name, tables):
    """A copy of exported metadata without ``tables`` of ``source_name`` (nothing else touched)."""
    md = copy.deepcopy(metadata)
    drop = set(tables)
    src = find_source(md, source_name)
    if src is not None:
        src["tables"] = [t for t in src.get("tables") or [] if qualified(t["table"]) not in drop]
    return md


def describe(current, source_name, only=None):
    """Tables and permissions as shown in diffs and info results (sorted, JSON-friendly)."""
    out = {}
    for qt in sorted(current):
        if only is not None and qt not in only:
            continue
        cur = current[qt]
        perms = {}
        for (kind, role), (body, _comment) in sorted(cur["permissions"].items()):
            perms.setdefault(role, {})[kind] = body
        entry = {}
        if cur["configuration"]:
            entry["configuration"] = cur["configuration"]
        if perms:
            entry["permissions"] = perms
        out[shown(qt)] = entry
    return {"source": source_name, "tables": out}


def apply_plan_to(current, p, source_name):
    """What current_tables() will read after ``p`` (for the diff's ``after`` and check mode)."""
    after = copy.deepcopy(current)
    for qt in p.remove_inconsistent:
        after.pop(qt, None)
    for op in p.ops:
        a = op["args"]
        qt = qualified(a["table"])
        t = op["type"]
        if t == "pg_track_table":
            after[qt] = {"configuration": normalize_config(a.get("configuration")), "permissions": {}}
        elif t == "pg_untrack_table":
            after.pop(qt, None)
        elif t == "pg_set_table_customization":
            after[qt]["configuration"] = normalize_config(a.get("configuration"))
        elif t.startswith("pg_drop_"):
            after[qt]["permissions"].pop((t[len("pg_drop_"):-len("_permission")], a["role"]), None)
        elif t.startswith("pg_create_"):
            after[qt]["permissions"][(t[len("pg_create_"):-len("_permission")], a["role"])] = (
                a["permission"], a.get("comment"))
    return after


# ------------------------------------------------------------------------------------------------ write
def write_request(p, metadata, source_name, resource_version, unrelated_inconsistent, server_version=None):
    """The ONE request that applies ``p``: a bulk of ops, or (dropped tables to remove) replace_metadata v2.

    On a server that has ``pg_track_tables`` (v2.26.0+) the tracks travel as one ``pg_track_tables`` child
    (``allow_warnings: false``: all or nothing), otherwise as ``pg_track_table`` children of the bulk."""
    if not p.remove_inconsistent:
        ops = p.ops
        tracks = [op for op in ops if op["type"] == "pg_track_table"]
        if len(tracks) > 1 and version_tuple(server_version) >= TRACK_TABLES_SINCE:
            ops = [{"type": "pg_track_tables", "args": {"allow_warnings": False,
                                                        "tables": [op["args"] for op in tracks]}}]
            ops += [op for op in p.ops if op["type"] != "pg_track_table"]
        if len(ops) == 1:
            body = dict(ops[0])
        else:
            body = {"type": "bulk", "args": ops}
        body["resource_version"] = resource_version
        return body
    md = metadata_without(metadata, source_name, p.remove_inconsistent)
    md = _apply_ops_to_metadata(md, p.ops)
    return {"type": "replace_metadata", "version": 2, "resource_version": resource_version,
            "args": {"allow_inconsistent_metadata": bool(unrelated_inconsistent), "metadata": md}}


def _apply_ops_to_metadata(md, ops):
    """Fold fine-grained ops into an exported metadata document (for replace_metadata)."""
    md = copy.deepcopy(md)
    for op in ops:
        a = op["args"]
        src = find_source(md, a["source"])
        qt = qualified(a["table"])
        tables = src.setdefault("tables", [])
        entry = next((t for t in tables if qualified(t["table"]) == qt), None)
        t = op["type"]
        if t == "pg_track_table":
            if entry is not None:
                tables.remove(entry)
            entry = {"table": table_json(qt)}
            if a.get("configuration"):
                entry["configuration"] = a["configuration"]
            tables.append(entry)
        elif t == "pg_untrack_table":
            tables.remove(entry)
        elif t == "pg_set_table_customization":
            entry["configuration"] = a["configuration"]
        else:
            kind = t.split("_")[2]
            key = kind + "_permissions"
            perms = [x for x in entry.get(key, []) if x["role"] != a["role"]]
            if t.startswith("pg_create_"):
                new = {"role": a["role"], "permission": a["permission"]}
                if a.get("comment") is not None:
                    new["comment"] = a["comment"]
                perms.append(new)
            if perms:
                entry[key] = perms
            else:
                entry.pop(key, None)
    return md


def check_replace_answer(answer, unrelated_inconsistent):
    """replace_metadata with allow_inconsistent_metadata may leave new inconsistencies: those are an error."""
    if not isinstance(answer, dict):
        return
    known = set(o.get("name") for o in unrelated_inconsistent)
    new = [o for o in answer.get("inconsistent_objects") or [] if o.get("name") not in known]
    if new:
        raise HasuraError("replace_metadata: new inconsistent objects: %s"
                          % "; ".join("%s (%s)" % (o.get("name"), o.get("reason")) for o in new))


def explain(err, p, sent=None):
    """A Hasura error of a bulk child, named by the action that caused it."""
    body = err.body if isinstance(err.body, dict) else {}
    if body.get("code") in ("metadata-warnings", "invalid-configuration") and isinstance(body.get("internal"), list) \
            and body["internal"] and "message" in body["internal"][0]:
        return "%s (%s): %s" % (body.get("error"), body.get("code"), "; ".join(
            "%s: %s" % (w.get("name"), w.get("message")) for w in body["internal"]))
    children = (sent or {}).get("args") if (sent or {}).get("type") == "bulk" else None
    m = re.match(r"^\$\.args\[(\d+)\]", str(body.get("path", "")))
    if m and children and int(m.group(1)) < len(children) and "table" in children[int(m.group(1))]["args"]:
        op = children[int(m.group(1))]
        return "%s %s: %s (%s)" % (op["type"], shown(qualified(op["args"]["table"])), body.get("error"),
                                   body.get("code"))
    return str(err)


def run_reconcile(client, source_name, specs, check_mode=False, mirror_schema=None, catalog=None, cascade=False,
                  default_permissions=None, retries=3, server_version=None):
    """Read, compare, write once (unless check mode); a 409 re-reads and retries. Returns a result dict."""
    attempt = 0
    while True:
        attempt += 1
        rv, md = client.export()
        src = find_source(md, source_name)
        if src is None:
            raise HasuraError('source "%s" does not exist in Hasura (add it with berqenas.platform.hasura_source)'
                              % source_name)
        incons = client.inconsistent()
        bad = inconsistent_tables(incons, source_name)
        current = current_tables(src)
        p = plan(source_name, current, specs, bad, mirror_schema, catalog, cascade, default_permissions)
        touched = set(qualified(op["args"]["table"]) for op in p.ops) | set(p.remove_inconsistent)
        predicted = apply_plan_to(current, p, source_name)
        before = describe(current, source_name, touched)
        after = describe(predicted, source_name, touched)
        result = {"changed": p.changed, "actions": p.actions, "resource_version": rv,
                  "diff": {"before": before, "after": after}, "attempts": attempt,
                  "tracked": sorted(shown(qt) for qt in predicted)}
        if not p.changed or check_mode:
            return result
        removed = set("table %s in source %s" % (_hasura_shown(qt), source_name) for qt in p.remove_inconsistent)
        unrelated = [o for o in incons if o.get("name") not in removed]
        body = write_request(p, md, source_name, rv, unrelated, server_version)
        try:
            answer = client.metadata(body, write=True)
        except HasuraConflict:
            if attempt > retries:
                raise HasuraError("metadata kept changing under this run (409 conflict %d times)" % attempt)
            continue
        except HasuraError as e:
            # a concurrent writer may have acted first (already-tracked and the like come before a 409):
            # when the metadata moved since it was read, read again and retry
            if e.status == 400 and attempt <= retries and client.export()[0] != rv:
                continue
            raise HasuraError("write metadata: %s" % explain(e, p, body), e.status, e.code, e.body)
        if body["type"] == "replace_metadata":
            check_replace_answer(answer, unrelated)
        result["resource_version"] = rv + 1
        return result


def _hasura_shown(qt):
    return qt[1] if qt[0] == "public" else "%s.%s" % qt


# ----------------------------------------------------------------------------------------------- sources
def source_configuration(database_url_env, pool_settings=None, isolation_level=None, use_prepared_statements=None):
    ci = {"database_url": {"from_env": check_env_name(database_url_env)}}
    if pool_settings:
        ci["pool_settings"] = dict(pool_settings)
    if isolation_level:
        ci["isolation_level"] = isolation_level
    if use_prepared_statements is not None:
        ci["use_prepared_statements"] = bool(use_prepared_statements)
    return {"connection_info": ci}


def _same_config(have, want):
    h = copy.deepcopy((have or {}).get("connection_info") or {})
    w = (want or {}).get("connection_info") or {}
    for k in list(h):
        if k not in w:
            h.pop(k)  # server-side defaults of keys the caller does not manage
    return h == w


def redact_source(src):
    """A source as shown in results: inline database URLs (which may hold a password) replaced."""
    s = copy.deepcopy(src)
    ci = (s.get("configuration") or {}).get("connection_info") or {}
    url = ci.get("database_url")
    if isinstance(url, str):
        ci["database_url"] = REDACTED
    elif isinstance(url, dict) and "connection_parameters" in url:
        if "password" in url["connection_parameters"]:
            url["connection_parameters"]["password"] = REDACTED
    return s


def _shown_source(src):
    s = redact_source(src)
    s.pop("tables", None)
    return s


def reconcile_source(client, name, state, configuration=None, customization=None, cascade=False,
                     check_mode=False, retries=3):
    _check_pg_ident(name, "source")
    attempt = 0
    while True:
        attempt += 1
        rv, md = client.export()
        src = find_source(md, name)
        before = {"source": _shown_source(src)} if src else {}
        if state == "absent":
            if src is None:
                return {"changed": False, "actions": [], "diff": {"before": {}, "after": {}}}
            body = {"type": "pg_drop_source", "args": {"name": name, "cascade": cascade}, "resource_version": rv}
            action = "drop source %s" % name
            after = {}
        else:
            want = {"name": name, "kind": "postgres", "tables": (src or {}).get("tables", []),
                    "configuration": configuration}
            if customization:
                want["customization"] = customization
            if src is not None and _same_config(src.get("configuration"), configuration) and (
                    customization is None or src.get("customization") == customization):
                return {"changed": False, "actions": [], "diff": {"before": before, "after": before}}
            args = {"name": name, "configuration": configuration, "replace_configuration": src is not None}
            if customization is not None:
                args["customization"] = customization
            body = {"type": "pg_add_source", "args": args, "resource_version": rv}
            action = ("update" if src else "add") + " source %s" % name
            after = {"source": _shown_source(want)}
        result = {"changed": True, "actions": [action], "diff": {"before": before, "after": after}}
        if check_mode:
            return result
        try:
            client.metadata(body, write=True)
        except HasuraConflict:
            if attempt > retries:
                raise HasuraError("metadata kept changing under this run (409 conflict %d times)" % attempt)
            continue
        return result


# -------------------------------------------------------------------------------------------------- info
def info(client, source=None):
    """What is tracked, permissions, inconsistencies, server version (nothing secret)."""
    version = client.server_version()
    health = client.health()
    rv, md = client.export()
    incons = client.inconsistent()
    sources = []
    for s in md.get("sources") or []:
        if source is not None and s.get("name") != source:
            continue
        bad = inconsistent_tables(incons, s["name"])
        desc = describe(current_tables(s), s["name"])["tables"]
        for qt in bad:
            if shown(qt) in desc:
                desc[shown(qt)]["consistent"] = False
        for v in desc.values():
            v.setdefault("consistent", True)
        entry = {"name": s["name"], "tables": desc}
        url = ((s.get("configuration") or {}).get("connection_info") or {}).get("database_url")
        if isinstance(url, dict) and "from_env" in url:
            entry["database_url_env"] = url["from_env"]
        sources.append(entry)
    if source is not None:
        if not sources:
            raise HasuraError('source "%s" does not exist in Hasura' % source)
        incons = [o for o in incons if str(o.get("name", "")).endswith(" in source %s" % source)
                  or (o.get("type") == "source" and o.get("definition") == source)]
    return {"version": version, "health": health, "resource_version": rv, "sources": sources,
            "is_consistent": not incons, "inconsistent_objects": incons}
