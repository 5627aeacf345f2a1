#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mssql_ping
short_description: Reach a SQL Server database and report its version and latency
version_added: 0.1.0
description:
  - Connects to O(source) through pymssql, asks for C(SERVERPROPERTY('ProductVersion')) and C(@@VERSION), and
    reports the login time and one query's round trip. Changes nothing.
  - A refused login fails with the server's error number (18456 and the like), a network error says so.
extends_documentation_fragment:
  - berqenas.platform.mssql
attributes:
  check_mode:
    description: Reads only; check mode runs it as usual.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Reach a remote SQL Server
  berqenas.platform.mssql_ping:
    source:
      host: erp.example.com
      user: sync_reader
      password: "{{ erp_password }}"
      database: ERP
  register: erp_ping
"""

RETURN = r"""
source:
  description: The server's answer.
  returned: success
  type: dict
  contains:
    product_version:
      description: C(SERVERPROPERTY('ProductVersion')).
      type: str
      sample: 16.0.1000.6
    version:
      description: C(@@VERSION).
      type: str
    latency_ms:
      description: Milliseconds of one query round trip after login.
      type: float
    login_ms:
      description: Milliseconds to connect and log in.
      type: float
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.berqenas.platform.plugins.module_utils import mssql as M


def main():
    module = AnsibleModule(argument_spec=dict(source=dict(type="dict", options=M.mssql_source_spec())),
                           supports_check_mode=True)
    if not module.params["source"]:
        module.fail_json(msg="source: the SQL Server connection is required")
    if not M.HAS_PYMSSQL:
        module.fail_json(msg=missing_required_lib("pymssql"), exception=str(M.PYMSSQL_IMPORT_ERROR))
    try:
        info = M.ping(M.source_from_params(module.params["source"]))
    except M.SourceError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, source=info)


if __name__ == "__main__":
    main()
