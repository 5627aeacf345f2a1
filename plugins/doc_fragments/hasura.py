# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors plugins/module_utils/hasura.py hasura_argument_spec()
    DOCUMENTATION = r"""
options:
  hasura_url:
    description:
      - Base URL of the Hasura GraphQL Engine (v2), for example V(http://127.0.0.1:8080). The modules call
        C(POST /v1/metadata), C(GET /v1/version) and C(GET /healthz) under it.
    type: str
    required: true
  hasura_admin_secret:
    description:
      - The engine's C(HASURA_GRAPHQL_ADMIN_SECRET), sent as the C(X-Hasura-Admin-Secret) header only. Keep it in
        Ansible Vault; it is never logged or returned.
    type: str
  validate_certs:
    description:
      - Verify the server certificate for an C(https) URL.
    type: bool
    default: true
  hasura_timeout:
    description:
      - Seconds to wait for each HTTP answer.
    type: float
    default: 30
"""
