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
  expiry_timer:
    description:
      - "Where systemd runs (RV(service_manager=systemd)), also keep the expiry enforcer between applies: the
        helper O(expiry_helper) as C(/usr/local/lib/berqenas-wg-expire.py), the template units
        C(berqenas-wg-expire@.service) and C(.timer) in C(/etc/systemd/system), and the timer
        C(berqenas-wg-expire@INTERFACE.timer) enabled and started. Files are compared first, so a run where all of
        it is in place costs one C(systemctl show)."
    type: bool
    default: false
  expiry_interval:
    description: Seconds between two runs of the expiry timer (1-86400).
    type: int
    default: 60
  expiry_helper:
    description:
      - Source of the expiry enforcer (the wireguard role passes its C(files/berqenas-wg-expire.py)). Required
        with O(expiry_timer=true).
    type: str
  publish_facts:
    description:
      - Also return RV(peers), RV(public_key) and RV(implementation) as the host facts C(wireguard_peers_published),
        C(wireguard_server_public_key) and C(wireguard_implementation) (what the wireguard role publishes).
    type: bool
    default: false
  peers_as_json:
    description:
      - Without O(publish_facts), return the peers as RV(peers_json), one JSON text, instead of the list RV(peers).
        Ansible handles one string in a fraction of the time it spends on thousands of dicts.
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
    - What was done to the running interface, V(none), V(syncconf), V(start), V(restart) or V(routes) (only
      the routes of peers' extra networks were out of date).
  returned: success
  type: str
peers:
  description: One entry per desired peer, never a secret (with O(publish_facts), only in RV(ansible_facts)).
  returned: when O(publish_facts=false) and O(peers_as_json=false)
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
peers_json:
  description: RV(peers) as one JSON text.
  returned: when O(publish_facts=false) and O(peers_as_json=true)
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
expiry_timer:
  description:
    - With O(expiry_timer) where systemd runs, C(unit) (the timer), C(files) (helper and unit files written or
      to write) and C(started) (whether the timer was, or would be, enabled or started); else null.
  returned: success
  type: dict
timings:
  description: Seconds spent per phase (plan, render, inspect, write, apply).
  returned: success
  type: dict
ansible_facts:
  description: With O(publish_facts), C(wireguard_peers_published) (= RV(peers)), C(wireguard_server_public_key),
    C(wireguard_implementation).
  returned: when O(publish_facts=true)
  type: dict
"""

import fcntl
import json
import os
import tempfile
import time
import traceback
import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wgu

try:
    import segno

    HAS_SEGNO = True
    SEGNO_ERR = None
except ImportError:
    HAS_SEGNO = False
    SEGNO_ERR = traceback.format_exc()


class WgToolKeys(object):
    """Fallback key generation through wg(8): keys pass on stdin/stdout only."""

    def __init__(self, module):
        self.module = module

    def private(self):
        rc, out, err = self.module.run_command(["wg", "genkey"], check_rc=True)
        return out.strip()

    def pair(self):
        priv = self.private()
        return priv, self.public(priv)

    def public(self, private_b64):
        rc, out, err = self.module.run_command(["wg", "pubkey"], data=private_b64, check_rc=True)
        return out.strip()


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except (IOError, OSError):
        return None


def write_secret(path, text_or_bytes, sync=True, mode=0o600):
    """Atomically write a 0600 (or ``mode``) file (temp file in the same directory, then rename); fsync unless
    sync=False."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        data = text_or_bytes.encode("utf-8") if not isinstance(text_or_bytes, bytes) else text_or_bytes
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = None
        os.rename(tmp, path)
    finally:
        if fd is not None:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_dir(path, mode=0o700):
    if not os.path.isdir(path):
        os.makedirs(path, mode)
    os.chmod(path, mode)


class Lock(object):
    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.time() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def __exit__(self, *a):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def qr_outputs(text):
    """(png bytes, terminal text) of a client config."""
    import io

    qr = segno.make(text, micro=False)
    png = io.BytesIO()
    qr.save(png, kind="png", scale=4)
    term = io.StringIO()
    try:
        qr.terminal(out=term, compact=True)
    except TypeError:
        qr.terminal(out=term)
    return png.getvalue(), term.getvalue()


class Clock(object):
    """Seconds spent per phase, returned as RV(timings) (the benchmark reads them)."""

    def __init__(self):
        self.laps = {}
        self.t = time.time()

    def lap(self, name):
        now = time.time()
        self.laps[name] = round(now - self.t, 4)
        self.t = now


class Runtime(object):
    """The running interface: inspect, start, restart, syncconf."""

    def __init__(self, module, name, manager):
        self.module = module
        self.name = name
        if manager == "auto":
            manager = "systemd" if os.path.isdir("/run/systemd/system") else "wg-quick"
        self.manager = manager

    def exists(self):
        return os.path.exists("/sys/class/net/%s" % self.name)

    def dump(self):
        rc, out, err = self.module.run_command(["wg", "show", self.name, "dump"])
        if rc != 0:
            return None, {}
        return wgu.parse_dump(out)

    def implementation(self):
        if not self.exists():
            return "unknown"
        rc, out, err = self.module.run_command(["ip", "-d", "link", "show", "dev", self.name])
        return "kernel" if " wireguard " in out + " " else "wireguard-go"

    def _run(self, argv):
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            self.module.fail_json(msg="apply wireguard interface %s: %s failed: %s"
                                  % (self.name, " ".join(argv[:3]), (err or out).strip()[-800:]))

    def start(self, restart=False):
        if self.manager == "systemd":
            self._run(["systemctl", "restart", "wg-quick@%s.service" % self.name])
        else:
            if restart and self.exists():
                self._run(["wg-quick", "down", self.name])
            # own session: wireguard-go must outlive this task
            self._run(["setsid", "-w", "wg-quick", "up", self.name])

    def unit(self):
        return "wg-quick@%s.service" % self.name

    def enabled_at_boot(self):
        rc, out, err = self.module.run_command(["systemctl", "is-enabled", self.unit()])
        return out.strip() == "enabled"

    def enable_at_boot(self):
        self._run(["systemctl", "enable", self.unit()])

    def unit_state(self, unit):
        """(UnitFileState, ActiveState) of a systemd unit."""
        rc, out, err = self.module.run_command(["systemctl", "show", "-p", "UnitFileState", "-p", "ActiveState",
                                                unit])
        props = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        return props.get("UnitFileState", ""), props.get("ActiveState", "")

    def routes(self):
        """Routes this module added to the interface (proto static), as network strings."""
        out = set()
        for fam in ("-4", "-6"):
            rc, text, err = self.module.run_command(["ip", fam, "route", "show", "dev", self.name, "proto", "static"])
            for line in text.splitlines():
                if line.strip():
                    dest = line.split()[0]
                    if "/" not in dest:
                        dest += "/32" if fam == "-4" else "/128"
                    out.add(dest)
        return out

    def set_routes(self, wanted):
        have = self.routes() if self.exists() else set()
        for net in sorted(wanted - have):
            self._run(["ip", "route", "replace", net, "dev", self.name, "proto", "static"])
        for net in sorted(have - wanted):
            self._run(["ip", "route", "del", net, "dev", self.name, "proto", "static"])

    def syncconf(self, native_conf, workdir):
        fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".sync-", suffix=".conf")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, native_conf.encode("utf-8"))
            os.close(fd)
            fd = None
            self._run(["wg", "syncconf", self.name, tmp])
        finally:
            if fd is not None:
                os.close(fd)
            os.unlink(tmp)


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
            peers_as_json=dict(type="bool", default=False),
            expiry_timer=dict(type="bool", default=False),
            expiry_interval=dict(type="int", default=60),
            expiry_helper=dict(type="str"),
        ),
        required_if=[("expiry_timer", True, ["expiry_helper"])],
        supports_check_mode=True,
    )
    p = module.params
    now = datetime.datetime.now(datetime.timezone.utc)
    # 1. validate everything before touching anything
    try:
        iface = wgu.validate_interface(
            p["interface"], p["addresses"], p["listen_port"], p["mtu"], p["post_up"], p["post_down"], p["endpoint"],
            p["client_dns"], p["client_allowed_ips"], p["persistent_keepalive"], p["tenant_ranges"])
        raw_peers = p["peers"]
        if p["peers_json"] is not None:
            if raw_peers:
                raise wgu.WireGuardError("peers and peers_json are mutually exclusive")
            try:
                raw_peers = json.loads(p["peers_json"])
            except ValueError as e:
                raise wgu.WireGuardError("peers_json is not valid JSON: %s" % e)
            if not isinstance(raw_peers, list):
                raise wgu.WireGuardError("peers_json: expected a JSON list of peers")
        raw_peers = [dict((k, v) for k, v in peer.items() if v is not None) if isinstance(peer, dict) else peer
                     for peer in raw_peers]
        for peer in raw_peers:
            if isinstance(peer.get("expires"), (datetime.datetime, datetime.date)):
                peer["expires"] = peer["expires"].isoformat()
        peers = wgu.validate_peers(raw_peers, iface, default_qr=p["qr"])
        expiry = None
        if p["expiry_timer"]:
            expiry = wgu.expiry_files(p["expiry_helper"], p["state_dir"], p["config_dir"], p["expiry_interval"])
    except wgu.WireGuardError as e:
        module.fail_json(msg="wireguard_server: %s" % e)
    if any(x.qr for x in peers) and not HAS_SEGNO:
        module.fail_json(msg=missing_required_lib("segno") + " (or set qr: false)", exception=SEGNO_ERR)
    if wgu.HAS_CRYPTOGRAPHY:
        keys = wgu.InProcessKeys
    else:
        keys = WgToolKeys(module)
        module.warn("python cryptography is missing on the WireGuard host: generating keys with wg genkey (slower)")

    base = os.path.join(p["state_dir"], iface.name)
    client_dir = os.path.join(base, "clients")
    conf_path = os.path.join(p["config_dir"], iface.name + ".conf")
    state_path = os.path.join(base, "state.json")
    key_path = os.path.join(base, "server.key")

    if not module.check_mode:
        ensure_dir(p["state_dir"], 0o700)
        ensure_dir(base)
        ensure_dir(client_dir)
        if not os.path.isdir(p["config_dir"]):
            os.makedirs(p["config_dir"], 0o700)
        lock = Lock(os.path.join(base, ".lock"), p["lock_timeout"])
    else:
        lock = None
    try:
        if lock:
            lock.__enter__()
        result = reconcile(module, iface, peers, keys, now, base, client_dir, conf_path, state_path, key_path,
                           expiry)
    except wgu.WireGuardError as e:
        module.fail_json(msg="wireguard_server: %s" % e)
    finally:
        if lock and lock.fd is not None:
            lock.__exit__()
    module.exit_json(**result)


def file_current(path, text, mode):
    try:
        if os.stat(path).st_mode & 0o7777 != mode:
            return False
    except OSError:
        return False
    return read_text(path) == text


def install_expiry(module, rt, files, check):
    """The expiry enforcer between applies: helper + template units written when they differ, timer enabled and
    started (restarted when its units changed). Returns (changed, report)."""
    stale = sorted(path for path, (text, mode) in files.items() if not file_current(path, text, mode))
    unit = wgu.expiry_timer_unit(rt.name)
    units_changed = any(path.startswith(wgu.EXPIRY_UNIT_DIR + os.sep) for path in stale)
    file_state, active = rt.unit_state(unit)
    start = units_changed or file_state != "enabled" or active != "active"
    if not check:
        for path in stale:
            text, mode = files[path]
            write_secret(path, text, mode=mode)
        if units_changed:
            rt._run(["systemctl", "daemon-reload"])
        if file_state != "enabled" or units_changed:
            rt._run(["systemctl", "enable", unit])
        if units_changed:
            rt._run(["systemctl", "restart", unit])
        elif active != "active":
            rt._run(["systemctl", "start", unit])
    return bool(stale) or start, dict(unit=unit, files=stale, started=start)


def reconcile(module, iface, peers, keys, now, base, client_dir, conf_path, state_path, key_path, expiry=None):
    check = module.check_mode
    clock = Clock()
    old_state_text = read_text(state_path)
    try:
        old_state = json.loads(old_state_text) if old_state_text else {}
    except ValueError:
        raise wgu.WireGuardError("%s is not valid JSON: fix or remove it (allocations would be lost)" % state_path)
    allocations = wgu.allocate(iface, peers, old_state)
    state = wgu.build_state(iface, peers, old_state, allocations, keys)
    clock.lap("plan")

    server_key = (read_text(key_path) or "").strip()
    if server_key:
        wgu.check_key(server_key, "server key in %s" % key_path)
        new_server_key = False
    else:
        server_key = keys.private()
        new_server_key = True
    server_pub = keys.public(server_key)

    conf, native = wgu.render_server(iface, server_key, peers, state, now)
    old_conf = read_text(conf_path)
    state_text = wgu.dump_state(state)

    changed_files = []
    writes = []  # (path, content)
    if new_server_key:
        writes.append((key_path, server_key + "\n"))
    if old_conf != conf:
        writes.append((conf_path, conf))
    if old_state_text != state_text:
        writes.append((state_path, state_text))
    wanted_client_files = set()
    qr_jobs = []
    for peer in peers:
        entry = state["peers"][peer.name]
        text = wgu.render_client(iface, server_pub, peer, entry)
        path = os.path.join(client_dir, peer.name + ".conf")
        wanted_client_files.add(peer.name + ".conf")
        old = read_text(path)
        if old != text:
            writes.append((path, text))
        if peer.qr:
            png, txt = path[:-5] + ".png", path[:-5] + ".qr.txt"
            wanted_client_files.update([peer.name + ".png", peer.name + ".qr.txt"])
            if old != text or not os.path.exists(png) or not os.path.exists(txt):
                qr_jobs.append((text, png, txt))
    stale = []
    if os.path.isdir(client_dir):
        stale = sorted(f for f in os.listdir(client_dir) if f not in wanted_client_files and not f.startswith("."))
    clock.lap("render")
    changed_files = [w[0] for w in writes] + [j[1] for j in qr_jobs] + [os.path.join(client_dir, f) for f in stale]

    # the running interface
    rt = Runtime(module, iface.name, module.params["service_manager"])
    wanted_routes = wgu.peer_routes(iface, peers, now)
    action = "none"
    if rt.manager != "none":
        if not rt.exists():
            action = "start"
        elif old_conf is not None and wgu.parse_conf_interface(old_conf) != wgu.parse_conf_interface(conf):
            action = "restart"
        else:
            d_iface, d_peers = rt.dump()
            if not wgu.live_matches(d_iface, d_peers, iface, server_pub, peers, state, now) or \
                    rt.routes() != wanted_routes:
                action = "syncconf"
            elif rt.routes() != wanted_routes:
                action = "routes"

    clock.lap("inspect")
    old_names = set((old_state or {}).get("peers", {}))
    new_names = set(state["peers"])
    counts = dict(total=len(peers), live=sum(1 for x in peers if wgu.is_live(x, now)),
                  added=len(new_names - old_names), removed=len(old_names - new_names))
    # brought up at boot by wg-quick@INTERFACE where systemd runs (one task instead of a systemd_service task)
    enable = rt.manager == "systemd" and not rt.enabled_at_boot()
    changed = bool(changed_files) or action != "none" or enable

    if not check:
        # client files can be rebuilt from the state: no fsync each (thousands of them); the rest is synced
        for path, content in writes:
            write_secret(path, content, sync=not path.startswith(client_dir + os.sep))
        for text, png, txt in qr_jobs:
            png_bytes, term = qr_outputs(text)
            write_secret(png, png_bytes, sync=False)
            write_secret(txt, term, sync=False)
        for f in stale:
            os.unlink(os.path.join(client_dir, f))
        clock.lap("write")
        if action in ("start", "restart"):
            rt.start(restart=action == "restart")
        elif action == "syncconf":
            rt.syncconf(native, base)
        if action != "none":
            rt.set_routes(wanted_routes)
        if enable:
            rt.enable_at_boot()
        if action != "none":
            # the ceph lesson: verify what is live, not what was written
            for _attempt in range(50):
                d_iface, d_peers = rt.dump()
                if d_iface is not None:
                    break
                time.sleep(0.1)
            if not wgu.live_matches(d_iface, d_peers, iface, server_pub, peers, state, now) or \
                    rt.routes() != wanted_routes:
                module.fail_json(msg="apply wireguard interface %s: the running interface does not match the "
                                     "config after %s" % (iface.name, action))
        clock.lap("apply")

    expiry_report = None
    if expiry and rt.manager == "systemd":
        expiry_changed, expiry_report = install_expiry(module, rt, expiry, check)
        changed = changed or expiry_changed
        clock.lap("expiry")

    pub = wgu.published(iface, peers, state, now, client_dir)
    result = dict(
        changed=changed,
        interface=iface.name,
        public_key=server_pub if not (check and new_server_key) else None,
        implementation=rt.implementation() if rt.manager != "none" else "unknown",
        service_manager=rt.manager,
        action=action,
        peers=pub,
        counts=counts,
        config_file=conf_path,
        expiry_timer=expiry_report,
        timings=clock.laps,
    )
    if module.params["publish_facts"]:
        # set here rather than by set_fact: templating thousands of peers again costs seconds; and only once
        result["ansible_facts"] = dict(
            wireguard_peers_published=result.pop("peers"),
            wireguard_server_public_key=result["public_key"],
            wireguard_implementation=result["implementation"],
        )
    elif module.params["peers_as_json"]:
        result["peers_json"] = json.dumps(result.pop("peers"), separators=(",", ":"))
    if module._diff:
        result["diff"] = dict(
            before_header=conf_path, after_header=conf_path,
            before=wgu.redact(old_conf or ""), after=wgu.redact(conf),
        )
    return result


if __name__ == "__main__":
    main()
