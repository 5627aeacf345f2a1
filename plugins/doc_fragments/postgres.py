# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors plugins/module_utils/pgconn.py postgres_argument_spec()
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server. A path is taken as a unix socket directory.
    type: str
    default: ''
    aliases: [host]
  login_port:
    description:
      - Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - Role to connect as; it needs CREATEROLE and ownership rights, normally a superuser.
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Passed to libpq as a keyword, never on a command line.
    type: str
    default: ''
    aliases: [password]
  login_unix_socket:
    description:
      - Unix socket directory; takes precedence over O(login_host).
    type: str
    default: ''
    aliases: [unix_socket]
  login_db:
    description:
      - Database to connect to.
    type: str
    aliases: [db]
  connect_timeout:
    description:
      - Seconds to wait for the connection.
    type: int
    default: 10
  connect_params:
    description:
      - Further libpq connection parameters, for example C(sslmode).
    type: dict
    default: {}
requirements:
  - psycopg >= 3.1 (psycopg 3) on the managed host
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
"""
