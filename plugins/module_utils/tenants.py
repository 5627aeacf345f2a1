# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bulk tenant reconciler: one connection, one catalog read, one transaction.

Why hand-written rather than community.postgresql tasks: a per-tenant loop of those modules costs seconds
per tenant (bench/bench_tenants.py runs that loop, bench/naive_tenants.yml, beside this path), because every
task is a new process, import and connection. Here the whole desired set is compared with the catalog in
one query and only the difference is executed, in one transaction under an advisory lock.

A tenant NAME is: schema NAME owned by NOLOGIN role NAME_owner; LOGIN role NAME_app (INHERIT member of
NAME_owner, ``SET role = NAME_owner`` so what it creates belongs to the owner); LOGIN role NAME_ro with USAGE
on the schema and default privileges FOR ROLE NAME_owner (SELECT on tables and sequences). Both login roles are
members of the NOLOGIN group ``berqenas_tenants``, which alone holds CONNECT on the platform database (PUBLIC's
CONNECT is revoked there; one grant instead of one per role keeps datacl small). Passwords are sent as
client-side SCRAM verifiers (libpq ``PQencryptPasswordConn``), never in clear text.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import secrets
import string

from ansible_collections.berqenas.platform.plugins.module_utils import validation

from ansible_collections.berqenas.platform.plugins.module_utils.pgconn import psycopg, sql

GROUP_ROLE = "berqenas_tenants"
PLATFORM_SCHEMA = "berqenas"
LOCK_KEY = 0x6271_7465_6E61_6E74  # "bqtenant": the advisory lock every tenant change takes
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.+=^~!"  # no { } % # (inputs are data)
PASSWORD_LENGTH = 32


class TenantError(Exception):
    """A tenant operation failed; the message reads '<action> <object>: <cause>'."""


class TenantLocked(TenantError):
    """Another run holds the tenant lock."""


def role_names(name):
    return {"owner": name + "_owner", "app": name + "_app", "ro": name + "_ro"}


def generate_password():
    return "".join(secrets.choice(PASSWORD_ALPHABET) for dummy in range(PASSWORD_LENGTH))


class TenantSpec:
    """The desired state of one tenant, validated on construction."""

    __slots__ = ("name", "state", "connection_limit", "statement_timeout", "app_password", "ro_password")

    def __init__(self, name, state="present", connection_limit=10, statement_timeout="30s", app_password=None,
                 ro_password=None):
        self.name = validation.tenant_name(name)
        if state not in ("present", "absent"):
            raise validation.ValidationError("invalid state %r for tenant %s: present or absent" % (state, name))
        self.state = state
        self.connection_limit = validation.connection_limit(connection_limit)
        self.statement_timeout = validation.pg_duration(statement_timeout)
        for pw in (app_password, ro_password):
            if pw is not None:
                _check_password(pw, name)
        self.app_password = app_password
        self.ro_password = ro_password

    @classmethod
    def from_dict(cls, d, defaults=None):
        d = dict(d) if isinstance(d, dict) else {"name": d}
        merged = dict(defaults or {})
        merged.update({k: v for k, v in d.items() if v is not None})
        unknown = set(merged) - set(cls.__slots__)
        if unknown:
            raise validation.ValidationError("tenant %r: unknown keys %s" % (d.get("name"), ", ".join(sorted(unknown))))
        return cls(**merged)


def _check_password(pw, name):
    if not isinstance(pw, str) or len(pw) < 12 or len(pw) > 128:
        raise validation.ValidationError("password for tenant %s: 12 to 128 characters required" % name)
    if any(c in pw for c in "{}%#") or any(ord(c) < 32 for c in pw):
        raise validation.ValidationError("password for tenant %s: must not contain { } %% # or control characters"
                                         % name)


def validate_specs(specs):
    """Reject duplicates; return the specs (each already validated)."""
    seen = set()
    for s in specs:
        if s.name in seen:
            raise validation.ValidationError("duplicate tenant name %r" % s.name)
        seen.add(s.name)
    return specs


# --------------------------------------------------------------------------------------------- credentials
class CredentialStore:
    """Generated credentials, one JSON file per tenant, 0600 in a 0700 directory on the database host."""

    def __init__(self, directory):
        self.dir = directory

    def path(self, name):
        return os.path.join(self.dir, name + ".json")

    def load(self, name):
        try:
            with open(self.path(name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def ensure_dir(self):
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, mode=0o700)
        if os.stat(self.dir).st_mode & 0o777 != 0o700:
            os.chmod(self.dir, 0o700)

    def save(self, name, data):
        self.ensure_dir()
        tmp = self.path(name) + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(name))

    def remove(self, name):
        try:
            os.unlink(self.path(name))
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------- inspection
_INSPECT = """
WITH t(name) AS (SELECT unnest(%(names)s::text[])),
     db AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT t.name,
       o.oid IS NOT NULL, coalesce(o.rolcanlogin, false),
       a.oid IS NOT NULL, coalesce(a.rolcanlogin, false), coalesce(a.rolinherit, false), a.rolconnlimit, {pw_a},
       r.oid IS NOT NULL, coalesce(r.rolcanlogin, false), coalesce(r.rolinherit, false), r.rolconnlimit, {pw_r},
       n.oid IS NOT NULL, coalesce(n.nspowner = o.oid, false), coalesce(n.nspacl::text[], '{{}}'),
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = o.oid AND m.member = a.oid),
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = g.oid AND m.member = a.oid),
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = g.oid AND m.member = r.oid),
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member IN (o.oid, r.oid)
                 AND m.roleid <> g.oid),
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = a.oid AND m.roleid NOT IN (o.oid, g.oid)),
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s, db WHERE s.setrole = a.oid
                  AND s.setdatabase = db.oid), '{{}}'),
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s, db WHERE s.setrole = r.oid
                  AND s.setdatabase = db.oid), '{{}}'),
       coalesce((SELECT d.defaclacl::text[] FROM pg_default_acl d WHERE d.defaclrole = o.oid
                  AND d.defaclnamespace = n.oid AND d.defaclobjtype = 'r'), '{{}}'),
       coalesce((SELECT d.defaclacl::text[] FROM pg_default_acl d WHERE d.defaclrole = o.oid
                  AND d.defaclnamespace = n.oid AND d.defaclobjtype = 'S'), '{{}}')
FROM t
LEFT JOIN {roles} o ON o.rolname = t.name || '_owner'
LEFT JOIN {roles} a ON a.rolname = t.name || '_app'
LEFT JOIN {roles} r ON r.rolname = t.name || '_ro'
LEFT JOIN pg_namespace n ON n.nspname = t.name
LEFT JOIN pg_roles g ON g.rolname = '""" + GROUP_ROLE + "'"

_FIELDS = ("name", "owner", "owner_login", "app", "app_login", "app_inherit", "app_connlimit", "app_verifier",
           "ro", "ro_login", "ro_inherit", "ro_connlimit", "ro_verifier", "schema", "schema_owned", "schema_acl",
           "app_in_owner", "app_in_group", "ro_in_group", "owner_or_ro_extra_membership", "app_extra_membership",
           "app_settings", "ro_settings", "dacl_tables", "dacl_sequences")


def _is_superuser(conn):
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]


def inspect(conn, names):
    """Return {name: dict of catalog facts} for every requested name (facts for missing objects are False)."""
    if _is_superuser(conn):
        q = _INSPECT.format(roles="pg_authid", pw_a="a.rolpassword", pw_r="r.rolpassword")
    else:  # verifiers are unreadable without superuser: password drift cannot be seen, only set
        q = _INSPECT.format(roles="pg_roles", pw_a="NULL::text", pw_r="NULL::text")
    rows = conn.execute(q, {"names": list(names)}).fetchall()
    return dict((row[0], dict(zip(_FIELDS, row))) for row in rows)


def inspect_database(conn):
    """Facts about the platform database itself (one row)."""
    row = conn.execute(
        "SELECT current_database(),"
        " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(g)s AND NOT rolcanlogin),"
        " coalesce((SELECT datacl::text[] FROM pg_database WHERE datname = current_database()), '{}'),"
        " has_schema_privilege('public', 'public', 'CREATE'),"
        " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(p)s)",
        {"g": GROUP_ROLE, "p": PLATFORM_SCHEMA}).fetchone()
    datacl = row[2]
    public_connect = not datacl or any(item.startswith("=") and "c" in item.split("/")[0] for item in datacl)
    group_connect = any(item.startswith(GROUP_ROLE + "=") and "c" in item.split("/")[0][len(GROUP_ROLE):]
                        for item in datacl)
    return {"database": row[0], "group": row[1], "public_connect": public_connect, "group_connect": group_connect,
            "public_create": row[3], "platform_schema": row[4]}


# -------------------------------------------------------------------------------------------------- planning
class Action:
    """One step of a plan: a description for humans and the statements that carry it out."""

    __slots__ = ("tenant", "what", "statements")

    def __init__(self, tenant, what, statements):
        self.tenant = tenant
        self.what = what
        self.statements = statements


def _ident(*parts):
    return sql.Identifier(*parts)


def _settings(spec, kind):
    names = role_names(spec.name)
    want = ["search_path=" + spec.name, "statement_timeout=" + spec.statement_timeout]
    if kind == "app":
        want.append("role=" + names["owner"])
    else:
        want.append("default_transaction_read_only=on")
    return sorted(want)


def _setting_statements(spec, kind, database):
    role = role_names(spec.name)[kind]
    base = sql.SQL("ALTER ROLE {} IN DATABASE {} ").format(_ident(role), _ident(database))
    stmts = [base + sql.SQL("RESET ALL"),
             base + sql.SQL("SET search_path = {}").format(_ident(spec.name)),
             base + sql.SQL("SET statement_timeout = {}").format(sql.Literal(spec.statement_timeout))]
    if kind == "app":
        stmts.append(base + sql.SQL("SET role = {}").format(_ident(role_names(spec.name)["owner"])))
    else:
        stmts.append(base + sql.SQL("SET default_transaction_read_only = on"))
    return stmts


def plan_database(facts, database):
    """Platform-wide steps: the group role, CONNECT only through it, no CREATE in public, the platform schema."""
    actions = []
    if not facts["group"]:
        actions.append(Action(None, "create group role " + GROUP_ROLE,
                              [sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(GROUP_ROLE))]))
    if facts["public_connect"] or not facts["group_connect"]:
        actions.append(Action(None, "restrict CONNECT on database %s to %s" % (database, GROUP_ROLE), [
            sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(_ident(database)),
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(_ident(database), _ident(GROUP_ROLE))]))
    if facts["public_create"]:
        actions.append(Action(None, "revoke CREATE on schema public from PUBLIC",
                              [sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC")]))
    if not facts["platform_schema"]:
        actions.append(Action(None, "create platform schema " + PLATFORM_SCHEMA, [
            sql.SQL("CREATE SCHEMA {}").format(_ident(PLATFORM_SCHEMA)),
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(_ident(PLATFORM_SCHEMA))]))
    return actions


def plan_tenant(spec, fact, database, passwords):
    """Steps that bring one tenant from ``fact`` (catalog) to ``spec``. ``passwords`` gives
    {'app': (password, verifier, changed_by_caller), 'ro': ...} from the credential store."""
    names = role_names(spec.name)
    o, a, r, n = _ident(names["owner"]), _ident(names["app"]), _ident(names["ro"]), _ident(spec.name)
    g = _ident(GROUP_ROLE)
    lim = sql.Literal(spec.connection_limit)
    acts = []

    def add(what, *stmts):
        acts.append(Action(spec.name, what, list(stmts)))

    if not fact["owner"]:
        add("create role " + names["owner"], sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(o))
    elif fact["owner_login"]:
        add("make %s NOLOGIN" % names["owner"], sql.SQL("ALTER ROLE {} NOLOGIN").format(o))
    for kind, ident in (("app", a), ("ro", r)):
        role = names[kind]
        verifier = passwords[kind][1]
        if not fact[kind]:
            add("create role " + role,
                sql.SQL("CREATE ROLE {} LOGIN INHERIT CONNECTION LIMIT {} PASSWORD {}").format(
                    ident, lim, sql.Literal(verifier)))
            continue
        attrs_ok = fact[kind + "_login"] and fact[kind + "_inherit"]
        if not attrs_ok or fact[kind + "_connlimit"] != spec.connection_limit:
            add("set LOGIN INHERIT CONNECTION LIMIT %d on %s" % (spec.connection_limit, role),
                sql.SQL("ALTER ROLE {} LOGIN INHERIT CONNECTION LIMIT {}").format(ident, lim))
        if passwords[kind][2] or (fact[kind + "_verifier"] is not None and fact[kind + "_verifier"] != verifier):
            add("set password of " + role, sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
    if not (fact["app"] and fact["app_in_owner"]):
        add("grant %s to %s" % (names["owner"], names["app"]), sql.SQL("GRANT {} TO {}").format(o, a))
    if not (fact["app"] and fact["app_in_group"]):
        add("grant %s to %s" % (GROUP_ROLE, names["app"]), sql.SQL("GRANT {} TO {}").format(g, a))
    if not (fact["ro"] and fact["ro_in_group"]):
        add("grant %s to %s" % (GROUP_ROLE, names["ro"]), sql.SQL("GRANT {} TO {}").format(g, r))
    if fact["owner_or_ro_extra_membership"] or fact["app_extra_membership"]:
        add("remove memberships outside the tenant", sql.SQL(
            "DO $$DECLARE m record; BEGIN FOR m IN SELECT p.rolname AS parent, c.rolname AS child "
            "FROM pg_auth_members x JOIN pg_roles p ON p.oid = x.roleid JOIN pg_roles c ON c.oid = x.member "
            "WHERE c.rolname IN ({o}, {a}, {r}) AND p.rolname NOT IN ({g}) "
            "AND NOT (c.rolname = {a} AND p.rolname = {o}) LOOP "
            "EXECUTE format('REVOKE %I FROM %I', m.parent, m.child); END LOOP; END$$").format(
            o=sql.Literal(names["owner"]), a=sql.Literal(names["app"]), r=sql.Literal(names["ro"]),
            g=sql.Literal(GROUP_ROLE)))
    if not fact["schema"]:
        add("create schema " + spec.name, sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(n, o))
    elif not fact["schema_owned"]:
        add("give schema %s to %s" % (spec.name, names["owner"]), sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(n, o))
    want_acl = {"%s=UC/%s" % (names["owner"], names["owner"]), "%s=U/%s" % (names["ro"], names["owner"])}
    have_acl = set(fact["schema_acl"] or []) if fact["schema"] and fact["schema_owned"] else set()
    if have_acl != want_acl:
        stmts = [sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(n)]
        for item in sorted(have_acl - want_acl):
            grantee = item.split("=", 1)[0].strip('"')
            if grantee and grantee not in (names["owner"], names["ro"]):
                stmts.append(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(n, _ident(grantee)))
        stmts.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(n, r))
        add("set privileges on schema " + spec.name, *stmts)
    want_dacl = ["%s=r/%s" % (names["ro"], names["owner"])]
    for objtype, key, word in (("TABLES", "dacl_tables", "tables"), ("SEQUENCES", "dacl_sequences", "sequences")):
        have = fact[key] if fact["schema"] else []
        if list(have or []) != want_dacl:
            add("default privileges: %s SELECT on %s of %s" % (names["ro"], word, names["owner"]),
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON {} FROM PUBLIC").format(
                    o, n, sql.SQL(objtype)),
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON {} TO {}").format(
                    o, n, sql.SQL(objtype), r))
    for kind in ("app", "ro"):
        if sorted(fact[kind + "_settings"] or []) != _settings(spec, kind) or not fact[kind]:
            extra = ", role" if kind == "app" else ", read only"
            add("set search_path, statement_timeout%s on %s" % (extra, names[kind]),
                *_setting_statements(spec, kind, database))
    return acts


# ------------------------------------------------------------------------------------------------ reconcile
def _lock(conn, timeout_s):
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal("%dms" % int(timeout_s * 1000))))
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        raise TenantLocked("lock tenants: another run holds the tenant lock (waited %ss)" % timeout_s)
    conn.execute("SET LOCAL lock_timeout = 0")


def _passwords_for(conn, spec, store):
    """Resolve the password and verifier of each login role. Returns ({kind: (pw, verifier, forced)}, dirty)."""
    names = role_names(spec.name)
    saved = store.load(spec.name) or {}
    out, dirty = {}, False
    for kind in ("app", "ro"):
        given = spec.app_password if kind == "app" else spec.ro_password
        entry = saved.get(kind) or {}
        pw = given or entry.get("password")
        forced = False
        if not pw:
            pw, dirty, forced = generate_password(), True, True
        verifier = entry.get("verifier") if entry.get("password") == pw else None
        if not verifier:
            verifier = conn.pgconn.encrypt_password(pw.encode(), names[kind].encode(), b"scram-sha-256").decode()
            dirty, forced = True, forced or bool(given) or bool(entry)
        out[kind] = (pw, verifier, forced)
    return out, dirty


class _NoPipeline:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _maybe_pipeline(conn, enabled):
    return conn.pipeline() if enabled else _NoPipeline()


def reconcile(conn, specs, database, store, check_mode=False, lock_timeout=30.0, host=None, port=None):
    """Bring every ``present`` spec to its desired state. Returns a result dict (no secrets)."""
    specs = validate_specs(list(specs))
    if not check_mode:
        store.ensure_dir()
    present = [s for s in specs if s.state == "present"]
    result = {"changed": False, "tenants": [], "database_actions": []}
    with conn.transaction():
        if not check_mode:
            _lock(conn, lock_timeout)
        db_facts = inspect_database(conn)
        db_actions = plan_database(db_facts, database)
        facts = inspect(conn, [s.name for s in present])
        if not check_mode:
            for act in db_actions:
                for stmt in act.statements:
                    conn.execute(stmt)
        plans = []
        # Pipeline mode: the server executes tenant i's statements while this process computes tenant i+1's
        # SCRAM verifiers (PBKDF2, the client-side half of the work). Errors surface at the end, in one piece.
        with _maybe_pipeline(conn, not check_mode):
            for spec in present:
                pw, dirty = _passwords_for(conn, spec, store)
                acts = plan_tenant(spec, facts[spec.name], database, pw)
                plans.append((spec, acts))
                if check_mode:
                    continue
                if dirty or (acts and not os.path.exists(store.path(spec.name))):
                    # saved before COMMIT: a password the server may hold is never lost
                    store.save(spec.name, credentials_document(spec.name, database, pw, host, port))
                for act in acts:
                    for stmt in act.statements:
                        conn.execute(stmt)
    result["database_actions"] = [a.what for a in db_actions]
    for spec, acts in plans:
        existed = facts[spec.name]["owner"] or facts[spec.name]["schema"]
        result["tenants"].append({"name": spec.name, "changed": bool(acts),
                                  "status": ("unchanged" if not acts else "updated" if existed else "created"),
                                  "actions": [a.what for a in acts], "credentials_file": store.path(spec.name)})
    result["changed"] = bool(db_actions) or any(t["changed"] for t in result["tenants"])
    return result


def credentials_document(name, database, passwords, host=None, port=None):
    names = role_names(name)
    doc = {"tenant": name, "database": database, "schema": name}
    if host:
        doc["host"] = host
    if port:
        doc["port"] = int(port)
    for kind in ("app", "ro"):
        doc[kind] = {"user": names[kind], "password": passwords[kind][0], "verifier": passwords[kind][1]}
    return doc


# ----------------------------------------------------------------------------------------------------- delete
def tenant_exists(conn, name):
    f = inspect(conn, [name])[name]
    return bool(f["owner"] or f["app"] or f["ro"] or f["schema"])


def drop_tenant(conn, name, lock_timeout=30.0):
    """Drop schema NAME with everything in it, then the three roles. The caller backs up first."""
    names = role_names(name)
    o, a, r = _ident(names["owner"]), _ident(names["app"]), _ident(names["ro"])
    with conn.transaction():
        _lock(conn, lock_timeout)
        f = inspect(conn, [name])[name]
        if f["schema"]:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(_ident(name)))
        present = [ident for ident, key in ((a, "app"), (r, "ro"), (o, "owner")) if f[key]]
        if present:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.SQL(", ").join(present)))
            for ident in present:
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("DROP ROLE {}").format(ident))
                except psycopg.errors.DependentObjectsStillExist as exc:
                    raise TenantError("drop role %s: it still owns objects or privileges in another database: %s"
                                      % (ident.as_string(conn), str(exc).splitlines()[0]))
    return True
