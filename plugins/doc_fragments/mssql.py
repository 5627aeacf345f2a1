# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors plugins/module_utils/mssql.py mssql_source_spec() (names as in community.general's mssql modules)
    DOCUMENTATION = r"""
options:
  source:
    description:
      - The SQL Server database to read, through pymssql (FreeTDS).
      - Required by M(berqenas.platform.mssql_sync); M(berqenas.platform.mssql_ping) asks it for the
        server's version and the round-trip latency.
    type: dict
    suboptions:
      host:
        description:
          - Host name or address of the SQL Server.
        type: str
        required: true
      port:
        description:
          - TCP port of the SQL Server.
        type: int
        default: 1433
      user:
        description:
          - SQL login to connect as; it needs SELECT on the synced tables and VIEW DATABASE STATE for
            C(MIN_ACTIVE_ROWVERSION()) and C(sys.database_recovery_status).
        type: str
        required: true
      password:
        description:
          - Password of O(source.user). Never logged nor returned.
        type: str
        required: true
      database:
        description:
          - The source database.
        type: str
        required: true
      login_timeout:
        description:
          - Seconds to wait for the login (process-wide in FreeTDS).
        type: int
        default: 10
      timeout:
        description:
          - Query timeout in seconds, V(0) for none (process-wide in FreeTDS).
        type: int
        default: 0
      tds_version:
        description:
          - TDS protocol version; V(7.3) or later returns C(date), C(time) and C(datetime2) natively.
        type: str
        default: '7.4'
        choices: ['7.0', '7.1', '7.2', '7.3', '7.4']
      encryption:
        description:
          - TLS for the connection, as pymssql's C(encryption) (V(require) refuses a server without TLS).
        type: str
        choices: [default, 'off', request, require]
requirements:
  - pymssql >= 2.3 (its wheels bundle FreeTDS) on the host that runs the sync
"""
