# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that validate platform inputs with the collection's one copy of the rules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.berqenas.platform.plugins.module_utils import validation

_SPEC_KEYS = ("name", "state", "connection_limit", "statement_timeout", "app_password", "ro_password")


def tenant_spec(value):
    """A tenant given as a name or a dict -> a validated dict for berqenas.platform.postgres_tenants."""
    d = dict(value) if isinstance(value, dict) else {"name": value}
    unknown = sorted(set(d) - set(_SPEC_KEYS))
    if unknown:
        raise AnsibleFilterError("tenant %r: unknown keys %s" % (d.get("name"), ", ".join(unknown)))
    try:
        validation.tenant_name(d.get("name"))
        if d.get("statement_timeout") is not None:
            validation.pg_duration(d["statement_timeout"])
        if d.get("connection_limit") is not None:
            validation.connection_limit(d["connection_limit"])
        if d.get("state", "present") not in ("present", "absent"):
            raise validation.ValidationError("invalid state %r: present or absent" % (d.get("state"),))
    except validation.ValidationError as exc:
        raise AnsibleFilterError(str(exc))
    return d


def tenant_name(value):
    """Return the name when valid, else fail with the rule it breaks."""
    try:
        return validation.tenant_name(value)
    except validation.ValidationError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {"tenant_spec": tenant_spec, "tenant_name": tenant_name}
