# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local instance's network host: names and addresses derived from the instance directory.

Pure functions (unit-tested); plugins/modules/local_network.py does the work. Names derive from a hash of the
instance directory, so two instances in different directories get different namespace names; everything else
(interfaces, WireGuard port, addresses) lives inside that namespace and cannot collide with another one. The
namespace's loopback carries the owner's marker (its interface alias, ``owner_marker``), so the module can tell a
namespace of its own instance from one of another instance whose directory hashes alike (it then refuses to
start and never stops or deletes the other one).
Every address is in a documentation range: 203.0.113.0/24 for the underlay bridge clients attach to,
198.51.100.0/24 and fd00::/8 for the VPN.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import ipaddress
import os


CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
MARKER_PREFIX = "berqenas-local "


class LocalNetError(Exception):
    pass


def instance_id(home):
    """8 hex digits of SHA-256 of the absolute instance directory."""
    if not home or not os.path.isabs(home):
        raise LocalNetError("local network: the instance directory must be an absolute path, got %r" % (home,))
    return hashlib.sha256(os.path.normpath(home).encode("utf-8")).hexdigest()[:8]


def layout(home):
    """Everything about the instance's network host that is derived from its directory."""
    iid = instance_id(home)
    base = os.path.join(os.path.normpath(home), "network")
    return {
        "id": iid,
        "netns": "bq-" + iid,
        "marker": owner_marker(home),
        "bridge": "bqlan0",
        "underlay_address": "203.0.113.1/24",
        "underlay_network": "203.0.113.0/24",
        "endpoint": "203.0.113.1",
        # canonical text (fd00:aa8:.., not fd00:0aa8:..): what `ip addr` and `wg` print, so it compares as a string
        "vpn_addresses": ["198.51.100.1/24", str(ipaddress.ip_interface("fd00:%s:%s::1/64" % (iid[:4], iid[4:])))],
        "wireguard_port": 51820,
        "dir": base,
        "etc_upper": os.path.join(base, "etc"),
        "etc_work": os.path.join(base, "etc.work"),
        "anchor_pidfile": os.path.join(base, "anchor.pid"),
        "forward_pidfile": os.path.join(base, "forward.pid"),
    }


def client_link_names(iid, n):
    """Interface names (<= 15 bytes) of the veth pair for client N: (inside the local host, inside the client)."""
    if not 0 <= int(n) <= 999:
        raise LocalNetError("local network: client number %r out of range 0-999" % (n,))
    return "bqc%s%d" % (iid[:6], int(n)), "bqcl0"


def owner_marker(home):
    """The alias the instance puts on its namespace's loopback: the prefix and the full SHA-256 of its directory."""
    instance_id(home)  # the same validation
    return MARKER_PREFIX + hashlib.sha256(os.path.normpath(home).encode("utf-8")).hexdigest()


def owner(alias, home):
    """Whose namespace a loopback alias says it is: "ours" (HOME's marker), "foreign" (another instance's
    marker or anything else) or "unmarked" (no alias: created before markers, or cut off before it got one)."""
    alias = (alias or "").strip()
    if not alias:
        return "unmarked"
    return "ours" if alias == owner_marker(home) else "foreign"


def effective_capabilities(status_path="/proc/self/status"):
    """The CapEff bit mask of this process."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise LocalNetError("local network: no CapEff line in %s" % status_path)


def privilege_problem(capeff):
    """None when a process with the CapEff mask CAPEFF can build the local network host, else the message
    (network namespaces, their mounts and interfaces need CAP_SYS_ADMIN and CAP_NET_ADMIN, in practice root)."""
    missing = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
               if not capeff >> bit & 1]
    if not missing:
        return None
    return ("the local VPN + gateway host needs root (%s missing: it creates a network namespace, mounts and "
            "interfaces); run it as root, or use --no-network for PostgreSQL and the tenants only"
            % " and ".join(missing))
