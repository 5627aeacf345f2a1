#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: postgres_tenants
short_description: Reconcile many PostgreSQL tenants in one transaction
version_added: 0.1.0
description:
  - Brings a set of tenants of the platform database to their desired state in one connection, one catalog
    read and one transaction under an advisory lock, so CLI and AWX runs cannot interleave.
  - "Tenant V(NAME) is: schema V(NAME) owned by NOLOGIN role V(NAME_owner); LOGIN role V(NAME_app) (INHERIT member
    of V(NAME_owner), with C(role) set to V(NAME_owner) so what it creates belongs to the owner); LOGIN role
    V(NAME_ro) with USAGE on the schema and default privileges giving it SELECT on the owner's tables and
    sequences. Both login roles join the NOLOGIN group C(berqenas_tenants), which alone holds CONNECT on the
    platform database (revoked from PUBLIC)."
  - "Passwords are generated when not given (32 characters, never C({), C(}), C(%) or C(#)), sent to the server as
    client-side SCRAM-SHA-256 verifiers, and kept in O(credentials_dir) on the managed host (one 0600 JSON file
    per tenant). They are never returned or logged."
  - With O(tenants[].state=absent) on a tenant, the tenant is dumped with C(pg_dump) to O(backup_dir) first (unless
    O(backup=false)), then its schema, everything it owns and its roles are dropped. Deleting refuses unless
    O(confirm=true), and refuses while O(dependents) names something of that tenant unless O(cascade=true).
  - Catalog visibility is out of scope. Any role can read tenant names in C(pg_namespace) and C(pg_roles), as in
    any PostgreSQL cluster; data, schemas' contents and connections are isolated.
extends_documentation_fragment:
  - berqenas.platform.postgres
  - berqenas.platform.postgres.attributes
options:
  database:
    description:
      - The platform database where tenants live (it must exist).
    type: str
    default: berqenas
  create_database:
    description:
      - Create O(database) first when it does not exist (connecting to O(login_db), default C(postgres)).
    type: bool
    default: false
  tenants:
    description:
      - The tenants to reconcile. Tenants not listed are left alone.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Tenant name, C(^[a-z][a-z0-9_]{0,39}$), not a reserved word (see the collection docs).
        type: str
        required: true
      state:
        description:
          - V(present) creates or repairs the tenant, V(absent) deletes it.
        type: str
        choices: [present, absent]
        default: present
      connection_limit:
        description:
          - Connection limit of each login role; defaults to O(connection_limit).
        type: int
      statement_timeout:
        description:
          - C(statement_timeout) of each login role (for example V(30s)); defaults to O(statement_timeout).
        type: str
      app_password:
        description:
          - Password of V(NAME_app); generated when omitted.
        type: str
      ro_password:
        description:
          - Password of V(NAME_ro); generated when omitted.
        type: str
  connection_limit:
    description:
      - Default connection limit of each login role.
    type: int
    default: 10
  statement_timeout:
    description:
      - Default C(statement_timeout) of each login role.
    type: str
    default: 30s
  credentials_dir:
    description:
      - Directory (made 0700) for the generated credentials, one 0600 JSON file per tenant.
    type: path
    default: /etc/berqenas/tenants
  confirm:
    description:
      - Must be V(true) for any tenant with O(tenants[].state=absent) to be deleted.
    type: bool
    default: false
  cascade:
    description:
      - Delete even though O(dependents) lists things of the tenant.
    type: bool
    default: false
  dependents:
    description:
      - What still refers to each tenant (VPN peers, exposures, sync jobs), as a mapping from tenant name to a
        list of descriptions. A tenant with dependents is not deleted unless O(cascade=true).
    type: dict
    default: {}
  backup:
    description:
      - Dump the tenant's schema with C(pg_dump) before deleting it.
    type: bool
    default: true
  backup_dir:
    description:
      - Directory (made 0700) for the dumps; files are 0600, named C(NAME-YYYYmmddTHHMMSSZ.dump) (custom format).
    type: path
    default: /var/backups/berqenas
  pg_dump:
    description:
      - The C(pg_dump) executable; found next to the server's binaries or on PATH when omitted.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run's tenant lock before failing with RV(locked=true).
    type: float
    default: 30
  report:
    description:
      - Report each tenant's live state instead of reconciling (the read-only question C(berqenas tenant list)
        asks). Nothing changes, in check mode or not, and C(changed) is V(false). Every listed tenant is
        compared as O(tenants[].state=present); RV(tenants[].state) says V(ok), V(missing) or V(drifted).
        O(create_database) is ignored (a missing database makes every tenant V(missing)).
    type: bool
    default: false
seealso:
  - module: community.postgresql.postgresql_user
  - module: community.postgresql.postgresql_schema
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Two tenants, one with a tighter limit
  berqenas.platform.postgres_tenants:
    login_unix_socket: /run/postgresql
    database: berqenas
    tenants:
      - name: acme
      - name: globex
        connection_limit: 5
        statement_timeout: 10s

- name: Delete a tenant (dumped to /var/backups/berqenas first)
  berqenas.platform.postgres_tenants:
    database: berqenas
    confirm: true
    tenants:
      - name: globex
        state: absent
"""

RETURN = r"""
tenants:
  description: One entry per tenant given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Tenant name.
      type: str
    status:
      description: V(created), V(updated), V(unchanged), V(deleted) or V(absent).
      type: str
    changed:
      description: Whether this tenant changed (or would, in check mode).
      type: bool
    actions:
      description: What was done (or would be), one line per step.
      type: list
      elements: str
    credentials_file:
      description: Where the tenant's generated credentials are kept on the managed host.
      type: str
    schema:
      description: The tenant's schema.
      type: str
    owner_role:
      description: The NOLOGIN role that owns the schema.
      type: str
    login_role:
      description: The LOGIN role applications use.
      type: str
    readonly_role:
      description: The read-only LOGIN role.
      type: str
    state:
      description: V(ok), V(missing) or V(drifted) (what a reconcile would find to do).
      type: str
      returned: with O(report=true)
    backup_file:
      description: The dump taken before deletion.
      type: str
      returned: when a tenant was deleted with backup
  sample:
    - name: acme
      status: created
      changed: true
      actions: [create role acme_owner, create role acme_app]
      credentials_file: /etc/berqenas/tenants/acme.json
database:
  description: The platform database (O(database)).
  returned: always
  type: str
database_exists:
  description: Whether O(database) exists.
  returned: with O(report=true)
  type: bool
database_actions:
  description: Platform-wide steps (group role, CONNECT restriction, platform schema).
  returned: always
  type: list
  elements: str
hba_file:
  description: The server's C(pg_hba.conf) path (C(SHOW hba_file)), for the caller that manages it.
  returned: when connected
  type: str
database_created:
  description: Whether O(database) was created by this run (or would be, in check mode).
  returned: always
  type: bool
locked:
  description: True when another run held the lock for longer than O(lock_timeout).
  returned: on failure
  type: bool
summary:
  description: Counts of tenants per status.
  returned: always
  type: dict
  sample: {created: 2, updated: 0, unchanged: 998, deleted: 0}
"""

import copy
import os
import shutil
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.berqenas.platform.plugins.module_utils import pgconn, validation
from ansible_collections.berqenas.platform.plugins.module_utils import tenants as tlib


def _pg_dump_path(module, conn):
    if module.params["pg_dump"]:
        return module.params["pg_dump"]
    major = conn.info.server_version // 10000
    candidate = "/usr/lib/postgresql/%d/bin/pg_dump" % major
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("pg_dump")
    if not found:
        module.fail_json(msg="back up tenant: pg_dump not found (set pg_dump or backup=false)")
    return found


def _backup(module, conn, name):
    p = module.params
    backup_dir = p["backup_dir"]
    if not os.path.isdir(backup_dir):
        os.makedirs(backup_dir, mode=0o700)
    os.chmod(backup_dir, 0o700)
    path = os.path.join(backup_dir, "%s-%s.dump" % (name, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    info = pgconn.conninfo(p, p["database"])
    argv = [_pg_dump_path(module, conn), "--format=custom", "--no-password", "--schema", name,
            "--file", path, "--dbname", info["dbname"], "--username", info["user"], "--port", str(info["port"])]
    if info.get("host"):
        argv += ["--host", info["host"]]
    env = {}
    if p["login_password"]:
        env["PGPASSWORD"] = p["login_password"]  # environment, never argv
    old_umask = os.umask(0o077)
    try:
        rc, out, err = module.run_command(argv, environ_update=env)
    finally:
        os.umask(old_umask)
    if rc != 0:
        module.fail_json(msg="back up tenant %s: pg_dump failed: %s" % (name, err.strip()), tenants=[])
    os.chmod(path, 0o600)
    return path


def _ensure_database(module, p, create=True):
    """CREATE DATABASE (outside a transaction) when missing and ``create``; True when it is missing (was or would
    be created)."""
    from psycopg import sql

    with pgconn.connect(p, p["login_db"] or "postgres") as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (p["database"],)).fetchone():
            return False
        if create and not module.check_mode:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(p["database"])))
    return True


def _describe(entry, report):
    """What callers need of a tenant besides its status: schema, role names (and with report its state)."""
    roles = tlib.role_names(entry["name"])
    entry.update(schema=entry["name"], owner_role=roles["owner"], login_role=roles["app"], readonly_role=roles["ro"])
    if report:
        entry["state"] = {"unchanged": "ok", "created": "missing", "updated": "drifted"}[entry["status"]]
        entry["changed"] = False
    return entry


def _report(module, p, specs, store):
    """The report=true answer: each tenant compared with the database by a reconcile that changes nothing."""
    specs = [copy.copy(s) for s in specs]
    for s in specs:
        s.state = "present"
    try:
        missing_db = _ensure_database(module, p, create=False)
    except Exception as exc:
        module.fail_json(msg="report tenants: %s" % str(exc).strip(), tenants=[])
    if missing_db:
        tenants = [{"name": s.name, "changed": True, "status": "created", "actions": ["create"],
                    "credentials_file": store.path(s.name)} for s in specs]
    else:
        try:
            with pgconn.connect(p, p["database"]) as conn:
                tenants = tlib.reconcile(conn, specs, p["database"], store, check_mode=True,
                                         host=p["login_unix_socket"] or p["login_host"] or None,
                                         port=p["login_port"])["tenants"]
        except Exception as exc:
            module.fail_json(msg="report tenants in database %s: %s" % (p["database"], str(exc).strip()),
                             tenants=[])
    module.exit_json(changed=False, database=p["database"], database_exists=not missing_db,
                     tenants=[_describe(t, True) for t in tenants])


def main():
    argument_spec = pgconn.postgres_argument_spec()
    argument_spec.update(
        database=dict(type="str", default="berqenas"),
        create_database=dict(type="bool", default=False),
        tenants=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            connection_limit=dict(type="int"),
            statement_timeout=dict(type="str"),
            app_password=dict(type="str", no_log=True),
            ro_password=dict(type="str", no_log=True),
        )),
        connection_limit=dict(type="int", default=10),
        statement_timeout=dict(type="str", default="30s"),
        credentials_dir=dict(type="path", default="/etc/berqenas/tenants"),
        confirm=dict(type="bool", default=False),
        cascade=dict(type="bool", default=False),
        dependents=dict(type="dict", default={}),
        backup=dict(type="bool", default=True),
        backup_dir=dict(type="path", default="/var/backups/berqenas"),
        pg_dump=dict(type="path"),
        lock_timeout=dict(type="float", default=30),
        report=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if not pgconn.HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(pgconn.PSYCOPG_IMPORT_ERROR))

    # Validation before anything is touched.
    defaults = {"connection_limit": p["connection_limit"], "statement_timeout": p["statement_timeout"]}
    try:
        specs = tlib.validate_specs([tlib.TenantSpec.from_dict(t, defaults) for t in p["tenants"]])
        validation.no_template(p["database"], "database")
    except validation.ValidationError as exc:
        module.fail_json(msg="validate tenants: %s" % exc, tenants=[])
    store = tlib.CredentialStore(p["credentials_dir"])
    if p["report"]:
        _report(module, p, specs, store)
    absent = [s for s in specs if s.state == "absent"]
    if absent and not p["confirm"]:
        module.fail_json(msg="delete tenant %s: refused without confirm=true" % ", ".join(s.name for s in absent),
                         tenants=[])
    deps = dict((k, v) for k, v in (p["dependents"] or {}).items() if v)
    blocked = [s.name for s in absent if deps.get(s.name)]
    if blocked and not p["cascade"]:
        module.fail_json(msg="delete tenant %s: still has dependents (%s); use cascade to delete anyway" % (
            ", ".join(blocked), "; ".join("%s: %s" % (n, ", ".join(map(str, deps[n]))) for n in blocked)),
            tenants=[])

    host = p["login_unix_socket"] or p["login_host"] or None
    database_created = False
    if p["create_database"]:
        try:
            database_created = _ensure_database(module, p)
        except Exception as exc:
            module.fail_json(msg="create database %s: %s" % (p["database"], str(exc).strip()), tenants=[])
        if database_created and module.check_mode:
            # nothing to inspect yet: every present tenant would be created
            module.exit_json(changed=True, database_created=True, database_actions=["create database"],
                             database=p["database"],
                             tenants=[_describe({"name": s.name, "changed": True, "status": "created",
                                                 "actions": ["create"], "credentials_file": store.path(s.name)},
                                                False) for s in specs if s.state == "present"],
                             summary=dict(created=len(specs), updated=0, unchanged=0, deleted=0, absent=0))
    try:
        conn = pgconn.connect(p, p["database"])
    except Exception as exc:  # psycopg.OperationalError and friends: say where we tried to connect
        module.fail_json(msg="connect to database %s: %s" % (p["database"], str(exc).strip()), tenants=[])

    result = dict(changed=database_created, tenants=[], database_actions=[], database_created=database_created,
                  database=p["database"])
    try:
        with conn:
            result["hba_file"] = conn.execute("SHOW hba_file").fetchone()[0]
            present = [s for s in specs if s.state == "present"]
            if present or not absent:
                res = tlib.reconcile(conn, present, p["database"], store, check_mode=module.check_mode,
                                     lock_timeout=p["lock_timeout"], host=host, port=p["login_port"])
                res["changed"] = res["changed"] or database_created
                result.update(res)
                if database_created:
                    result["database_actions"].insert(0, "create database %s" % p["database"])
            for spec in absent:
                entry = {"name": spec.name, "changed": False, "status": "absent", "actions": [],
                         "credentials_file": store.path(spec.name)}
                if tlib.tenant_exists(conn, spec.name):
                    entry.update(changed=True, status="deleted", actions=["drop schema %s and roles" % spec.name])
                    if not module.check_mode:
                        if p["backup"]:
                            entry["backup_file"] = _backup(module, conn, spec.name)
                            entry["actions"].insert(0, "dump schema to %s" % entry["backup_file"])
                        tlib.drop_tenant(conn, spec.name, lock_timeout=p["lock_timeout"])
                        store.remove(spec.name)
                result["tenants"].append(entry)
                result["changed"] = result["changed"] or entry["changed"]
    except tlib.TenantLocked as exc:
        module.fail_json(msg=str(exc), locked=True, tenants=[])
    except tlib.TenantError as exc:
        module.fail_json(msg=str(exc), tenants=[])
    except Exception as exc:
        module.fail_json(msg="reconcile tenants: %s" % str(exc).strip(), exception=traceback.format_exc(),
                         tenants=[])

    summary = dict(created=0, updated=0, unchanged=0, deleted=0, absent=0)
    result["tenants"] = [_describe(t, False) for t in result["tenants"]]
    for t in result["tenants"]:
        summary[t["status"]] += 1
    result["summary"] = summary
    if module._diff:
        changed = [t for t in result["tenants"] if t["changed"]]
        result["diff"] = dict(
            before="".join("%s: %s\n" % (t["name"], "absent" if t["status"] == "created" else "present (drifted)"
                                         if t["status"] == "updated" else "present") for t in changed),
            after="".join("%s: %s\n" % (t["name"], "absent" if t["status"] == "deleted" else "present: " +
                                        "; ".join(t["actions"])) for t in changed))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
