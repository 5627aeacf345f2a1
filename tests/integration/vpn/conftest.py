"""VPN test bed: a WireGuard hub and two client machines on one underlay bridge (tests/support/machines.py).

   hub 192.0.2.1 --- wan (bridge) --- c1 192.0.2.11, c2 192.0.2.12
   VPN: 198.51.100.0/24 + fd00:b::/64, hub 198.51.100.1 / fd00:b::1, UDP 51820
The desired state is written where an operator keeps it: group_vars/wireguard.yml next to the inventory.
"""

import os
import re

import pytest
import yaml

from tests.support import env as support_env
from tests.support.machines import Topology

APPLY = os.path.join(support_env.REPO, "playbooks", "vpn_apply.yml")
STATE = "/etc/berqenas/wireguard/wg0"
BASE_VARS = {
    "wireguard_addresses": ["198.51.100.1/24", "fd00:b::1/64"],
    "wireguard_endpoint": "192.0.2.1",
    "wireguard_persistent_keepalive": 5,
    "wireguard_expiry_interval": 2,
    "wireguard_manage_packages": False,  # baked into the rootfs; test_tunnels_carry_traffic runs the apt task once
}


class VpnBed:
    def __init__(self, cluster):
        self.cluster = cluster
        self.hub = cluster["hub"]
        gv = os.path.join(cluster.workdir, "group_vars")
        os.makedirs(gv, exist_ok=True)
        self.vars_path = os.path.join(gv, "wireguard.yml")
        self.outputs = []  # every playbook output, scanned for secrets at the end

    def write_vars(self, peers, **overrides):
        data = dict(BASE_VARS, wireguard_peers=peers)
        data.update(overrides)
        with open(self.vars_path, "w") as f:
            f.write(yaml.safe_dump(data, sort_keys=False))

    def apply(self, peers=None, check=False, diff=False, limit=None, extra_args=(), raw_vars=None, **overrides):
        if raw_vars is not None:
            with open(self.vars_path, "w") as f:
                f.write(raw_vars)
        elif peers is not None:
            self.write_vars(peers, **overrides)
        res = self.cluster.playbook(APPLY, check=check, diff=diff, limit=limit, extra_args=extra_args)
        self.outputs.append(res.stdout)
        return res

    def playbook(self, path, **kw):
        res = self.cluster.playbook(path, **kw)
        self.outputs.append(res.stdout)
        return res

    def state(self):
        return yaml.safe_load(self.hub.read_file(STATE + "/state.json"))

    def dump(self):
        out = self.hub.run(["wg", "show", "wg0", "dump"]).stdout.splitlines()
        return {ln.split("\t")[0]: ln.split("\t") for ln in out[1:]}

    def client_up(self, machine, peer):
        conf = self.hub.read_file(f"{STATE}/clients/{peer}.conf")
        machine.write_file("/etc/wireguard/wg0.conf", conf, mode=0o600)
        machine.run(["systemctl", "restart", "wg-quick@wg0.service"])

    def wg_pid(self):
        return self.hub.run(["pgrep", "-x", "wireguard-go"]).stdout.split()

    def ifindex(self):
        return self.hub.run(["cat", "/sys/class/net/wg0/ifindex"]).stdout.strip()


def ok(res, host="hub"):
    """Assert the run succeeded; returns the host's recap counters."""
    assert res.returncode == 0, res.stdout[-5000:]
    return res.recap()[host]


SECRET_RE = re.compile(r"[A-Za-z0-9+/]{43}=")


@pytest.fixture(scope="module")
def vpn(machines_module):
    topo = Topology()
    topo.machine("hub", groups=["wireguard"], mask=["postgresql.service"])
    topo.machine("c1", mask=["postgresql.service"])
    topo.machine("c2", mask=["postgresql.service"])
    topo.link("wan", {"hub": "192.0.2.1/24", "c1": "192.0.2.11/24", "c2": "192.0.2.12/24"})
    return VpnBed(machines_module(topo))
