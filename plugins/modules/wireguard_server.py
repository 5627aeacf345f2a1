#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: wireguard_server
short_description: Reconcile a WireGuard server interface and its whole peer set without dropping anyone
version_added: 0.1.0
description:
  - Takes the B(whole) desired peer set of one WireGuard interface, validates all of it before touching anything,
    allocates addresses against the allocations persisted on the host, generates keys on the host, renders the
    C(wg-quick) config, the client configs and QR codes, and applies the result.
  - "Peer changes are applied with C(wg syncconf) from a temporary 0600 file (never keys on a command line): live
    clients lose no packet and keep their handshakes. The config says C(Table = off): the VPN networks are
    on-link, and routes for peers' extra networks (their C(allowed_ips)) are kept by this module."
  - Only interface-level changes (addresses, port, MTU, PostUp/PostDown) restart the interface.
  - The expiry of peers between applies (a systemd timer) is the wireguard role's; this module enforces expiry at
    every apply.
  - "State on the host, under O(state_dir)/INTERFACE/ (0700): C(state.json) (allocations, generated peer keys and
    preshared keys, 0600), C(server.key) (0600), C(clients/NAME.conf) (0600) and, when O(qr) applies, C(NAME.png)
    and C(NAME.qr.txt) (0600). The interface config is O(config_dir)/INTERFACE.conf (0600)."
  - Addresses are kept for as long as a peer exists, so re-runs, C(--limit) runs and removals never renumber
    other peers. A removed peer's allocation is released.
  - Disabled and expired peers keep their address and keys but are left out of the running interface.
  - Where the kernel has no WireGuard module, C(wg-quick) runs C(wireguard-go); the module reports which one runs
    in RV(implementation).
  - Secrets (private and preshared keys) are never returned, never logged and never put on a command line; the
    diff shows configs with the keys redacted.
options:
  interface:
    description: Interface name (at most 15 characters of C([a-zA-Z0-9_=+.-])).
    type: str
    default: wg0
  addresses:
    description:
      - Server addresses with prefix, at most one IPv4 and one IPv6 (for example V(198.51.100.1/24) and
        V(fd00:b::1/64)). Their networks are the VPN ranges peers are allocated from.
    type: list
    elements: str
    required: true
  listen_port:
    description: UDP port.
    type: int
    default: 51820
  mtu:
    description: Interface MTU (1280-9000); unset leaves the default.
    type: int
  post_up:
    description: C(PostUp) commands of the interface (wg-quick runs them with a shell; they are configuration).
    type: list
    elements: str
    default: []
  post_down:
    description: C(PostDown) commands of the interface.
    type: list
    elements: str
    default: []
  endpoint:
    description:
      - How clients reach the server, V(host), V(host:port) or V([v6]:port); the port defaults to O(listen_port).
        Written into client configs.
    type: str
  client_dns:
    description: DNS servers written into client configs.
    type: list
    elements: str
    default: []
  client_allowed_ips:
    description: Networks clients route through the tunnel; default the VPN networks.
    type: list
    elements: str
  persistent_keepalive:
    description: C(PersistentKeepalive) of client configs (seconds, 0 = off); a peer may override it.
    type: int
    default: 25
  tenant_ranges:
    description:
      - Per-tenant sub-ranges (tenant name to a list of networks inside the VPN networks). Peers of such a tenant
        get addresses from its ranges; other peers never get an address inside any tenant range.
    type: dict
    default: {}
  peers:
    description:
      - The whole desired peer set; peers not listed are removed. Each peer is a dict with the keys below (any
        other key is an error). The module validates the whole set itself, before anything changes, with
        messages naming the peer and the rule (the same code the orchestrator imports).
      - "V(name) (required): globally unique, C(^[a-z0-9][a-z0-9_-]{0,31}$)."
      - "V(tenant) (required): the tenant the peer belongs to (a valid tenant name)."
      - "V(public_key): the client's own public key. When given, no private key is generated and the client
        config has every field but the private key."
      - "V(expires): ISO-8601 time with timezone (V(2026-12-31T00:00:00Z)); from then on no traffic."
      - "V(enabled) (default V(true)): a disabled peer keeps its address and keys but is not on the interface."
      - "V(allowed_ips): extra networks routed to this peer (a site behind it), besides its own addresses."
      - "V(addresses): fixed addresses (one per IP version) instead of allocated ones, inside the peer's range."
      - "V(persistent_keepalive): overrides O(persistent_keepalive) in this peer's client config."
      - "V(qr): write a QR code (PNG and terminal text) of the client config; default O(qr)."
    type: list
    elements: dict
    default: []
  peers_json:
    description:
      - O(peers) as one JSON text (a list of the same dicts; exclusive with O(peers)). The wireguard role passes
        its peers this way, C(wireguard_peers | to_json), because Ansible handles one string in a fraction of
        the time it takes over thousands of dicts (seconds at 5,000 peers). Validated exactly as O(peers).
    type: str
  qr:
    description: Default of the peers' C(qr). QR codes need the C(segno) Python library on the host.
    type: bool
    default: true
  state_dir:
    description: Where allocations, keys and client configs persist.
    type: path
    default: /etc/berqenas/wireguard
  config_dir:
    description: Directory of the C(wg-quick) config.
    type: path
    default: /etc/wireguard
  service_manager:
    description:
      - How the interface is brought up. V(auto) uses C(wg-quick@INTERFACE) when systemd runs (and enables it at
        boot), else C(wg-quick up) in its own session. V(none) only writes files.
    type: str
    choices: [auto, systemd, wg-quick, none]
    default: auto
  lock_timeout:
    description: Seconds to wait for another run holding the host's lock on this interface.
    type: int
    default: 120
  publish_facts:
    description:
      - Return RV(peers), RV(public_key) and RV(implementation) as the host facts C(wireguard_peers_published),
        C(wireguard_server_public_key) and C(wireguard_implementation) instead (what the wireguard role
        publishes; set here rather than by C(set_fact), which would template thousands of peers again).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Predicts every change (new peers get keys that are thrown away); nothing is written or applied.
  diff_mode:
    support: full
    description: The interface config before and after, with private and preshared keys redacted.
  idempotent:
    support: full
    description: The live C(wg show dump) and the files are compared with the desired state.
requirements:
  - wireguard-tools (wg, wg-quick) and a kernel WireGuard module or wireguard-go on the host
  - python cryptography on the host (else C(wg genkey) is used, ~40 times slower)
  - python segno on the host for QR codes
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: Hub with two peers, one with its own key
  berqenas.platform.wireguard_server:
    interface: wg0
    addresses: [198.51.100.1/24, "fd00:b::1/64"]
    endpoint: vpn.example.org
    peers:
      - {name: alice-laptop, tenant: acme}
      - {name: bob-phone, tenant: globex, public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
         expires: "2026-12-31T00:00:00Z"}
  register: wg

- name: Show the server public key
  ansible.builtin.debug:
    msg: "{{ wg.public_key }}"
"""

RETURN = r"""
public_key:
  description: The server's public key.
  returned: success
  type: str
interface:
  description: Interface name.
  returned: success
  type: str
implementation:
  description: V(kernel) or V(wireguard-go) (userspace, used when the kernel has no WireGuard module); V(unknown)
    in check mode before the interface exists, or with O(service_manager=none).
  returned: success
  type: str
action:
  description:
    - What was done (or would be, in check mode) to the running interface, V(none), V(syncconf) (peers or the
      routes of their extra networks differed), V(start) or V(restart).
  returned: success
  type: str
peers:
  description: One entry per desired peer, never a secret (with O(publish_facts), only in RV(ansible_facts)).
  returned: when O(publish_facts=false)
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
      description: Allocated addresses (one per VPN IP version).
      type: list
      elements: str
    enabled:
      description: Whether the peer is enabled.
      type: bool
    expired:
      description: Whether the peer's expiry has passed.
      type: bool
    expires:
      description: Expiry (UTC, ISO-8601), or null.
      type: str
    key_source:
      description: V(generated) on the host or V(client)-supplied.
      type: str
counts:
  description: Numbers of desired, live (on the interface), added and removed peers.
  returned: success
  type: dict
service_manager:
  description: How the interface is managed, V(systemd), V(wg-quick) or V(none) (O(service_manager) resolved).
  returned: success
  type: str
config_file:
  description: Path of the wg-quick config on the host.
  returned: success
  type: str
timings:
  description: Seconds spent per phase (plan, inspect, apply).
  returned: success
  type: dict
ansible_facts:
  description: With O(publish_facts), C(wireguard_peers_published) (= RV(peers)), C(wireguard_server_public_key),
    C(wireguard_implementation).
  returned: when O(publish_facts=true)
  type: dict
"""

import datetime
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wgu
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard_host as host


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", default="wg0"),
            addresses=dict(type="list", elements="str", required=True),
            listen_port=dict(type="int", default=51820),
            mtu=dict(type="int"),
            post_up=dict(type="list", elements="str", default=[]),
            post_down=dict(type="list", elements="str", default=[]),
            endpoint=dict(type="str"),
            client_dns=dict(type="list", elements="str", default=[]),
            client_allowed_ips=dict(type="list", elements="str"),
            persistent_keepalive=dict(type="int", default=25, no_log=False),
            tenant_ranges=dict(type="dict", default={}),
            peers=dict(type="list", elements="dict", default=[]),
            peers_json=dict(type="str"),
            qr=dict(type="bool", default=True),
            state_dir=dict(type="path", default="/etc/berqenas/wireguard"),
            config_dir=dict(type="path", default="/etc/wireguard"),
            service_manager=dict(type="str", default="auto", choices=["auto", "systemd", "wg-quick", "none"]),
            lock_timeout=dict(type="int", default=120),
            publish_facts=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    now = datetime.datetime.now(datetime.timezone.utc)
    # 1. validate everything before touching anything
    try:
        iface = wgu.validate_interface(
            p["interface"], p["addresses"], p["listen_port"], p["mtu"], p["post_up"], p["post_down"], p["endpoint"],
            p["client_dns"], p["client_allowed_ips"], p["persistent_keepalive"], p["tenant_ranges"])
        peers = wgu.validate_peers(desired_peers(p["peers"], p["peers_json"]), iface, default_qr=p["qr"])
    except wgu.WireGuardError as e:
        module.fail_json(msg="wireguard_server: %s" % e)
    if any(x.qr for x in peers) and not host.HAS_SEGNO:
        module.fail_json(msg=missing_required_lib("segno") + " (or set qr: false)", exception=host.SEGNO_IMPORT_ERROR)
    if wgu.HAS_CRYPTOGRAPHY:
        keys = wgu.InProcessKeys
    else:
        keys = host.WgToolKeys(module)
        module.warn("python cryptography is missing on the WireGuard host: generating keys with wg genkey (slower)")

    paths = wgu.Paths(p["state_dir"], p["config_dir"], iface.name)
    lock = None
    if not module.check_mode:
        host.ensure_dir(paths.state_dir, 0o700)
        host.ensure_dir(paths.base)
        host.ensure_dir(paths.client_dir)
        if not os.path.isdir(paths.config_dir):
            os.makedirs(paths.config_dir, 0o700)
        lock = host.Lock(paths.lock, p["lock_timeout"])
        try:
            lock.__enter__()
        except (IOError, OSError) as e:
            module.fail_json(msg="wireguard_server: another run holds %s for more than %d s (%s)"
                             % (paths.lock, p["lock_timeout"], e))
    try:
        result = reconcile(module, iface, peers, keys, now, paths)
    except wgu.WireGuardError as e:
        module.fail_json(msg="wireguard_server: %s" % e)
    finally:
        if lock:
            lock.__exit__()
    module.exit_json(**result)


def desired_peers(peers, peers_json):
    """The peer dicts from O(peers) or O(peers_json), with null keys dropped and dates as ISO text."""
    raw = peers
    if peers_json is not None:
        if raw:
            raise wgu.WireGuardError("peers and peers_json are mutually exclusive")
        try:
            raw = json.loads(peers_json)
        except ValueError as e:
            raise wgu.WireGuardError("peers_json is not valid JSON: %s" % e)
        if not isinstance(raw, list):
            raise wgu.WireGuardError("peers_json: expected a JSON list of peers")
    raw = [dict((k, v) for k, v in peer.items() if v is not None) if isinstance(peer, dict) else peer
           for peer in raw]
    for peer in raw:
        if isinstance(peer, dict) and isinstance(peer.get("expires"), (datetime.datetime, datetime.date)):
            peer["expires"] = peer["expires"].isoformat()
    return raw


def apply(module, rt, the_plan, action, enable, paths, iface, peers, now):
    """Write what the plan says, then bring the running interface to it and check what is live."""
    # client files can be rebuilt from the state: no fsync each (thousands of them); the rest is synced
    for path, content in the_plan.writes:
        host.write_secret(path, content, sync=not paths.is_client_file(path))
    for text, png, txt in the_plan.qr_jobs:
        png_bytes, term = host.qr_outputs(text)
        host.write_secret(png, png_bytes, sync=False)
        host.write_secret(txt, term, sync=False)
    for path in the_plan.stale:
        os.unlink(path)
    if action in ("start", "restart"):
        rt.start(restart=action == "restart")
    elif action == "syncconf":
        rt.syncconf(the_plan.native, paths.base)
    if action != "none":
        rt.set_routes(the_plan.routes)
    if enable:
        rt.enable_at_boot()
    if action != "none":
        # verify what is live, not what was written
        for _attempt in range(50):
            d_iface, d_peers = rt.dump()
            if d_iface is not None:
                break
            time.sleep(0.1)
        if not wgu.live_matches(d_iface, d_peers, iface, the_plan.server_public_key, peers, the_plan.state, now) \
                or rt.routes() != the_plan.routes:
            module.fail_json(msg="apply wireguard interface %s: the running interface does not match the "
                                 "config after %s" % (iface.name, action))


def reconcile(module, iface, peers, keys, now, paths):
    check = module.check_mode
    clock = host.Clock()
    the_plan = wgu.plan(iface, peers, now, keys, host.HostFiles, paths)
    clock.lap("plan")
    rt = host.Runtime(module, iface.name, module.params["service_manager"])
    action = wgu.plan_action(the_plan, iface, peers, now, rt if rt.manager != "none" else None)
    # brought up at boot by wg-quick@INTERFACE where systemd runs (one task instead of a systemd_service task)
    enable = rt.manager == "systemd" and not rt.enabled_at_boot()
    clock.lap("inspect")
    changed = bool(the_plan.changed_files) or action != "none" or enable
    if not check:
        apply(module, rt, the_plan, action, enable, paths, iface, peers, now)
        clock.lap("apply")

    result = dict(
        changed=changed,
        interface=iface.name,
        public_key=the_plan.server_public_key if not (check and the_plan.new_server_key) else None,
        implementation=rt.implementation() if rt.manager != "none" else "unknown",
        service_manager=rt.manager,
        action=action,
        peers=wgu.published(peers, the_plan.state, now),
        counts=the_plan.counts,
        config_file=paths.conf,
        timings=clock.laps,
    )
    if module.params["publish_facts"]:
        result["ansible_facts"] = dict(
            wireguard_peers_published=result.pop("peers"),
            wireguard_server_public_key=result["public_key"],
            wireguard_implementation=result["implementation"],
        )
    if module._diff:
        result["diff"] = dict(
            before_header=paths.conf, after_header=paths.conf,
            before=wgu.redact(the_plan.old_conf or ""), after=wgu.redact(the_plan.conf),
        )
    return result


if __name__ == "__main__":
    main()
