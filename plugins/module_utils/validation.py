# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation rules shared by modules, playbooks (through modules/filters) and the orchestrator.

One copy of each rule: the orchestrator imports this module; it keeps none of its own.
Each function raises ValidationError with a message naming the input and the rule.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

TENANT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")

# Names a tenant may never take: PostgreSQL's own namespaces and roles, the platform's, and SQL or YAML
# words that would read as something else in configuration files, pg_hba or SQL.
RESERVED_TENANT_NAMES = frozenset([
    "public", "information_schema", "postgres", "template0", "template1", "berqenas", "pg_catalog", "pg_toast",
    "all", "any", "sameuser", "samerole", "samehost", "samenet", "replication", "current_user", "session_user",
    "current_role", "user", "role", "none", "null", "true", "false", "yes", "no", "on", "off", "y", "n",
    "default", "select", "insert", "update", "delete", "drop", "create", "alter", "grant", "revoke", "table",
    "schema", "database", "from", "where", "union", "and", "or", "not", "admin", "root", "superuser",
    "nologin", "login", "local", "host", "hostssl", "hostnossl", "reject", "trust", "unsafe", "vault",
])
RESERVED_PREFIXES = ("pg_", "berqenas")


class ValidationError(ValueError):
    """An input broke a rule; the message says which input and which rule."""


def tenant_name(name):
    """Return ``name`` if it is a valid tenant name, else raise ValidationError."""
    if not isinstance(name, str):
        raise ValidationError("tenant name must be a string, got %s" % type(name).__name__)
    if not TENANT_NAME_RE.match(name):
        raise ValidationError(
            "invalid tenant name %r: must match ^[a-z][a-z0-9_]{0,39}$ (lower-case letter first, then up to 39 "
            "lower-case letters, digits or underscores)" % (name,))
    if name in RESERVED_TENANT_NAMES or name.startswith(RESERVED_PREFIXES):
        raise ValidationError("invalid tenant name %r: reserved (see the reserved list in the docs)" % (name,))
    return name


_DURATION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})(ms|s|min|h)?\Z")


def pg_duration(value, what="statement_timeout"):
    """A PostgreSQL duration setting like '30s', '500ms', '5min' or '0' (off)."""
    value = str(value)
    if not _DURATION_RE.match(value):
        raise ValidationError("invalid %s %r: expected a number with unit ms, s, min or h (e.g. 30s)" % (what, value))
    return value


def connection_limit(value):
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValidationError("invalid connection_limit %r: expected an integer" % (value,))
    if n < -1 or n > 10000:
        raise ValidationError("invalid connection_limit %r: expected -1 (no limit) to 10000" % (value,))
    return n


def port(value, what="port"):
    try:
        n = int(str(value), 10)
    except (TypeError, ValueError):
        raise ValidationError("invalid %s %r: expected an integer 1-65535" % (what, value))
    if not 1 <= n <= 65535 or str(value) != str(n):
        raise ValidationError("invalid %s %r: expected an integer 1-65535" % (what, value))
    return n


_TEMPLATE_RE = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")


def no_template(value, what="value"):
    """Reject strings that carry template syntax where no template could be meant."""
    if isinstance(value, str) and _TEMPLATE_RE.search(value):
        raise ValidationError("invalid %s: template syntax ({{ }}, {%% %%}, {# #}) is not allowed in inputs" % what)
    return value
