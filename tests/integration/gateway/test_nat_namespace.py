"""The platform's NAT/filter block under real ufw + iptables, in namespaces this test creates.

Topology (documentation ranges only, every namespace with private /etc/ufw + /etc/default copies):

    client 192.0.2.2 --- 192.0.2.1 [gw] 203.0.113.1 --- 203.0.113.2 backend (default via .1)

The block rendered by module_utils.gateway goes at the end of the namespace's before.rules, the nat
hook into its after.init, exactly where the role puts them. Proven here: after enable + N reloads
every rule exists once (built-in jumps included), the DNAT forward reaches the backend WITHOUT
masquerading, a removed exposure leaves nothing behind, and `ufw disable` removes the platform's
chains and jumps.
"""

import os
import re
import time

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import gateway as gw

from tests.integration.gateway.conftest import veth
from tests.integration.gateway.probes import listener_argv, probe_argv, probe_result

pytestmark = pytest.mark.gateway

DROPPED = ("BLOCKED", "TimeoutError")  # no answer at all: the firewall dropped the SYN

BEGIN, END = "# BEGIN BERQENAS GATEWAY", "# END BERQENAS GATEWAY"
HOOK = "/etc/ufw/berqenas-gateway.hook"


def put_block(path, block):
    """What ansible.builtin.blockinfile does with insertafter=EOF (replace in place when present)."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"\n?%s\n.*?%s\n" % (re.escape(BEGIN), re.escape(END)), "\n", text, flags=re.S).rstrip("\n")
    if block is not None:
        text += "\n%s\n%s\n%s" % (BEGIN, block, END)
    with open(path, "w") as f:
        f.write(text + "\n")


def install(ns, plan):
    put_block(ns.path("/etc/ufw/before.rules"), plan["before_rules"])
    put_block(ns.path("/etc/ufw/before6.rules"), plan["before6_rules"])
    with open(ns.path(HOOK), "w") as f:
        f.write(gw.render_hook())
    os.chmod(ns.path(HOOK), 0o750)
    after_init = ns.path("/etc/ufw/after.init")
    with open(after_init) as f:
        lines = f.read().splitlines()
    if BEGIN not in lines:
        lines[1:1] = [BEGIN, 'if [ -x %s ]; then %s "${1:-}" || exit 1; fi' % (HOOK, HOOK), END]
        with open(after_init, "w") as f:
            f.write("\n".join(lines) + "\n")
    os.chmod(after_init, 0o750)


def count(text, line):
    return text.splitlines().count(line)


def test_nat_block_is_idempotent_forwards_unmasqueraded_and_removal_leaves_nothing(ufw_namespaces):
    gwns, client, backend = ufw_namespaces("gw"), ufw_namespaces("cl"), ufw_namespaces("be")
    veth(gwns, "192.0.2.1/24", client, "192.0.2.2/24", "bqwan", "bqwan0")
    veth(gwns, "203.0.113.1/24", backend, "203.0.113.2/24", "bqlan", "bqlan0")
    backend.sh(["ip", "route", "add", "default", "via", "203.0.113.1"])
    client.sh(["ip", "route", "add", "default", "via", "192.0.2.1"])
    for ns, addr, port in ((backend, "203.0.113.2", 8080), (gwns, "0.0.0.0", 5432)):
        p = ns.popen(listener_argv(addr, port))
        assert p.stdout.readline().strip() == "listening"

    def probe(addr, port):
        return probe_result(client.sh(probe_argv(addr, port, timeout=1.0)).stdout)

    sysctl = gwns.path("/etc/ufw/sysctl.conf")
    with open(sysctl, "a") as f:
        f.write("net/ipv4/ip_forward=1\n")
    config = {
        "exposures": [{"tenant": "globex", "name": "web", "target": "203.0.113.2:8080", "public_port": 18080,
                       "allow": ["192.0.2.0/24"]}],
        "management": {"port": 22},
        "wireguard": {"port": 51820},
        "masquerade": {"sources": ["198.51.100.0/24"], "egress_interface": "bqlan", "vpn_interface": "wg0"},
    }
    install(gwns, gw.build_plan(config))
    gwns.sh(["ufw", "--force", "enable"])
    assert gwns.sh(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"

    t0 = time.monotonic()
    for _ in range(3):
        gwns.sh(["ufw", "reload"])
    reload_s = (time.monotonic() - t0) / 3
    nat = gwns.sh(["iptables", "-t", "nat", "-S"]).stdout
    filt = gwns.sh(["iptables", "-S"]).stdout
    assert count(nat, "-A PREROUTING -j BQ-PREROUTING") == 1, nat
    assert count(nat, "-A POSTROUTING -j BQ-POSTROUTING") == 1, nat
    dnat = [line for line in nat.splitlines() if "DNAT --to-destination 203.0.113.2:8080" in line]
    assert len(dnat) == 1, nat
    assert count(nat, "-A BQ-POSTROUTING -s 198.51.100.0/24 -o bqlan -j MASQUERADE") == 1, nat
    assert count(filt, "-A ufw-before-input -j BQ-INPUT") == 1, filt
    assert count(filt, "-A ufw-before-forward -j BQ-FORWARD") == 1, filt
    assert len([x for x in filt.splitlines() if x.startswith("-A BQ-FORWARD") and "203.0.113.2/32" in x]) == 1, filt
    assert gwns.sh(["ip6tables", "-S"]).stdout.count("-A ufw6-before-input -j BQ-INPUT") == 1

    # the forward reaches the backend, which sees the client's own address (no masquerade)
    assert probe("192.0.2.1", 18080) == ("OPEN", "192.0.2.2")
    # default deny: the gateway's own listener is not exposed
    assert probe("192.0.2.1", 5432) == DROPPED
    # a plain forward to the backend (no DNAT) is denied: routed traffic needs a rule
    assert probe("203.0.113.2", 8080) == DROPPED

    # remove the exposure: reload leaves no trace of it
    del config["exposures"][0]
    install(gwns, gw.build_plan(config))
    gwns.sh(["ufw", "reload"])
    nat = gwns.sh(["iptables", "-t", "nat", "-S"]).stdout
    filt = gwns.sh(["iptables", "-S"]).stdout
    assert "-j DNAT" not in nat and "bq:globex" not in filt, (nat, filt)
    assert count(nat, "-A PREROUTING -j BQ-PREROUTING") == 1, nat
    assert probe("192.0.2.1", 18080) == DROPPED

    # ufw disable: the hook's stop removes the platform's jumps and chains from both tables
    gwns.sh(["ufw", "disable"])
    leftovers = gwns.sh(["iptables-save"]).stdout + gwns.sh(["ip6tables-save"]).stdout
    assert "BQ-" not in leftovers, leftovers
    # and enabling again restores everything once
    gwns.sh(["ufw", "--force", "enable"])
    assert count(gwns.sh(["iptables", "-t", "nat", "-S"]).stdout, "-A PREROUTING -j BQ-PREROUTING") == 1
    assert reload_s < 10
