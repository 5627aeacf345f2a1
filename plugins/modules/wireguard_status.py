#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: wireguard_status
short_description: Peers of a WireGuard interface managed by wireguard_server, with their live state
version_added: 0.1.0
description:
  - Reads the allocations persisted by M(berqenas.platform.wireguard_server) and the running interface
    (C(wg show INTERFACE dump), parsed on the host) and returns, per peer, its tenant, addresses, expiry and
    live figures. Never returns a private or preshared key.
  - "State per peer: V(disabled), V(expired), V(never) (no handshake yet), V(active) (handshake within
    O(stale_after) seconds) or V(stale)."
options:
  interface:
    description: Interface name.
    type: str
    default: wg0
  state_dir:
    description: The O(berqenas.platform.wireguard_server#module:state_dir) of the server.
    type: path
    default: /etc/berqenas/wireguard
  stale_after:
    description:
      - Seconds after the latest handshake when a peer counts as stale (WireGuard re-handshakes every 2 minutes).
    type: int
    default: 180
  publish_facts:
    description:
      - Also return the host fact C(wireguard_peers_published), the peers in the one shape the wireguard role
        publishes (see RV(berqenas.platform.wireguard_server#module:peers)), read from the persisted state. This
        is what a consumer such as the gateway takes, without running the server module.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads only.
  diff_mode:
    support: none
    description: Nothing changes.
  idempotent:
    support: full
    description: Reads only.
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Peers and their live state
  berqenas.platform.wireguard_status:
    interface: wg0
  register: vpn
"""

RETURN = r"""
running:
  description: Whether the interface exists.
  returned: success
  type: bool
peers:
  description: One entry per peer in the persisted state.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Peer name.
      type: str
    tenant:
      description: Tenant.
      type: str
    addresses:
      description: Allocated addresses.
      type: list
      elements: str
    enabled:
      description: Whether the peer is enabled.
      type: bool
    expires:
      description: Expiry (UTC) or null.
      type: str
    expired:
      description: Whether the expiry has passed.
      type: bool
    config_file:
      description: Client config on the WireGuard host.
      type: str
    qr_file:
      description: QR PNG on the WireGuard host, or null when there is none.
      type: str
    state:
      description: V(active), V(stale), V(never), V(disabled) or V(expired).
      type: str
    latest_handshake_age_s:
      description: Seconds since the latest handshake, or null.
      type: int
    rx_bytes:
      description: Bytes received from the peer.
      type: int
    tx_bytes:
      description: Bytes sent to the peer.
      type: int
    endpoint:
      description: The peer's current endpoint, or null.
      type: str
    live:
      description: Whether the peer's key is on the running interface.
      type: bool
ansible_facts:
  description:
    - With O(publish_facts), C(wireguard_peers_published) (name, tenant, addresses, enabled, expired, expires,
      key_source of every persisted peer, never a secret).
  returned: when O(publish_facts=true)
  type: dict
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.berqenas.platform.plugins.module_utils import validation
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wgu


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", default="wg0"),
            state_dir=dict(type="path", default="/etc/berqenas/wireguard"),
            stale_after=dict(type="int", default=180),
            publish_facts=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    name = module.params["interface"]
    try:
        validation.interface_name(name, "interface")
    except validation.ValidationError as exc:
        module.fail_json(msg="wireguard_status: %s" % exc)
    try:
        state = wgu.read_state(module.params["state_dir"], name)
        running, _dump, status = wgu.interface_status(module.params["state_dir"], name, module.run_command,
                                                      module.params["stale_after"], state=state)
    except wgu.WireGuardError as exc:
        module.fail_json(msg="wireguard_status: %s" % exc)
    now = datetime.datetime.now(datetime.timezone.utc)
    result = dict(changed=False, running=running, peers=status)
    if module.params["publish_facts"]:
        result["ansible_facts"] = dict(wireguard_peers_published=[
            wgu.published_entry(pname, state["peers"][pname], now) for pname in sorted(state.get("peers", {}))])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
