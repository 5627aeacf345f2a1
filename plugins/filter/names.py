# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters applying the collection's name rules (module_utils/validation.py) in playbooks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.berqenas.platform.plugins.module_utils import validation


def _apply(rule, value):
    try:
        return rule(value)
    except validation.ValidationError as exc:
        raise AnsibleFilterError(str(exc))


def peer_name(value):
    """Return the VPN peer name when valid, else fail with the rule it breaks."""
    return _apply(validation.peer_name, value)


def remotedb_name(value):
    """Return the remote database name when valid, else fail with the rule it breaks."""
    return _apply(validation.remotedb_name, value)


class FilterModule(object):
    def filters(self):
        return {"peer_name": peer_name, "remotedb_name": remotedb_name}
