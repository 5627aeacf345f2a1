# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WireGuard server logic of the platform: validation, address allocation, key handling, rendering, live diff.

Pure functions (no AnsibleModule): the wireguard_server module drives them, tests call them directly.

State persisted on the WireGuard host (``<state_dir>/<interface>/state.json``, 0600, in a 0700 directory)::

    {"version": 1, "interface": "wg0",
     "peers": {"alice": {"tenant": "acme", "addresses": ["198.51.100.2", "fd00:b::2"],
                          "public_key": "...", "private_key": "..." (only when generated here),
                          "preshared_key": "..."}}}

Allocations are only ever added for new peers and released for removed ones: re-runs, ``--limit`` runs and
removals never renumber anybody else.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import ipaddress
import json
import os
import re
import time

from ansible_collections.berqenas.platform.plugins.module_utils import validation

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - the wg(8) fallback is used instead
    HAS_CRYPTOGRAPHY = False

STATE_VERSION = 1
REDACTED = "<redacted>"


class WireGuardError(validation.ValidationError):
    """Bad input or an impossible request (full range, ...); the message names the input and the rule."""


def _v(rule, *args):
    """Apply one of module_utils/validation.py's rules (every value rule lives there) -> WireGuardError."""
    return validation.checked(WireGuardError, rule, *args)


# --------------------------------------------------------------------------------------------- keys
def _b64(raw):
    return base64.b64encode(raw).decode("ascii")


def check_key(value, what):
    """A WireGuard key: base64 of 32 bytes, not all zero."""
    return _v(validation.wireguard_key, value, what)


# X25519 base point (u = 9): a public key is X25519(private, 9). cryptography's own public_key() serialises
# and parses the key through OpenSSL (about twice the cost of a pair on python3-cryptography 38, Debian 12);
# an exchange with the base point computes the same 32 bytes directly (unit-tested against public_key() and
# the RFC 7748 vectors).
_BASE_POINT = b"\x09" + b"\0" * 31
_BASE = []


def _base_point():
    if not _BASE:
        _BASE.append(x25519.X25519PublicKey.from_public_bytes(_BASE_POINT))
    return _BASE[0]


def _public_raw(key):
    return key.exchange(_base_point())


def generate_keypair():
    """A new X25519 (private, public) pair, base64, generated in-process (far faster than wg genkey + wg pubkey)."""
    if not HAS_CRYPTOGRAPHY:
        raise RuntimeError("cryptography is not available")
    key = x25519.X25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _b64(priv), _b64(_public_raw(key))


def generate_private_key():
    return generate_keypair()[0]


def public_key(private_b64):
    if not HAS_CRYPTOGRAPHY:
        raise RuntimeError("cryptography is not available")
    return _b64(_public_raw(x25519.X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))))


def generate_psk():
    return _b64(os.urandom(32))


class InProcessKeys(object):
    """Key generation with the cryptography library (the fast path)."""

    @staticmethod
    def pair():
        return generate_keypair()

    @staticmethod
    def private():
        return generate_private_key()

    @staticmethod
    def public(private_b64):
        return public_key(private_b64)


# --------------------------------------------------------------------------------------------- input
def _text(value, what):
    return _v(validation.one_line, value, what)


def parse_expiry(value, what="expires"):
    """ISO-8601 with a timezone (``2026-12-31T00:00:00Z``); returns an aware UTC datetime."""
    return _v(validation.expiry, value, what)


format_expiry = validation.format_expiry


def check_port(value, what="listen_port"):
    return _v(validation.port, value, what)


class InterfaceSpec(object):
    def __init__(self, name, addresses, listen_port, mtu=None, post_up=(), post_down=(), endpoint=None,
                 client_dns=(), client_allowed_ips=None, client_keepalive=25, tenant_ranges=None):
        self.name = name
        self.addresses = addresses  # [ip_interface]
        self.listen_port = listen_port
        self.mtu = mtu
        self.post_up = list(post_up)
        self.post_down = list(post_down)
        self.endpoint = endpoint
        self.client_dns = list(client_dns)
        self.client_allowed_ips = client_allowed_ips
        self.client_keepalive = client_keepalive
        self.tenant_ranges = tenant_ranges or {}  # tenant -> [ip_network]

    @property
    def networks(self):
        return [a.network for a in self.addresses]


def _iface_addr(value, what):
    return _v(validation.interface_address, value, what)


def _network(value, what):
    return _v(validation.cidr, value, what)


def validate_interface(name, addresses, listen_port, mtu=None, post_up=(), post_down=(), endpoint=None,
                       client_dns=(), client_allowed_ips=None, client_keepalive=25, tenant_ranges=None):
    """Validate interface-level settings; returns an InterfaceSpec."""
    _v(validation.interface_name, name)
    if not addresses:
        raise WireGuardError("interface %s: at least one address (IPv4 and/or IPv6, with prefix) is required" % name)
    addrs = [_iface_addr(a, "interface address") for a in addresses]
    fams = [a.version for a in addrs]
    if len(set(fams)) != len(fams):
        raise WireGuardError("interface %s: at most one IPv4 and one IPv6 address" % name)
    for a in addrs:
        if a.network.num_addresses < 4:
            raise WireGuardError("interface address %s: the VPN network is too small for peers" % a)
    port = check_port(listen_port)
    if mtu is not None:
        mtu = _v(validation.mtu, mtu)
    for cmd in list(post_up or []) + list(post_down or []):
        _text(cmd, "post_up/post_down command")
    if endpoint:
        _v(validation.host_port, endpoint, "endpoint", False)
    dns = []
    for d in client_dns or []:
        dns.append(_v(validation.ip_address, d, "client_dns"))
    allowed = None
    if client_allowed_ips:
        allowed = [_network(n, "client_allowed_ips") for n in client_allowed_ips]
    keepalive = _v(validation.keepalive, client_keepalive or 0)
    ranges = {}
    for tenant, nets in (tenant_ranges or {}).items():
        _tenant(tenant)
        ranges[tenant] = []
        for n in nets or []:
            net = _network(n, "tenant range of %s" % tenant)
            if not any(net.version == a.version and net.subnet_of(a.network) for a in addrs):
                raise WireGuardError("tenant range %s of %s is outside the VPN networks %s"
                                     % (net, tenant, ", ".join(str(a.network) for a in addrs)))
            ranges[tenant].append(net)
    tl = [(t, n) for t, ns in ranges.items() for n in ns]
    for i, (t1, n1) in enumerate(tl):
        for t2, n2 in tl[i + 1:]:
            if n1.version == n2.version and n1.overlaps(n2):
                raise WireGuardError("tenant ranges overlap: %s (%s) and %s (%s)" % (n1, t1, n2, t2))
    return InterfaceSpec(name, addrs, port, mtu, post_up or [], post_down or [], endpoint, dns, allowed, keepalive,
                         ranges)


def _tenant(name):
    return _v(validation.tenant_name, name)


class PeerSpec(object):
    __slots__ = ("name", "tenant", "public_key", "expires", "enabled", "allowed_ips", "addresses", "keepalive", "qr")

    def __init__(self, name, tenant, public_key=None, expires=None, enabled=True, allowed_ips=(), addresses=(),
                 keepalive=None, qr=True):
        self.name = name
        self.tenant = tenant
        self.public_key = public_key
        self.expires = expires
        self.enabled = enabled
        self.allowed_ips = list(allowed_ips)
        self.addresses = list(addresses)
        self.keepalive = keepalive
        self.qr = qr


PEER_KEYS = frozenset(["name", "tenant", "public_key", "expires", "enabled", "allowed_ips", "addresses",
                       "persistent_keepalive", "qr"])


def validate_peers(peers, iface, default_qr=True):
    """Validate the whole desired peer set against the interface; returns [PeerSpec]. Raises on the first error."""
    if not isinstance(peers, list):
        raise WireGuardError("peers: expected a list")
    out = []
    names = set()
    keys = {}
    for i, p in enumerate(peers):
        if not isinstance(p, dict):
            raise WireGuardError("peers[%d]: expected a mapping" % i)
        unknown = sorted(set(p) - PEER_KEYS)
        if unknown:
            raise WireGuardError("peers[%d]: unknown keys %s" % (i, ", ".join(unknown)))
        name = p.get("name")
        if isinstance(name, str):
            _text(name, "peer name")
        _v(validation.peer_name, name)
        if name in names:
            raise WireGuardError("duplicate peer name %r: names are unique across tenants" % name)
        names.add(name)
        what = "peer %s" % name
        tenant = p.get("tenant")
        if isinstance(tenant, str):
            _text(tenant, what + " tenant")
        _tenant(tenant)
        pub = p.get("public_key")
        if pub not in (None, ""):
            _text(pub, what + " public_key")
            pub = check_key(pub, what + " public_key")
            if pub in keys:
                raise WireGuardError("%s: public key already used by peer %s" % (what, keys[pub]))
            keys[pub] = name
        else:
            pub = None
        expires = parse_expiry(p.get("expires"), what + " expires")
        enabled = p.get("enabled", True)
        if not isinstance(enabled, bool):
            raise WireGuardError("%s: enabled must be true or false" % what)
        allowed = [_network(n, what + " allowed_ips") for n in (p.get("allowed_ips") or [])]
        addrs = []
        for a in p.get("addresses") or []:
            _text(a, what + " addresses")
            try:
                ip = ipaddress.ip_address(str(a).split("/", 1)[0].strip())
            except ValueError:
                raise WireGuardError("invalid %s address %r: expected an IP address" % (what, a))
            if not any(ip.version == n.version and ip in n for n in iface.networks):
                raise WireGuardError("%s address %s is outside the VPN networks %s"
                                     % (what, ip, ", ".join(str(n) for n in iface.networks)))
            addrs.append(ip)
        keepalive = p.get("persistent_keepalive")
        if keepalive is not None:
            keepalive = _v(validation.keepalive, keepalive, what + " persistent_keepalive")
        qr = p.get("qr", default_qr)
        if not isinstance(qr, bool):
            raise WireGuardError("%s: qr must be true or false" % what)
        out.append(PeerSpec(name, tenant, pub, expires, enabled, allowed, addrs, keepalive, qr))
    return out


# --------------------------------------------------------------------------------------------- allocation
class Pool(object):
    """Free-address finder for one network minus excluded ranges and used addresses."""

    def __init__(self, network, exclude_nets, used):
        self.network = network
        self.exclude = [n for n in exclude_nets if n.version == network.version and n.overlaps(network)]
        self.used = used  # shared set of ip_address
        first = int(network.network_address)
        last = int(network.broadcast_address)
        if network.version == 4:
            first, last = first + 1, last - 1  # network and broadcast addresses
        else:
            first += 1  # the subnet-router anycast address
        self.first, self.last = first, last
        self.cursor = first

    def take(self):
        cls = ipaddress.ip_address
        while self.cursor <= self.last:
            ip = cls(self.cursor) if self.network.version == 4 else ipaddress.IPv6Address(self.cursor)
            self.cursor += 1
            if ip in self.used:
                continue
            if any(ip in n for n in self.exclude):
                continue
            self.used.add(ip)
            return ip
        return None

    def contains(self, ip):
        if ip.version != self.network.version or ip not in self.network:
            return False
        if not self.first <= int(ip) <= self.last:
            return False
        return not any(ip in n for n in self.exclude)


def allocate(iface, peers, old_state):
    """Addresses for every desired peer: kept from old_state when still valid, else the lowest free ones.

    Returns {name: [ip_address, ...]} (one per VPN address family). Raises WireGuardError on a full range or a
    requested address that is taken.
    """
    old = (old_state or {}).get("peers", {})
    server_ips = set(a.ip for a in iface.addresses)
    used = set(server_ips)
    all_ranges = [n for ns in iface.tenant_ranges.values() for n in ns]
    pools = {}

    def pool_for(tenant, fam):
        key = (tenant if tenant in iface.tenant_ranges and any(n.version == fam for n in iface.tenant_ranges[tenant])
               else None, fam)
        if key not in pools:
            if key[0] is None:
                nets = [n for n in iface.networks if n.version == fam]
                pools[key] = [Pool(n, all_ranges, used) for n in nets]
            else:
                pools[key] = [Pool(n, [], used) for n in iface.tenant_ranges[tenant] if n.version == fam]
        return pools[key]

    def describe(tenant, fam):
        ps = pool_for(tenant, fam)
        label = ", ".join(str(p.network) for p in ps)
        return "%s%s" % (label, " (tenant %s)" % tenant if ps and tenant in iface.tenant_ranges else "")

    fams = sorted(set(n.version for n in iface.networks))
    result = {}
    # 1. explicit requests, then kept allocations: both reserve before anybody takes a free address
    owner = {}
    for p in peers:
        for ip in p.addresses:
            if ip in server_ips:
                raise WireGuardError("peer %s address %s is the server's own address" % (p.name, ip))
            if ip in owner:
                raise WireGuardError("peer %s address %s is already requested by peer %s" % (p.name, ip, owner[ip]))
            if not any(pl.contains(ip) for pl in pool_for(p.tenant, ip.version)):
                raise WireGuardError("peer %s address %s is outside its range %s"
                                     % (p.name, ip, describe(p.tenant, ip.version)))
            owner[ip] = p.name
    used.update(owner)
    pending = []
    for p in peers:
        addrs = {}
        for ip in p.addresses:
            if ip.version in addrs:
                raise WireGuardError("peer %s: at most one address per IP version" % p.name)
            addrs[ip.version] = ip
        prev = old.get(p.name) or {}
        for text in prev.get("addresses", []):
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.version in addrs or ip.version not in fams:
                continue
            if ip in used or not any(pl.contains(ip) for pl in pool_for(p.tenant, ip.version)):
                continue  # tenant moved or range changed: a new address below
            addrs[ip.version] = ip
            used.add(ip)
        result[p.name] = addrs
        if any(f not in addrs for f in fams):
            pending.append(p)
    # 2. new addresses, lowest free first, in the order peers are given
    for p in pending:
        addrs = result[p.name]
        for fam in fams:
            if fam in addrs:
                continue
            ip = None
            for pl in pool_for(p.tenant, fam):
                ip = pl.take()
                if ip is not None:
                    break
            if ip is None:
                raise WireGuardError("address range %s is full: no free IPv%d address for peer %s"
                                     % (describe(p.tenant, fam), fam, p.name))
            addrs[fam] = ip
    return dict((name, [addrs[f] for f in sorted(addrs)]) for name, addrs in result.items())


# --------------------------------------------------------------------------------------------- planning
def host_prefix(ip):
    return "%s/%d" % (ip, 32 if ip.version == 4 else 128)


def build_state(iface, peers, old_state, allocations, keys=None):
    """New persisted state: keys kept, generated for new peers (private key only where the client gave none).

    ``keys`` has ``pair()`` and ``public(private)`` (default: InProcessKeys).
    """
    keys = keys or InProcessKeys
    old = (old_state or {}).get("peers", {})
    out = {}
    for p in peers:
        prev = old.get(p.name) or {}
        entry = {"tenant": p.tenant, "addresses": [str(ip) for ip in allocations[p.name]], "enabled": p.enabled,
                 "expires": format_expiry(p.expires), "allowed_ips": [str(n) for n in p.allowed_ips]}
        if p.public_key:
            entry["public_key"] = p.public_key
            entry["generated"] = False
        elif prev.get("generated") and prev.get("private_key"):
            entry["public_key"] = prev["public_key"]
            entry["private_key"] = prev["private_key"]
            entry["generated"] = True
        else:
            entry["private_key"], entry["public_key"] = keys.pair()
            entry["generated"] = True
        entry["preshared_key"] = prev.get("preshared_key") or generate_psk()
        out[p.name] = entry
    return {"version": STATE_VERSION, "interface": iface.name, "peers": out}


def peer_routes(iface, peers, now):
    """Networks routed into the interface besides the on-link VPN networks: live peers' extra allowed_ips."""
    out = set()
    for p in peers:
        if is_live(p, now):
            for n in p.allowed_ips:
                if not any(n.version == v.version and n.subnet_of(v) for v in iface.networks):
                    out.add(str(n))
    return out


def is_live(peer, now):
    return peer.enabled and not (peer.expires is not None and peer.expires <= now)


ROUTE_POSTUP = "ip route replace %s dev %%i proto static"
ROUTE_POSTUP_RE = re.compile(r"^ip route replace \S+ dev %i proto static\Z")


def interface_section(iface, private_key, routes=()):
    lines = ["[Interface]"]
    lines.append("Address = %s" % ", ".join(str(a) for a in iface.addresses))
    lines.append("ListenPort = %d" % iface.listen_port)
    if iface.mtu:
        lines.append("MTU = %d" % iface.mtu)
    # wg-quick would add one route per peer with one `ip` call each (seconds at 1,000s of peers); the VPN
    # networks are on-link through Address, and the module routes peers' extra networks itself (peer_routes).
    lines.append("Table = off")
    for c in iface.post_up:
        lines.append("PostUp = %s" % c)
    # routes of peers' extra networks at boot (Table = off); the module keeps them on a running interface, and
    # these generated lines never count as an interface change (parse_conf_interface skips them)
    for net in sorted(routes):
        lines.append("PostUp = " + ROUTE_POSTUP % net)
    for c in iface.post_down:
        lines.append("PostDown = %s" % c)
    lines.append("PrivateKey = %s" % private_key)
    return lines


def peer_allowed_ips(peer, entry):
    return [host_prefix(ipaddress.ip_address(a)) for a in entry["addresses"]] + [str(n) for n in peer.allowed_ips]


def render_server(iface, private_key, peers, state, now):
    """Returns (wg_quick_conf, wg_native_conf): the file wg-quick reads and the stripped one for syncconf."""
    head = interface_section(iface, private_key, peer_routes(iface, peers, now))
    native = ["[Interface]", "ListenPort = %d" % iface.listen_port, "PrivateKey = %s" % private_key]
    body = []
    for p in peers:
        if not is_live(p, now):
            continue
        e = state["peers"][p.name]
        body.append("")
        body.append("# %s (tenant %s)" % (p.name, p.tenant))
        body.append("[Peer]")
        body.append("PublicKey = %s" % e["public_key"])
        body.append("PresharedKey = %s" % e["preshared_key"])
        body.append("AllowedIPs = %s" % ", ".join(peer_allowed_ips(p, e)))
    header = ["# Managed by berqenas.platform (role wireguard). Local edits are overwritten."]
    return ("\n".join(header + head + body) + "\n",
            "\n".join(native + [b for b in body if not b.startswith("#")]) + "\n")


def render_client(iface, server_public_key, peer, entry):
    """A client config; without the private key line when the client supplied its own key."""
    lines = ["# berqenas.platform WireGuard client %s (tenant %s)" % (peer.name, peer.tenant), "[Interface]"]
    if entry.get("private_key"):
        lines.append("PrivateKey = %s" % entry["private_key"])
    else:
        lines.append("# PrivateKey = <the private key that belongs to %s>" % entry["public_key"])
    lines.append("Address = %s" % ", ".join(host_prefix(ipaddress.ip_address(a)) for a in entry["addresses"]))
    if iface.client_dns:
        lines.append("DNS = %s" % ", ".join(iface.client_dns))
    lines.append("")
    lines.append("[Peer]")
    lines.append("PublicKey = %s" % server_public_key)
    lines.append("PresharedKey = %s" % entry["preshared_key"])
    allowed = iface.client_allowed_ips or iface.networks
    lines.append("AllowedIPs = %s" % ", ".join(str(n) for n in allowed))
    if iface.endpoint:
        ep = iface.endpoint
        if not re.search(r"(\]:\d+|^[^:]+:\d+)\Z", ep):
            ep = "%s:%d" % (("[%s]" % ep) if ":" in ep and not ep.startswith("[") else ep, iface.listen_port)
        lines.append("Endpoint = %s" % ep)
    keepalive = peer.keepalive if peer.keepalive is not None else iface.client_keepalive
    if keepalive:
        lines.append("PersistentKeepalive = %d" % keepalive)
    return "\n".join(lines) + "\n"


def redact(text):
    """Config text with every key that is secret replaced."""
    return re.sub(r"^(\s*#?\s*(?:PrivateKey|PresharedKey)\s*=\s*)\S.*$", r"\1" + REDACTED, text, flags=re.M)


def dump_state(state):
    return json.dumps(state, indent=1, sort_keys=True) + "\n"


def parse_conf_interface(text):
    """The [Interface] section of a wg-quick file, as sorted (key, value) pairs without PrivateKey."""
    out = []
    section = None
    for line in (text or "").splitlines():
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        if s.startswith("["):
            section = s
            continue
        if section == "[Interface]" and "=" in s:
            k, v = s.split("=", 1)
            k, v = k.strip(), v.strip()
            if k == "PrivateKey" or (k == "PostUp" and ROUTE_POSTUP_RE.match(v)):
                continue
            out.append((k, v))
    return sorted(out)


def parse_dump(text):
    """`wg show IFACE dump` -> (interface dict, {public_key: peer dict}). Secrets stay in the returned dicts only."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None, {}
    f = lines[0].split("\t")
    iface = {"private_key": f[0], "public_key": f[1], "listen_port": int(f[2]) if f[2].isdigit() else 0}
    peers = {}
    for ln in lines[1:]:
        f = ln.split("\t")
        if len(f) < 8:
            continue
        allowed = set() if f[3] == "(none)" else set(x for x in f[3].split(",") if x)
        peers[f[0]] = {
            "preshared_key": None if f[1] == "(none)" else f[1],
            "endpoint": None if f[2] == "(none)" else f[2],
            "allowed_ips": allowed,
            "latest_handshake": int(f[4]),
            "rx_bytes": int(f[5]),
            "tx_bytes": int(f[6]),
            "persistent_keepalive": 0 if f[7] == "off" else int(f[7]),
        }
    return iface, peers


def live_matches(dump_iface, dump_peers, iface, server_public_key, peers, state, now):
    """True when the running interface already carries exactly the desired key, port and live peers."""
    if dump_iface is None:
        return False
    if dump_iface["public_key"] != server_public_key or dump_iface["listen_port"] != iface.listen_port:
        return False
    want = {}
    for p in peers:
        if is_live(p, now):
            e = state["peers"][p.name]
            want[e["public_key"]] = (e["preshared_key"], set(peer_allowed_ips(p, e)))
    if set(want) != set(dump_peers):
        return False
    for pub, (psk, allowed) in want.items():
        d = dump_peers[pub]
        if d["preshared_key"] != psk or d["allowed_ips"] != allowed or d["persistent_keepalive"] != 0:
            return False
    return True


def published_entry(name, entry, now):
    """One peer as the wireguard role publishes it (``wireguard_peers_published``), from its persisted state
    entry: never a secret, lean on purpose (thousands of them go through Ansible's result handling; paths and
    live figures come from wireguard_status). The one shape, whether an apply or a read publishes it."""
    expires = entry.get("expires")
    exp = parse_expiry(expires) if expires else None
    return {
        "name": name,
        "tenant": entry.get("tenant"),
        "addresses": list(entry.get("addresses", [])),
        "enabled": entry.get("enabled", True),
        "expired": exp is not None and exp <= now,
        "expires": format_expiry(exp),
        "key_source": "generated" if entry.get("generated") else "client",
    }


def published(peers, state, now):
    """The published entry (published_entry) of each desired peer, in the order given."""
    return [published_entry(p.name, state["peers"][p.name], now) for p in peers]


# --------------------------------------------------------------------------------------------- plan
class Paths(object):
    """Where one interface's files live: state_dir/INTERFACE/{state.json,server.key,clients/} and
    config_dir/INTERFACE.conf."""

    def __init__(self, state_dir, config_dir, interface):
        self.state_dir = state_dir
        self.config_dir = config_dir
        self.base = os.path.join(state_dir, interface)
        self.client_dir = os.path.join(self.base, "clients")
        self.conf = os.path.join(config_dir, interface + ".conf")
        self.state = os.path.join(self.base, "state.json")
        self.server_key = os.path.join(self.base, "server.key")
        self.lock = os.path.join(self.base, ".lock")

    def is_client_file(self, path):
        return path.startswith(self.client_dir + os.sep)


class Plan(object):
    """What an apply writes: the desired state, the configs, the files that differ, QR codes to make, client
    files to remove. Built by ``plan`` without touching anything."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def changed_files(self):
        return [w[0] for w in self.writes] + [j[1] for j in self.qr_jobs] + list(self.stale)


def plan(iface, peers, now, keys, files, paths):
    """The files side of an apply, pure: ``files`` reads the host (``read(path)`` -> text or None,
    ``exists(path)``, ``listdir(path)``), ``keys`` makes keys for new peers and a missing server key
    (``pair()``, ``private()``, ``public(private)``). Raises WireGuardError for a corrupt state or server key."""
    old_state_text = files.read(paths.state)
    try:
        old_state = json.loads(old_state_text) if old_state_text else {}
    except ValueError:
        raise WireGuardError("%s is not valid JSON: fix or remove it (allocations would be lost)" % paths.state)
    allocations = allocate(iface, peers, old_state)
    state = build_state(iface, peers, old_state, allocations, keys)

    server_key = (files.read(paths.server_key) or "").strip()
    new_server_key = not server_key
    if new_server_key:
        server_key = keys.private()
    else:
        check_key(server_key, "server key in %s" % paths.server_key)
    server_pub = keys.public(server_key)

    conf, native = render_server(iface, server_key, peers, state, now)
    old_conf = files.read(paths.conf)
    state_text = dump_state(state)

    writes = []  # (path, content)
    if new_server_key:
        writes.append((paths.server_key, server_key + "\n"))
    if old_conf != conf:
        writes.append((paths.conf, conf))
    if old_state_text != state_text:
        writes.append((paths.state, state_text))
    wanted = set()
    qr_jobs = []  # (client config text, png path, terminal text path)
    for peer in peers:
        text = render_client(iface, server_pub, peer, state["peers"][peer.name])
        path = os.path.join(paths.client_dir, peer.name + ".conf")
        wanted.add(peer.name + ".conf")
        old = files.read(path)
        if old != text:
            writes.append((path, text))
        if peer.qr:
            png, txt = path[:-5] + ".png", path[:-5] + ".qr.txt"
            wanted.update([peer.name + ".png", peer.name + ".qr.txt"])
            if old != text or not files.exists(png) or not files.exists(txt):
                qr_jobs.append((text, png, txt))
    stale = sorted(os.path.join(paths.client_dir, f) for f in files.listdir(paths.client_dir)
                   if f not in wanted and not f.startswith("."))
    old_names = set(old_state.get("peers", {}))
    new_names = set(state["peers"])
    counts = dict(total=len(peers), live=sum(1 for x in peers if is_live(x, now)),
                  added=len(new_names - old_names), removed=len(old_names - new_names))
    return Plan(state=state, server_key=server_key, server_public_key=server_pub, new_server_key=new_server_key,
                conf=conf, native=native, old_conf=old_conf, writes=writes, qr_jobs=qr_jobs, stale=stale,
                routes=peer_routes(iface, peers, now), counts=counts)


def plan_action(the_plan, iface, peers, now, live):
    """What the running interface needs: V(none), V(start), V(restart) (an interface setting changed) or
    V(syncconf) (peers or their routes differ). ``live`` is None when no service manager runs the interface,
    else has ``exists()``, ``dump()`` -> (interface, peers) as parse_dump returns them, and ``routes()``."""
    if live is None:
        return "none"
    if not live.exists():
        return "start"
    if the_plan.old_conf is not None and \
            parse_conf_interface(the_plan.old_conf) != parse_conf_interface(the_plan.conf):
        return "restart"
    d_iface, d_peers = live.dump()
    if not live_matches(d_iface, d_peers, iface, the_plan.server_public_key, peers, the_plan.state, now) or \
            live.routes() != the_plan.routes:
        return "syncconf"
    return "none"


def peer_status(peers_published, dump_peers, now_ts, stale_after=180):
    """Per-peer runtime status for `vpn status`: active | stale | never | disabled | expired."""
    out = []
    for p in peers_published:
        d = dump_peers.get(p["public_key"]) or {}
        hs = d.get("latest_handshake") or 0
        if not p["enabled"]:
            state = "disabled"
        elif p["expired"]:
            state = "expired"
        elif not hs:
            state = "never"
        elif now_ts - hs <= stale_after:
            state = "active"
        else:
            state = "stale"
        out.append({
            "name": p["name"], "tenant": p["tenant"], "addresses": p["addresses"],
            "latest_handshake_age_s": (now_ts - hs) if hs else None,
            "rx_bytes": d.get("rx_bytes", 0), "tx_bytes": d.get("tx_bytes", 0), "state": state,
            "endpoint": d.get("endpoint"),
        })
    return out


def read_state(state_dir, name):
    """The state persisted for interface NAME (STATE_DIR/NAME/state.json), ``{"peers": {}}`` when there is none;
    WireGuardError when it is not valid JSON."""
    base = os.path.join(state_dir, name)
    try:
        with open(os.path.join(base, "state.json")) as f:
            return json.load(f)
    except (IOError, OSError):
        return {"peers": {}}
    except ValueError:
        raise WireGuardError("%s/state.json is not valid JSON" % base)


def interface_status(state_dir, name, run_command, stale_after=180, state=None):
    """(running, dump interface or None, per-peer status) of interface NAME, for wireguard_status and the health
    check: the allocations persisted in STATE_DIR/NAME/state.json (or ``state``, as read_state returned it) and
    the live ``wg show NAME dump`` (through ``run_command(argv)`` -> (rc, out, err)), through peer_status().
    Each peer's status also carries enabled, expires, expired, config_file, qr_file (None when there is no PNG)
    and ``live`` (its key is on the running interface)."""
    if state is None:
        state = read_state(state_dir, name)
    running = os.path.exists("/sys/class/net/%s" % name)
    dump_iface, dump_peers = None, {}
    if running:
        rc, out, err = run_command(["wg", "show", name, "dump"])
        if rc == 0:
            dump_iface, dump_peers = parse_dump(out)
    now = datetime.datetime.now(datetime.timezone.utc)
    client_dir = os.path.join(state_dir, name, "clients")
    pubs = []
    for pname in sorted(state.get("peers", {})):
        e = state["peers"][pname]
        exp = parse_expiry(e.get("expires")) if e.get("expires") else None
        png = os.path.join(client_dir, pname + ".png")
        pubs.append({
            "name": pname, "tenant": e.get("tenant"), "addresses": e.get("addresses", []),
            "public_key": e.get("public_key"), "enabled": e.get("enabled", True),
            "expires": e.get("expires"), "expired": bool(exp and exp <= now),
            "config_file": os.path.join(client_dir, pname + ".conf"),
            "qr_file": png if os.path.exists(png) else None,
        })
    status = peer_status(pubs, dump_peers, int(time.time()), stale_after)
    for pub, st in zip(pubs, status):
        st.update(dict((k, pub[k]) for k in ("enabled", "expires", "expired", "config_file", "qr_file")))
        st["live"] = pub["public_key"] in dump_peers
    return running, dump_iface, status
