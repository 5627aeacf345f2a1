#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mssql_sync_info
short_description: Report the state of SQL Server -> PostgreSQL sync jobs
version_added: 0.1.0
description:
  - Reads the watermarks and last results that M(berqenas.platform.mssql_sync) keeps in
    C(berqenas.sync_state) of the target database. Changes nothing.
  - To reach a SQL Server (version, latency), use M(berqenas.platform.mssql_ping).
extends_documentation_fragment:
  - berqenas.platform.postgres
attributes:
  check_mode:
    description: Reads only; check mode runs it as usual.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
options:
  job:
    description:
      - Only this job (remote database); all jobs when omitted.
    type: str
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Sync state of every job
  berqenas.platform.mssql_sync_info:
    login_db: berqenas
  register: sync_state
"""

RETURN = r"""
tables:
  description: One entry per synced table.
  returned: always
  type: list
  elements: dict
  contains:
    job:
      description: The job (remote database) name.
      type: str
    source:
      description: Source table as V([schema].[table]).
      type: str
    target:
      description: Target table as V(schema.table).
      type: str
    watermark:
      description: Next window's lower bound (hex), null for mode full.
      type: str
    last_run_at:
      description: ISO time of the last run that wrote state.
      type: str
    last_ok_at:
      description: ISO time of the last completed run.
      type: str
    last_result:
      description: Result of the last completed run.
      type: str
    rows_total:
      description: Rows in the target table as counted by the sync.
      type: int
    lag_s:
      description: Seconds since the last completed run.
      type: float
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_tsql, pgconn


def main():
    argument_spec = pgconn.postgres_argument_spec()
    argument_spec.update(job=dict(type="str"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not pgconn.HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(pgconn.PSYCOPG_IMPORT_ERROR))
    try:
        with pgconn.connect(module.params) as conn:
            rows = S.read_states(conn, module.params["job"])
    except Exception as exc:
        module.fail_json(msg="read sync state: %s" % str(exc).strip(), tables=[])
    tables = [dict(job=r["job"], source=mssql_tsql.quote_table(r["source_schema"], r["source_table"]),
                   target="%s.%s" % (r["target_schema"], r["target_table"]), watermark=r["hwm"],
                   last_run_at=r["last_run_at"], last_ok_at=r["last_ok_at"], last_result=r["last_result"],
                   rows_total=r["rows_total"], lag_s=r["lag_s"]) for r in rows]
    module.exit_json(changed=False, tables=tables)


if __name__ == "__main__":
    main()
