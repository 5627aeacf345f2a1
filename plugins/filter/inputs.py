# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The front-door check of a playbook's inputs: one value against one rule of module_utils/validation.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.validation import check_type_list

from ansible_collections.berqenas.platform.plugins.filter.tenant import tenant_spec
from ansible_collections.berqenas.platform.plugins.module_utils import gateway, hasura, mssql_tsql, validation
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard


def _hasura_table(value, what):
    try:
        hasura.TableSpec.from_param(value, "public")
    except hasura.HasuraError as exc:
        raise validation.ValidationError(str(exc))
    return value


def _sync_table(value, what):
    """A table as `berqenas sync run --table` takes it (the T-SQL parser reads it); a dict (a table with its
    options) is the mssql_sync module's to check."""
    if isinstance(value, dict):
        return value
    validation.table_text(value, what)
    try:
        mssql_tsql.parse_two_part_name(value)
    except mssql_tsql.TsqlError as exc:
        raise validation.ValidationError("invalid %s %r: %s" % (what, value, exc))
    return value


class _AnyNetwork(object):
    # the interface's own networks are the wireguard_server module's to check (it knows the interface)
    networks = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _vpn_peers(value, what):
    wireguard.validate_peers(value, _AnyNetwork)
    return value


def _exposure(value, what):
    gateway.check_exposure(value)
    return value


def _remotedb(value, what):
    """An entry of berqenas_remotedbs: the rules `berqenas remotedb add` applies to what it writes."""
    if not isinstance(value, dict):
        raise validation.ValidationError("invalid %s entry %r: expected a mapping" % (what, value))
    name = validation.remotedb_name(value.get("name"))
    if value.get("tenant") is not None:
        validation.tenant_name(value["tenant"])
    validation.host(value.get("host"), "host of remote database %s" % name)
    validation.port(value.get("port", 1433), "port of remote database %s" % name)
    validation.login_text(value.get("user"), "user")
    validation.login_text(value.get("database"), "database")
    for table in value.get("tables") or []:
        _sync_table(table, "table of remote database %s" % name)
    if value.get("password_file") is not None:
        validation.path_text(value["password_file"], "password_file of remote database %s" % name)
    return value


# rule name -> f(value, what, *args)
RULES = {
    "tenant_name": lambda v, what: validation.tenant_name(v),
    "remotedb_name": lambda v, what: validation.remotedb_name(v),
    "peer_name": lambda v, what: validation.peer_name(v),
    "interface_name": validation.interface_name,
    "sql_identifier": validation.sql_identifier,
    "port": validation.port,
    "path": validation.path_text,
    "host_pattern": validation.host_pattern,
    "http_url": validation.http_url,
    "seconds": validation.seconds,
    "integer": validation.integer,
    "hasura_table": _hasura_table,
    "sync_table": _sync_table,
    "tenant_spec": lambda v, what: tenant_spec(v),
    "vpn_peers": _vpn_peers,
    "exposure": _exposure,
    "remotedb": _remotedb,
}
# rules whose lists the playbook walks itself (a string is not split at commas there)
_LISTS_ONLY = ("tenant_spec", "exposure", "remotedb")


def valid_input(value, rule, name, *args, **kwargs):
    """True when VALUE (the input NAME) keeps RULE, else fail naming the input and the rule. With each=true, VALUE
    is a list (or a comma-separated string, as a list option takes it) and every element must keep RULE; with
    empty=true, an empty string is accepted too (the input's "none"); WHAT names the value in the rule's message
    (default NAME), which always names the input."""
    each = kwargs.pop("each", False)
    what = kwargs.pop("what", name)
    if kwargs.pop("empty", False) and value == "":
        return True
    if kwargs or rule not in RULES:
        raise AnsibleFilterError("valid_input: unknown rule %r or options %s" % (rule, sorted(kwargs)))
    try:
        if each and rule in _LISTS_ONLY and not isinstance(value, list):
            raise validation.ValidationError("invalid %s: expected a list" % name)
        values = check_type_list(value) if each else [value]
        for v in values:
            RULES[rule](v, what, *args)
    except (validation.ValidationError, AnsibleFilterError, TypeError) as exc:
        raise AnsibleFilterError(str(exc) if name in str(exc) else "%s: %s" % (name, exc))
    return True


class FilterModule(object):
    def filters(self):
        return {"valid_input": valid_input}
