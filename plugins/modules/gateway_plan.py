#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gateway_plan
short_description: Validate gateway exposures and render the platform's firewall blocks and pg_hba rules
version_added: 0.1.0
description:
  - Validates every input of the C(berqenas.platform.gateway) role (ports, CIDRs, hosts, names; template
    markers are refused) and renders what the role writes, so bad input fails before any rule is written.
  - Changes nothing on the managed host; the role writes the results with M(ansible.builtin.blockinfile).
  - "Rendered: the managed block of C(/etc/ufw/before.rules) (nat chains C(BQ-PREROUTING), C(BQ-POSTROUTING);
    filter chains C(BQ-INPUT), C(BQ-FORWARD), each declared so that every ufw load flushes it, jumps from ufw's
    own C(ufw-before-input) and C(ufw-before-forward)), the block of C(before6.rules) (IPv6 filter only: no IPv6
    NAT, routed IPv6 stays denied), the C(after.init) hook that adds the jumps from the built-in nat chains
    only when missing, and the C(pg_hba.conf) lines that admit each exposed tenant's login roles only from its
    sources (C(host) for VPN peers, C(hostssl) for allow-listed CIDRs, C(scram-sha-256))."
  - An exposure of a service on this host (loopback, C(localhost) or O(local_addresses)) opens its port to its
    sources; any other target is a DNAT port-forward (IPv4) with the matching route-allow rule, never masqueraded,
    so the target sees the client's address.
options:
  exposures:
    description:
      - Exposures keyed by (O(exposures[].tenant), O(exposures[].name)).
    type: list
    elements: dict
    default: []
    suboptions:
      tenant:
        description: Tenant whose VPN peers (and allow-listed CIDRs) may connect.
        type: str
        required: true
      name:
        description: Name of the exposure, unique per tenant.
        type: str
        default: db
      service:
        description:
          - V(postgres) means the platform database (O(postgres.host), O(postgres.port)). The default when
            O(exposures[].target) is not given.
        type: str
      target:
        description: C(HOST:PORT) (C([V6]:PORT)) of another service; forwards need an IPv4 address.
        type: str
      public_port:
        description: Port on the gateway; defaults to the target's port.
        type: raw
      allow:
        description: Extra source CIDRs (not VPN peers); PostgreSQL admits them only over TLS (C(hostssl)).
        type: list
        elements: str
        default: []
      state:
        description: V(absent) drops the exposure (same as leaving it out).
        type: str
        choices: [present, absent]
        default: present
  vpn_peers:
    description:
      - "The WireGuard peers exactly as the wireguard role publishes them (C(wireguard_peers_published)): dicts
        with C(name), C(tenant), C(addresses) (C(198.51.100.2) or C(198.51.100.2/32)), C(enabled) (default
        true) and C(expired) (default false). Only enabled, unexpired peers of a tenant are sources of that
        tenant's exposures; other keys (C(public_key), C(allowed_ips), ...) are ignored."
    type: list
    elements: dict
    default: []
  local_addresses:
    description: Addresses of this host besides loopback (targets there are opened, not forwarded).
    type: list
    elements: str
    default: []
  management:
    description: The management SSH access, allowed before ufw is enabled.
    type: dict
    default: {}
    suboptions:
      enabled:
        description: Allow the management port at all.
        type: bool
        default: true
      port:
        description: TCP port of SSH.
        type: int
        default: 22
      sources:
        description: CIDRs allowed to reach it; empty means any source.
        type: list
        elements: str
        default: []
  wireguard:
    description: The WireGuard listener to allow.
    type: dict
    default: {}
    suboptions:
      port:
        description: UDP port; V(0) or unset allows none.
        type: int
  masquerade:
    description: Egress NAT of the VPN subnets (never applied to DNAT forwards).
    type: dict
    default: {}
    suboptions:
      sources:
        description: VPN subnets to masquerade.
        type: list
        elements: str
        default: []
      egress_interface:
        description: Interface towards the outside; empty disables masquerading.
        type: str
        default: ''
      vpn_interface:
        description: WireGuard interface; with O(masquerade.egress_interface) it allows VPN egress forwarding.
        type: str
        default: ''
  postgres:
    description: The platform database that O(exposures[].service=postgres) means.
    type: dict
    default: {}
    suboptions:
      host:
        description: Its host as seen from the gateway.
        type: str
        default: 127.0.0.1
      port:
        description: Its port.
        type: int
        default: 5432
      database:
        description: The database named in the pg_hba lines.
        type: str
        default: berqenas
      role_suffixes:
        description: Login roles of tenant C(T) are C(T) followed by each suffix.
        type: list
        elements: str
        default: [_app, _ro]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
seealso:
  - module: ansible.builtin.blockinfile
  - module: community.general.ufw
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Plan the exposures of two tenants
  berqenas.platform.gateway_plan:
    exposures:
      - tenant: acme
        service: postgres
      - tenant: globex
        name: web
        target: 203.0.113.2:8080
        public_port: 18080
        allow: [192.0.2.0/24]
    vpn_peers: "{{ wireguard_peers_published }}"
    wireguard:
      port: 51820
  register: plan

- name: Write the block into before.rules
  ansible.builtin.blockinfile:
    path: /etc/ufw/before.rules
    marker: "# {mark} BERQENAS GATEWAY"
    insertafter: EOF
    block: "{{ plan.before_rules }}"
"""

RETURN = r"""
before_rules:
  description: The managed block of C(/etc/ufw/before.rules) (without markers).
  returned: success
  type: str
before6_rules:
  description: The managed block of C(/etc/ufw/before6.rules) (without markers).
  returned: success
  type: str
pg_hba:
  description: The managed C(pg_hba.conf) lines; empty when no database is exposed.
  returned: success
  type: str
hook:
  description: The C(after.init) hook script (jumps from the built-in nat chains, cleanup on stop).
  returned: success
  type: str
exposures:
  description: The resolved exposures, sorted by tenant and name.
  returned: success
  type: list
  elements: dict
  sample:
    - tenant: acme
      name: db
      service: postgres
      kind: input
      port: 5432
      target: 127.0.0.1:5432
      sources: [198.51.100.2/32]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.berqenas.platform.plugins.module_utils.gateway import (
    GatewayError,
    build_plan,
    public_plan,
    render_hook,
)


def argument_spec():
    return dict(
        exposures=dict(type="list", elements="dict", default=[], options=dict(
            tenant=dict(type="str", required=True),
            name=dict(type="str", default="db"),
            service=dict(type="str"),
            target=dict(type="str"),
            public_port=dict(type="raw"),
            allow=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        )),
        vpn_peers=dict(type="list", elements="dict", default=[]),
        local_addresses=dict(type="list", elements="str", default=[]),
        management=dict(type="dict", default={}, options=dict(
            enabled=dict(type="bool", default=True),
            port=dict(type="int", default=22),
            sources=dict(type="list", elements="str", default=[]),
        )),
        wireguard=dict(type="dict", default={}, options=dict(port=dict(type="int"))),
        masquerade=dict(type="dict", default={}, options=dict(
            sources=dict(type="list", elements="str", default=[]),
            egress_interface=dict(type="str", default=""),
            vpn_interface=dict(type="str", default=""),
        )),
        postgres=dict(type="dict", default={}, options=dict(
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=5432),
            database=dict(type="str", default="berqenas"),
            role_suffixes=dict(type="list", elements="str", default=["_app", "_ro"]),
        )),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    exposures = []
    for e in p["exposures"]:
        e = dict((k, v) for k, v in e.items() if v is not None)
        exposures.append(e)
    config = dict(
        exposures=exposures,
        vpn_peers=p["vpn_peers"],
        local_addresses=p["local_addresses"],
        management=p["management"],
        wireguard=p["wireguard"],
        masquerade=p["masquerade"],
        postgres=p["postgres"],
    )
    try:
        plan = public_plan(build_plan(config))
    except GatewayError as exc:
        module.fail_json(msg="plan gateway: %s" % exc)
    exposures = [
        dict((k, e[k]) for k in ("tenant", "name", "service", "kind", "port", "target", "sources"))
        for e in plan["exposures"]
    ]
    module.exit_json(
        changed=False,
        before_rules=plan["before_rules"],
        before6_rules=plan["before6_rules"],
        pg_hba=plan["pg_hba"],
        hook=render_hook(),
        exposures=exposures,
    )


if __name__ == "__main__":
    main()
