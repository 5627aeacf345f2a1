# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gateway planning: validate exposures and render the platform's firewall blocks and pg_hba rules.

Pure (standard library only), shared by the ``gateway_plan`` module, the orchestrator's ``gateway`` CLI
group and the unit tests. Nothing here touches a system.

Model
-----
* The platform owns a few chains (``BQ-*``) and loads them through ufw's own framework files: one
  managed block at the end of ``/etc/ufw/before.rules`` (and ``before6.rules``). Every chain is
  *declared* in the block (``:BQ-INPUT - [0:0]``), and ``iptables-restore --noflush`` flushes a declared
  chain, so N reloads leave exactly one copy of each rule. The jumps into the filter chains hang off
  ufw's own ``ufw-before-input``/``ufw-before-forward`` chains, which ufw declares (and so flushes) in the
  same file: idempotent too. The jumps from the built-in nat chains (``PREROUTING``/``POSTROUTING``),
  which nothing flushes, are added by a check-before-insert hook that ufw runs after loading
  (``after.init``), see :func:`render_hook`.
* Filter rules of the platform (management SSH, the WireGuard port, exposures, the forwards'
  route-allow rules and VPN egress) live in ``BQ-INPUT``/``BQ-FORWARD``: one atomic load for the
  whole set instead of one ufw command per rule, and removal is "render without it".
* IPv4 does NAT; IPv6 gets filter rules only (exposures of a local service to IPv6 peer addresses).
  Routed IPv6 stays denied by ufw's default routed policy (DROP): no IPv6 forwards.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

from ansible_collections.berqenas.platform.plugins.module_utils import validation

CHAIN_PREFIX = "BQ"
NAT_CHAINS = ("BQ-PREROUTING", "BQ-POSTROUTING")
FILTER_CHAINS = ("BQ-INPUT", "BQ-FORWARD")
HBA_METHOD = "scram-sha-256"
LOOPBACK_NAMES = ("localhost",)


class GatewayError(validation.ValidationError):
    """Invalid gateway input or an impossible plan; the message names the value and why."""


# ---------------------------------------------------------------- validation of single values
# The rules live in module_utils/validation.py; these apply them and raise GatewayError (a ValidationError).


def _v(rule, *args):
    return validation.checked(GatewayError, rule, *args)


def reject_template(value, what):
    """Refuse strings that carry template syntax: inputs are data, never templates (the collection's rule)."""
    return _v(validation.no_template, value, what)


def _text(value, what):
    return _v(validation.text, value, what)


def validate_name(value, what="tenant name"):
    """A tenant name, by the collection's one rule (module_utils.validation.tenant_name)."""
    _text(value, what)
    return _v(validation.tenant_name, value)


def validate_identifier(value, what):
    """A plain lower-case SQL identifier (the platform database's name)."""
    return _v(validation.sql_identifier, value, what)


def validate_exposure_name(value):
    _text(value, "exposure name")
    return _v(validation.exposure_name, value)


def validate_port(value, what="port"):
    """A TCP/UDP port 1..65535 given as an int or a decimal string; booleans are refused."""
    return _v(validation.port, value, what)


def validate_cidr(value, what="CIDR"):
    """An IPv4/IPv6 network (a bare address means /32 or /128); host bits must be zero."""
    return _v(validation.cidr, value, what)


def validate_address(value, what="address"):
    """A peer address as the wireguard role publishes it: ``198.51.100.2`` or ``198.51.100.2/32`` (or a subnet)."""
    return _v(validation.peer_network, value, what)


def validate_host(value, what="host"):
    """An IP literal or a DNS host name (RFC 1123 labels, <= 253 characters)."""
    return _v(validation.host, value, what)


def validate_target(value):
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port)."""
    return _v(validation.host_port, value, "target")


def validate_interface(value, what="interface"):
    return _v(validation.interface_name, value, what)


def is_local_host(host, local_addresses=()):
    """True when HOST is this machine: loopback, ``localhost`` or one of LOCAL_ADDRESSES."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or str(addr) in {str(ipaddress.ip_address(a)) for a in local_addresses}


# ---------------------------------------------------------------- the plan


def _bool(value, what):
    if isinstance(value, bool):
        return value
    raise GatewayError("invalid %s %r: expected true or false" % (what, value))


def normalize_peers(peers):
    """Validate the wireguard role's published peers: list of {name, tenant, addresses, enabled, expired}.

    Other keys of the published fact (public_key, allowed_ips, config_file, ...) are ignored.
    """
    if peers is None:
        return []
    if not isinstance(peers, list):
        raise GatewayError("invalid vpn peers: expected a list")
    out = []
    for i, peer in enumerate(peers):
        if not isinstance(peer, dict):
            raise GatewayError("invalid vpn peer #%d: expected a mapping" % i)
        name = _text(peer.get("name"), "peer name")
        tenant = peer.get("tenant")
        if tenant is not None:
            validate_name(tenant)
        addresses = peer.get("addresses") or []
        if not isinstance(addresses, list):
            raise GatewayError("invalid addresses of peer %r: expected a list" % (name,))
        nets = [validate_address(a, "address of peer %r" % name) for a in addresses]
        enabled = _bool(peer.get("enabled", True), "enabled of peer %r" % name)
        # an expired peer is no source either (the wireguard role also drops it from the interface)
        expired = _bool(peer.get("expired", False), "expired of peer %r" % name)
        out.append({"name": name, "tenant": tenant, "addresses": nets, "enabled": enabled and not expired})
    return out


def _sorted_nets(nets):
    uniq = {str(n): n for n in nets}
    return sorted(uniq.values(), key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def check_exposure(exp, i=0):
    """One exposure's own fields, without their context (the VPN peers, the database, the host's addresses):
    keys, tenant, name, state, service or target, public port, allow-list. -> (tenant, name, state)."""
    if not isinstance(exp, dict):
        raise GatewayError("invalid exposure #%d: expected a mapping" % i)
    unknown = set(exp) - {"tenant", "name", "service", "target", "public_port", "allow", "state"}
    if unknown:
        raise GatewayError("invalid exposure #%d: unknown keys %s" % (i, ", ".join(sorted(map(str, unknown)))))
    tenant = validate_name(exp.get("tenant"))
    name = validate_exposure_name(exp.get("name") or "db")
    state = exp.get("state", "present")
    if state not in ("present", "absent"):
        raise GatewayError("invalid state %r of exposure %s/%s: present or absent" % (state, tenant, name))
    if state == "absent":
        return tenant, name, state
    service = exp.get("service")
    target = exp.get("target")
    if service is not None and target is not None:
        raise GatewayError("exposure %s/%s: give either service or target, not both" % (tenant, name))
    if service is not None:
        reject_template(service, "service")
        if service != "postgres":
            raise GatewayError("exposure %s/%s: unknown service %r (postgres, or give a target)" % (
                tenant, name, service))
    if target is not None:
        validate_target(target)
    if exp.get("public_port") is not None:
        validate_port(exp["public_port"], "public port")
    allow = exp.get("allow") or []
    if not isinstance(allow, list):
        raise GatewayError("exposure %s/%s: allow must be a list of CIDRs" % (tenant, name))
    for c in allow:
        validate_cidr(c, "allowed CIDR")
    return tenant, name, state


def normalize_exposures(exposures, peers, postgres, local_addresses=(), reserved_ports=()):
    """Validate exposures and resolve each one to its sources, target and kind.

    ``postgres`` is {host, port}: ``service: postgres`` means the platform database's host and port.
    Returns a list of dicts sorted by (tenant, name): tenant, name, service, kind (``input`` for a
    service on this host, ``forward`` for DNAT to another host), port (public), target_host,
    target_port, target (``host:port``), vpn_sources / allow_sources (networks), sources (strings).
    """
    if exposures is None:
        exposures = []
    if not isinstance(exposures, list):
        raise GatewayError("invalid exposures: expected a list")
    pg_host = validate_host(postgres.get("host", "127.0.0.1"), "postgres host")
    pg_port = validate_port(postgres.get("port", 5432), "postgres port")
    seen = set()
    result = []
    for i, exp in enumerate(exposures):
        tenant, name, state = check_exposure(exp, i)
        if (tenant, name) in seen:
            raise GatewayError("duplicate exposure %s/%s" % (tenant, name))
        seen.add((tenant, name))
        if state == "absent":
            continue
        service = exp.get("service")
        target = exp.get("target")
        if service is None and target is None:
            service = "postgres"
        if service is not None:
            host, port = pg_host, pg_port
        else:
            host, port = validate_target(target)
        public = exp.get("public_port")
        public = port if public is None else validate_port(public, "public port")
        allow_nets = [validate_cidr(c, "allowed CIDR") for c in exp.get("allow") or []]
        vpn_nets = [n for p in peers if p["enabled"] and p["tenant"] == tenant for n in p["addresses"]]
        local = is_local_host(host, local_addresses)
        if local and public != port:
            raise GatewayError("exposure %s/%s: a service on this host is exposed on its own port %d, not %d" % (
                tenant, name, port, public))
        if not local:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                raise GatewayError("exposure %s/%s: forward target %r must be an IPv4 address (DNAT needs one)" % (
                    tenant, name, host)) from None
            if ip.version != 4:
                raise GatewayError("exposure %s/%s: forwards are IPv4 only, got %s" % (tenant, name, host))
            if any(n.version == 6 for n in allow_nets):
                raise GatewayError("exposure %s/%s: forwards are IPv4 only, allow-list has IPv6" % (tenant, name))
        if public in reserved_ports:
            raise GatewayError("exposure %s/%s: public port %d is reserved (%s)" % (
                tenant, name, public, reserved_ports[public] if isinstance(reserved_ports, dict) else "reserved"))
        vpn_sorted = _sorted_nets(vpn_nets)
        if not local:
            vpn_sorted = [n for n in vpn_sorted if n.version == 4]
        allow_sorted = _sorted_nets(allow_nets)
        target_text = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        result.append({
            "tenant": tenant, "name": name, "service": service or "", "kind": "input" if local else "forward",
            "port": public, "target_host": host, "target_port": port, "target": target_text,
            "vpn_sources": vpn_sorted, "allow_sources": allow_sorted,
            "sources": [str(n) for n in _sorted_nets(vpn_sorted + allow_sorted)],
        })
    # one public port leads to one place
    by_port = {}
    for e in result:
        other = by_port.setdefault(e["port"], e)
        if (other["kind"], other["target"]) != (e["kind"], e["target"]):
            raise GatewayError("exposures %s/%s and %s/%s both claim public port %d for different targets" % (
                other["tenant"], other["name"], e["tenant"], e["name"], e["port"]))
    result.sort(key=lambda e: (e["tenant"], e["name"]))
    return result


def _comment(*parts):
    return '-m comment --comment "bq:%s"' % ":".join(parts)


def render_rules(plan, version):
    """The managed block for before.rules (version 4) or before6.rules (version 6), without markers."""
    inp, fwd, pre, post = "BQ-INPUT", "BQ-FORWARD", "BQ-PREROUTING", "BQ-POSTROUTING"
    ufw = "ufw" if version == 4 else "ufw6"
    lines = []
    if version == 4:
        lines += ["*nat", ":%s - [0:0]" % pre, ":%s - [0:0]" % post]
        for e in plan["exposures"]:
            if e["kind"] != "forward":
                continue
            for src in e["sources"]:
                lines.append(
                    "-A %s -s %s -p tcp -m addrtype --dst-type LOCAL -m tcp --dport %d %s -j DNAT "
                    "--to-destination %s" % (pre, src, e["port"], _comment(e["tenant"], e["name"]), e["target"])
                )
        # forwarded (DNAT) connections keep the client's address: PostgreSQL's pg_hba sees the peer
        lines.append("-A %s -m conntrack --ctstate DNAT -j RETURN" % post)
        masq = plan["masquerade"]
        if masq["egress_interface"]:
            for src in masq["sources"]:
                if src.version == 4:
                    lines.append("-A %s -s %s -o %s -j MASQUERADE" % (post, src, masq["egress_interface"]))
        lines.append("COMMIT")
    lines += ["*filter", ":%s - [0:0]" % inp]
    if version == 4:
        lines.append(":%s - [0:0]" % fwd)
    lines.append("-A %s-before-input -j %s" % (ufw, inp))
    if version == 4:
        lines.append("-A %s-before-forward -j %s" % (ufw, fwd))
    mgmt = plan["management"]
    if mgmt["enabled"]:
        srcs = [s for s in mgmt["sources"] if s.version == version] if mgmt["sources"] else [None]
        for src in srcs:
            lines.append("-A %s%s -p tcp -m tcp --dport %d %s -j ACCEPT" % (
                inp, " -s %s" % src if src else "", mgmt["port"], _comment("management")))
    wg = plan["wireguard"]
    if wg["port"]:
        lines.append("-A %s -p udp -m udp --dport %d %s -j ACCEPT" % (inp, wg["port"], _comment("wireguard")))
    for e in plan["exposures"]:
        srcs = [s for s in e["vpn_sources"] + e["allow_sources"] if s.version == version]
        for src in _sorted_nets(srcs):
            if e["kind"] == "input":
                lines.append("-A %s -s %s -p tcp -m tcp --dport %d %s -j ACCEPT" % (
                    inp, src, e["port"], _comment(e["tenant"], e["name"])))
            elif version == 4:
                lines.append("-A %s -s %s -d %s -p tcp -m tcp --dport %d -m conntrack --ctstate DNAT %s -j ACCEPT" % (
                    fwd, src, e["target_host"], e["target_port"], _comment(e["tenant"], e["name"])))
    masq = plan["masquerade"]
    if version == 4 and masq["egress_interface"] and masq["vpn_interface"]:
        for src in masq["sources"]:
            if src.version == 4:
                lines.append("-A %s -s %s -i %s -o %s %s -j ACCEPT" % (
                    fwd, src, masq["vpn_interface"], masq["egress_interface"], _comment("egress")))
    lines.append("COMMIT")
    return "\n".join(lines)


def render_pg_hba(plan):
    """pg_hba lines admitting each exposed tenant's login roles from its sources only."""
    pg = plan["postgres"]
    lines = []
    for e in plan["exposures"]:
        if e["service"] != "postgres":
            continue
        roles = ",".join(e["tenant"] + s for s in pg["role_suffixes"])
        lines.append("# exposure %s/%s" % (e["tenant"], e["name"]))
        for src in e["vpn_sources"]:
            lines.append("host %s %s %s %s" % (pg["database"], roles, src, HBA_METHOD))
        for src in e["allow_sources"]:
            lines.append("hostssl %s %s %s %s" % (pg["database"], roles, src, HBA_METHOD))
    return "\n".join(lines)


def build_plan(config):
    """Validate a whole gateway configuration and render everything the role writes.

    ``config`` keys (all optional but ``exposures``): exposures, vpn_peers, local_addresses,
    management {enabled, port, sources}, wireguard {port}, masquerade {sources, egress_interface,
    vpn_interface}, postgres {host, port, database, role_suffixes}.
    """
    for key in config:
        if key not in ("exposures", "vpn_peers", "local_addresses", "management", "wireguard", "masquerade",
                       "postgres"):
            raise GatewayError("unknown gateway setting %r" % (key,))
    mgmt_in = config.get("management") or {}
    mgmt = {
        "enabled": _bool(mgmt_in.get("enabled", True), "management enabled"),
        "port": validate_port(mgmt_in.get("port", 22), "management port"),
        "sources": _sorted_nets([validate_cidr(c, "management CIDR") for c in (mgmt_in.get("sources") or [])]),
    }
    wg_in = config.get("wireguard") or {}
    wg_port = wg_in.get("port")
    wg = {"port": validate_port(wg_port, "wireguard port") if wg_port not in (None, 0, "") else None}
    masq_in = config.get("masquerade") or {}
    egress = masq_in.get("egress_interface") or ""
    vpn_if = masq_in.get("vpn_interface") or ""
    masq = {
        "sources": _sorted_nets([validate_cidr(c, "VPN subnet") for c in (masq_in.get("sources") or [])]),
        "egress_interface": validate_interface(egress, "egress interface") if egress else "",
        "vpn_interface": validate_interface(vpn_if, "VPN interface") if vpn_if else "",
    }
    pg_in = config.get("postgres") or {}
    suffixes = pg_in.get("role_suffixes", ["_app", "_ro"])
    if not isinstance(suffixes, list) or not suffixes:
        raise GatewayError("invalid login role suffixes: expected a non-empty list")
    for s in suffixes:
        _text(s, "login role suffix")
        if not re.match(r"^[a-z0-9_]{1,20}$", s):
            raise GatewayError("invalid login role suffix %r" % (s,))
    pg = {
        "host": validate_host(pg_in.get("host", "127.0.0.1"), "postgres host"),
        "port": validate_port(pg_in.get("port", 5432), "postgres port"),
        "database": validate_identifier(pg_in.get("database", "berqenas"), "database name"),
        "role_suffixes": list(suffixes),
    }
    local_addresses = config.get("local_addresses") or []
    if not isinstance(local_addresses, list):
        raise GatewayError("invalid local addresses: expected a list")
    for a in local_addresses:
        _text(a, "local address")
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise GatewayError("invalid local address %r" % (a,)) from None
    peers = normalize_peers(config.get("vpn_peers"))
    reserved = {mgmt["port"]: "management SSH"} if mgmt["enabled"] else {}
    exposures = normalize_exposures(config.get("exposures"), peers, pg, local_addresses, reserved)
    plan = {"management": mgmt, "wireguard": wg, "masquerade": masq, "postgres": pg, "exposures": exposures}
    plan["before_rules"] = render_rules(plan, 4)
    plan["before6_rules"] = render_rules(plan, 6)
    plan["pg_hba"] = render_pg_hba(plan)
    return plan


def public_plan(plan):
    """The plan as plain data (networks as strings) for module results and the CLI."""
    def conv(value):
        if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return str(value)
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        if isinstance(value, list):
            return [conv(v) for v in value]
        return value

    return conv(plan)


def render_hook():
    """after.init hook: idempotent jumps from the built-in nat chains into the platform's chains.

    ``start``: insert each jump only when ``iptables -C`` does not find it (so it exists once).
    ``stop``: delete every copy of the jumps, then flush and delete the platform's chains in both
    tables, so ``ufw disable`` (or the role's state=absent) leaves nothing of the platform behind.
    """
    lines = [
        "#!/bin/sh",
        "# berqenas gateway hook, called by ufw's after.init: jumps into the platform's chains (managed by Ansible)",
        "set -u",
        'ipt="iptables -w"',
        'case "${1:-}" in',
        "start)",
    ]
    for builtin, chain in (("PREROUTING", "BQ-PREROUTING"), ("POSTROUTING", "BQ-POSTROUTING")):
        lines.append("    if $ipt -t nat -L %s -n >/dev/null 2>&1; then" % chain)
        lines.append("        $ipt -t nat -C %s -j %s 2>/dev/null || $ipt -t nat -I %s 1 -j %s || exit 1" % (
            builtin, chain, builtin, chain))
        lines.append("    fi")
    lines += ["    ;;", "stop)"]
    for builtin, chain in (("PREROUTING", "BQ-PREROUTING"), ("POSTROUTING", "BQ-POSTROUTING")):
        lines.append("    while $ipt -t nat -C %s -j %s 2>/dev/null; do $ipt -t nat -D %s -j %s; done" % (
            builtin, chain, builtin, chain))
    for chain in NAT_CHAINS:
        lines.append("    $ipt -t nat -F %s 2>/dev/null; $ipt -t nat -X %s 2>/dev/null" % (chain, chain))
    for exe in ("iptables -w", "ip6tables -w"):
        for chain in FILTER_CHAINS:
            lines.append("    %s -F %s 2>/dev/null; %s -X %s 2>/dev/null" % (exe, chain, exe, chain))
    lines += ["    true", "    ;;", "*)", "    ;;", "esac", "exit 0", ""]
    return "\n".join(lines)
