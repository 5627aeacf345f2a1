#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hasura_table
short_description: Track, untrack and mirror PostgreSQL tables in Hasura, with per-role permissions
version_added: 0.1.0
description:
  - Reads the metadata once (C(export_metadata) version 2, which carries C(resource_version)), computes the
    difference to the tables and permissions asked for, and writes it in B(one) request carrying that
    C(resource_version) (a C(bulk); on v2.26.0+ the tracks inside it as one C(pg_track_tables)). When another
    writer changed the metadata in between (HTTP 409 C(conflict)), it reads again and retries.
  - Nothing is written when nothing differs, so a second run reports C(changed=false) and sends no write.
  - O(mirror=true) makes the tracked tables of O(schema) in O(source) equal to the tables of that schema in
    PostgreSQL (read with the C(login_*) options). Every table is tracked; tables that are gone leave the
    metadata. A table dropped in PostgreSQL is an inconsistent object that C(pg_untrack_table) cannot remove
    (Hasura answers C(already-untracked)); the module then writes C(replace_metadata) of the exported metadata
    minus exactly those tables, so unrelated inconsistent objects stay as they are.
  - Permissions are replaced as a whole per table when O(tables[].permissions) (or O(default_permissions) for
    mirrored tables) is given. Roles and kinds not listed are dropped; permissions are left alone when omitted.
extends_documentation_fragment:
  - berqenas.platform.hasura
  - berqenas.platform.postgres
attributes:
  check_mode:
    description: Computes the same difference and reports it; sends no write request.
    support: full
  diff_mode:
    description: Before/after of the tables and permissions that change.
    support: full
  idempotent:
    description: A second run with the same options reports no change and writes nothing.
    support: full
options:
  source:
    description:
      - The Hasura source (database) holding the tables; for a tenant, its own source (see
        M(berqenas.platform.hasura_source)).
    type: str
    required: true
  schema:
    description:
      - Schema of tables named without one, and the schema O(mirror) reflects.
    type: str
    default: public
  tables:
    description:
      - Tables to track (O(tables[].state=present)) or untrack (V(absent)). A plain string is a table name.
    type: list
    elements: raw
    default: []
    suboptions:
      name:
        description: Table name.
        type: str
        required: true
      schema:
        description: Its schema (default O(schema)).
        type: str
      state:
        description: Tracked or not (default O(state)).
        type: str
        choices: [present, absent]
      custom_name:
        description: GraphQL name of the table's type and root fields.
        type: str
      custom_root_fields:
        description: Root field names, keys C(select), C(select_by_pk), C(select_aggregate), C(insert),
          C(insert_one), C(update), C(update_by_pk), C(delete), C(delete_by_pk) (and newer ones).
        type: dict
      column_config:
        description: Per column C(custom_name) and C(comment).
        type: dict
      comment:
        description: Comment of the table's GraphQL type.
        type: str
      permissions:
        description:
          - The table's complete permission set; a list of C(role) plus any of C(select), C(insert), C(update),
            C(delete) with Hasura's permission bodies (C(columns) list or C(*), C(filter)/C(check) boolean
            expressions that may reference session variables such as C(X-Hasura-User-Id), C(limit),
            C(allow_aggregations), C(set)).
        type: list
        elements: dict
  state:
    description:
      - State of the O(tables) entries that do not give their own.
    type: str
    choices: [present, absent]
    default: present
  mirror:
    description:
      - Track every table of O(schema) found in PostgreSQL and remove tracked tables of that schema that are gone.
    type: bool
    default: false
  default_permissions:
    description:
      - Permissions (as in O(tables[].permissions)) for tracked tables that do not list their own (mirrored
        ones and O(tables) entries without O(tables[].permissions)). When omitted, their permissions are left
        alone.
    type: list
    elements: dict
  cascade:
    description:
      - Untrack also what depends on a table (relationships from other tables).
    type: bool
    default: false
notes:
  - Without O(mirror) no PostgreSQL connection is made and the C(login_*) options are unused.
seealso:
  - module: berqenas.platform.hasura_source
  - module: berqenas.platform.hasura_table_info
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Track two tables of tenant acme with a custom name and a row filter on a session variable
  berqenas.platform.hasura_table:
    hasura_url: http://127.0.0.1:8080
    hasura_admin_secret: "{{ vault_hasura_admin_secret }}"
    source: acme
    schema: acme
    tables:
      - name: orders
        custom_name: Order
        custom_root_fields: {select: orders, select_by_pk: order}
        permissions:
          - role: acme_user
            select:
              columns: [id, customer_id, total]
              filter: {customer_id: {_eq: X-Hasura-User-Id}}
              limit: 100
      - customers

- name: Mirror the schema after a sync (tables created or dropped in PostgreSQL follow)
  berqenas.platform.hasura_table:
    hasura_url: http://127.0.0.1:8080
    hasura_admin_secret: "{{ vault_hasura_admin_secret }}"
    source: acme
    schema: acme
    mirror: true
    default_permissions:
      - role: acme_user
        select: {columns: "*", filter: {}}
    login_unix_socket: /var/run/postgresql
    login_db: berqenas

- name: Untrack a table
  berqenas.platform.hasura_table:
    hasura_url: http://127.0.0.1:8080
    hasura_admin_secret: "{{ vault_hasura_admin_secret }}"
    source: acme
    tables:
      - {name: orders, schema: acme, state: absent}
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, one line per change.
  returned: always
  type: list
  elements: str
  sample: ["track acme.orders in source acme", "create select permission of acme_user on acme.orders"]
resource_version:
  description: The metadata C(resource_version) after the run.
  returned: always
  type: int
tracked:
  description: Tables of O(source) tracked after the run (in check mode, after the changes it would make).
  returned: always
  type: list
  elements: str
attempts:
  description: Reads needed (more than 1 when a concurrent writer caused a 409).
  returned: always
  type: int
write_requests:
  description: Write requests sent (0 or 1).
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H
from ansible_collections.berqenas.platform.plugins.module_utils import pgconn

_CATALOG = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p')")


def catalog_tables(params, schema):
    with pgconn.connect(params) as conn:
        return set((s, n) for s, n in conn.execute(_CATALOG, (schema,)).fetchall())


def main():
    argument_spec = H.hasura_argument_spec()
    argument_spec.update(pgconn.postgres_argument_spec())
    argument_spec.update(
        source=dict(type="str", required=True),
        schema=dict(type="str", default="public"),
        tables=dict(type="list", elements="raw", default=[]),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        mirror=dict(type="bool", default=False),
        default_permissions=dict(type="list", elements="dict"),
        cascade=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        specs = [H.TableSpec.from_param(t, p["schema"], p["default_permissions"], p["state"]) for t in p["tables"]]
        defaults = None
        if p["default_permissions"] is not None:
            defaults = H.parse_permissions(p["default_permissions"], "default_permissions")
        client = H.Client(p["hasura_url"], p["hasura_admin_secret"], H.fetch_url_transport(module),
                          p["hasura_timeout"])
    except H.HasuraError as e:
        module.fail_json(msg="hasura_table: %s" % e)
    catalog = None
    if p["mirror"]:
        if not pgconn.HAS_PSYCOPG:
            module.fail_json(msg=missing_required_lib("psycopg"), exception=str(pgconn.PSYCOPG_IMPORT_ERROR))
        try:
            catalog = catalog_tables(p, p["schema"])
        except pgconn.psycopg.Error as e:
            module.fail_json(msg="read tables of schema %s: %s" % (p["schema"], str(e).strip()))
    try:
        version = client.server_version()
        res = H.run_reconcile(client, p["source"], specs, module.check_mode,
                              p["schema"] if p["mirror"] else None, catalog, p["cascade"], defaults,
                              server_version=version)
    except H.HasuraError as e:
        module.fail_json(msg="hasura_table %s: %s" % (p["source"], e), code=e.code, status=e.status)
    out = dict(changed=res["changed"], actions=res["actions"], resource_version=res["resource_version"],
               tracked=res["tracked"], attempts=res["attempts"], write_requests=client.writes)
    if module._diff:
        out["diff"] = res["diff"]
    module.exit_json(**out)


if __name__ == "__main__":
    main()
