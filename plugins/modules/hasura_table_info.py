#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hasura_table_info
short_description: Report what Hasura tracks, its permissions, inconsistencies and server version
version_added: 0.1.0
description:
  - Reads C(GET /v1/version), C(GET /healthz), C(export_metadata) (version 2) and C(get_inconsistent_metadata).
    Changes nothing. Inline connection strings of sources are redacted.
extends_documentation_fragment:
  - berqenas.platform.hasura
attributes:
  check_mode:
    description: Reads only; check mode runs it as usual.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
options:
  source:
    description: Only this source; every source when omitted.
    type: str
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: What Hasura serves for tenant acme
  berqenas.platform.hasura_table_info:
    hasura_url: http://127.0.0.1:8080
    hasura_admin_secret: "{{ vault_hasura_admin_secret }}"
    source: acme
  register: acme_hasura
"""

RETURN = r"""
version:
  description: The server's version (C(GET /v1/version)).
  returned: always
  type: str
  sample: v2.40.0
health:
  description: Status and text of C(GET /healthz), for example C(OK) or C(WARN - inconsistent objects in schema).
  returned: always
  type: dict
resource_version:
  description: The metadata C(resource_version).
  returned: always
  type: int
is_consistent:
  description: No inconsistent objects (in O(source) when given).
  returned: always
  type: bool
inconsistent_objects:
  description: Hasura's inconsistent objects (of O(source) when given).
  returned: always
  type: list
  elements: dict
sources:
  description: One entry per source.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Source name.
      type: str
    database_url_env:
      description: The environment variable its connection string comes from (absent for inline URLs).
      type: str
    tables:
      description: C(schema.name) -> C(configuration), C(permissions) (role -> kind -> body), C(consistent).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.berqenas.platform.plugins.module_utils import hasura as H


def main():
    argument_spec = H.hasura_argument_spec()
    argument_spec.update(source=dict(type="str"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    try:
        client = H.Client(p["hasura_url"], p["hasura_admin_secret"], H.fetch_url_transport(module),
                          p["hasura_timeout"])
        out = H.info(client, p["source"])
    except H.HasuraError as e:
        module.fail_json(msg="hasura_table_info: %s" % e, code=e.code, status=e.status)
    module.exit_json(changed=False, **out)


if __name__ == "__main__":
    main()
