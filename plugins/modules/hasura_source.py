#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hasura_source
short_description: Add, update or drop a PostgreSQL source in Hasura, its connection string from an environment variable
version_added: 0.1.0
description:
  - A tenant's source connects as the tenant's own login role; the connection string (with its password) is given
    to the engine in an environment variable named by O(database_url_env) and never stored in the metadata. The
    module only accepts that form.
  - Reads the metadata (C(export_metadata) version 2), compares the source's connection settings with the
    desired ones and writes only when they differ (C(pg_add_source), with C(replace_configuration) for an
    existing source, or C(pg_drop_source)), carrying C(resource_version); a 409 re-reads and retries.
extends_documentation_fragment:
  - berqenas.platform.hasura
attributes:
  check_mode:
    description: Reports what would change; sends no write request.
    support: full
  diff_mode:
    description: Before/after of the source's configuration.
    support: full
  idempotent:
    description: A second run reports no change and writes nothing.
    support: full
options:
  name:
    description: Source name (for a tenant, the tenant's name).
    type: str
    required: true
  state:
    description: Whether the source exists.
    type: str
    choices: [present, absent]
    default: present
  database_url_env:
    description:
      - Name of the engine's environment variable holding the PostgreSQL URL, for example
        V(BERQENAS_ACME_DATABASE_URL). Required with O(state=present).
    type: str
  pool_settings:
    description: Hasura pool settings (C(max_connections), C(idle_timeout), C(retries), C(pool_timeout),
      C(connection_lifetime)).
    type: dict
  isolation_level:
    description: Transaction isolation level of the source.
    type: str
    choices: [read-committed, repeatable-read, serializable]
  use_prepared_statements:
    description: Whether the engine uses prepared statements.
    type: bool
  customization:
    description: Source customization (for example C(root_fields.namespace)).
    type: dict
  cascade:
    description: With O(state=absent), drop what depends on the source in other sources too.
    type: bool
    default: false
seealso:
  - module: berqenas.platform.hasura_table
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Tenant acme's source, connecting as acme_app through an environment variable of the engine
  berqenas.platform.hasura_source:
    hasura_url: http://127.0.0.1:8080
    hasura_admin_secret: "{{ vault_hasura_admin_secret }}"
    name: acme
    database_url_env: BERQENAS_ACME_DATABASE_URL
    pool_settings: {max_connections: 10}

- name: Remove it
  berqenas.platform.hasura_source:
    hasura_url: http://127.0.0.1:8080
    hasura_admin_secret: "{{ vault_hasura_admin_secret }}"
    name: acme
    state: absent
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
  sample: ["add source acme"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H


def main():
    argument_spec = H.hasura_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        database_url_env=dict(type="str", no_log=False),
        pool_settings=dict(type="dict"),
        isolation_level=dict(type="str", choices=["read-committed", "repeatable-read", "serializable"]),
        use_prepared_statements=dict(type="bool"),
        customization=dict(type="dict"),
        cascade=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[("state", "present", ["database_url_env"])])
    p = module.params
    try:
        client = H.Client(p["hasura_url"], p["hasura_admin_secret"], H.fetch_url_transport(module),
                          p["hasura_timeout"])
        config = None
        if p["state"] == "present":
            config = H.source_configuration(p["database_url_env"], p["pool_settings"], p["isolation_level"],
                                            p["use_prepared_statements"])
        res = H.reconcile_source(client, p["name"], p["state"], config, p["customization"], p["cascade"],
                                 module.check_mode)
    except H.HasuraError as e:
        module.fail_json(msg="hasura_source %s: %s" % (p["name"], e), code=e.code, status=e.status)
    out = dict(changed=res["changed"], actions=res["actions"])
    if module._diff:
        out["diff"] = res["diff"]
    module.exit_json(**out)


if __name__ == "__main__":
    main()
