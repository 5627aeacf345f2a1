# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local instance's network host: names and addresses derived from the instance directory.

Pure functions (unit-tested); plugins/modules/local_network.py does the work. Names derive from a hash of the
instance directory, so two instances in different directories never share a namespace name; everything else
(interfaces, WireGuard port, addresses) lives inside that namespace and cannot collide with another one.
Every address is in a documentation range: 203.0.113.0/24 for the underlay bridge clients attach to,
198.51.100.0/24 and fd00::/8 for the VPN.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os


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
        "bridge": "bqlan0",
        "underlay_address": "203.0.113.1/24",
        "underlay_network": "203.0.113.0/24",
        "endpoint": "203.0.113.1",
        "vpn_addresses": ["198.51.100.1/24", "fd00:%s:%s::1/64" % (iid[:4], iid[4:])],
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
