# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection options shared by the platform's modules (doc fragment berqenas.platform.postgres).

Names and meaning follow community.postgresql (login_host, login_port, login_user, login_password,
login_unix_socket, login_db, connect_params) so an operator's module_defaults carry over.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

__all__ = ["HAS_PSYCOPG", "PSYCOPG_IMPORT_ERROR", "psycopg", "sql", "postgres_argument_spec", "conninfo", "connect",
           "param_ident"]

# The collection's one psycopg import guard: other module_utils import psycopg, sql and HAS_PSYCOPG from here.
try:
    import psycopg
    from psycopg import sql

    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as exc:
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = exc
    psycopg = sql = None


def postgres_argument_spec():
    return dict(
        login_host=dict(type="str", default="", aliases=["host"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_user=dict(type="str", default="postgres", aliases=["user"]),
        login_password=dict(type="str", default="", no_log=True, aliases=["password"]),
        login_unix_socket=dict(type="str", default="", aliases=["unix_socket"]),
        login_db=dict(type="str", aliases=["db"]),
        connect_timeout=dict(type="int", default=10),
        connect_params=dict(type="dict", default={}),
    )


def conninfo(params, dbname=None):
    """Keyword arguments for psycopg.connect() from module params (password passed as a keyword, never argv)."""
    kw = dict(params.get("connect_params") or {})
    host = params.get("login_unix_socket") or params.get("login_host")
    if host:
        kw["host"] = host
    kw["port"] = params.get("login_port") or 5432
    kw["user"] = params.get("login_user") or "postgres"
    if params.get("login_password"):
        kw["password"] = params["login_password"]
    kw["dbname"] = dbname or params.get("login_db") or "postgres"
    kw["connect_timeout"] = params.get("connect_timeout") or 10
    kw.setdefault("application_name", "berqenas.platform")
    return kw


def connect(params, dbname=None, autocommit=True):
    return psycopg.connect(autocommit=autocommit, **conninfo(params, dbname))


def param_ident(*parts):
    """A quoted identifier for a statement that also takes parameters: psycopg reads every ``%`` of the
    composed text as a placeholder, so a ``%`` in a name is doubled."""
    return sql.SQL(sql.Identifier(*parts).as_string(None).replace("%", "%%"))
