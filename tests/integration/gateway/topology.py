"""The gateway topology on nspawn machines, shared by the gateway's machine tests.

    pa (tenant acme peer)   192.0.2.11 ┐                               ┌ 203.0.113.2  be (backend, listener :8080)
    pb (tenant globex peer) 192.0.2.12 ├─ wan ── 192.0.2.1 [gw] 203.0.113.1 ─ lan
    out (outside)           192.0.2.13 │        wg0 198.51.100.1/24, platform PostgreSQL
    ctl (controller, ssh)   192.0.2.254┘
    WireGuard: pa 198.51.100.2, pb 198.51.100.3 (wireguard-go under wg-quick on each machine)

gw, pa and pb are machines (systemd, own /etc, own iptables); out, be and ctl are plain namespaces used
as traffic endpoints (host filesystem, nothing of theirs is configured). Only documentation ranges.
"""

import inspect
import json
import os
import secrets
import subprocess

import yaml

from tests.integration.gateway.probes import LISTENER, PROBE, probe_result
from tests.support import env as support_env
from tests.support import isolation
from tests.support.machines import Topology

GW_WAN, GW_VPN = "192.0.2.1", "198.51.100.1"
PEERS = {"pa": ("acme", "198.51.100.2", "192.0.2.11"), "pb": ("globex", "198.51.100.3", "192.0.2.12")}
TENANT_HBA_BLOCK = """# BEGIN berqenas.platform postgres_tenant (managed, do not edit)
local   berqenas  +berqenas_tenants  scram-sha-256
host    berqenas  +berqenas_tenants  127.0.0.1/32  scram-sha-256
host    berqenas  +berqenas_tenants  ::1/128  scram-sha-256
local   all  +berqenas_tenants  reject
host    all  +berqenas_tenants  all  reject
# END berqenas.platform postgres_tenant (managed, do not edit)
"""
HBA = "/etc/postgresql/15/main/pg_hba.conf"

# run inside the machines: the SQLSTATE of a refused connection is read from the server's own reply
SQL_PROBE = r"""
import sys, psycopg
host, user, db = sys.argv[1], sys.argv[2], sys.argv[3]
password = sys.stdin.read()
""" + inspect.getsource(isolation.startup_sqlstate) + r"""


try:
    with psycopg.connect(host=host, port=5432, dbname=db, user=user, password=password, connect_timeout=3) as c:
        print("OK " + c.execute("SELECT current_user").fetchone()[0])
except psycopg.OperationalError as e:
    state = getattr(e, "sqlstate", None) or startup_sqlstate(host, 5432, user, db) or "unproven"
    print("ERR %s %s" % (state, str(e).strip().splitlines()[-1] if str(e).strip() else ""))
"""


def topology():
    t = Topology()
    t.machine("gw", groups=["berqenas_gateway"])
    t.machine("pa", mask=["postgresql.service"])
    t.machine("pb", mask=["postgresql.service"])
    for ns in ("out", "be", "ctl"):
        t.namespace(ns)
    t.link("wan", {"gw": GW_WAN + "/24", "pa": "192.0.2.11/24", "pb": "192.0.2.12/24", "out": "192.0.2.13/24",
                   "ctl": "192.0.2.254/24"})
    t.link("lan", {"gw": "203.0.113.1/24", "be": "203.0.113.2/24"}, gateway={"be": "203.0.113.1"})
    return t


class GatewayWorld:
    """The booted cluster plus what the tests need: passwords, probes, playbook runs with a vars file."""

    def __init__(self, cluster, workdir):
        self.c = cluster
        self.workdir = workdir
        self.passwords = {}
        self.run_count = 0

    # -- setup -------------------------------------------------------------------------------------------
    def setup(self):
        self._wireguard()
        self._postgres()
        p = self.c["be"].popen([support_env.PYTHON, "-c", LISTENER, "203.0.113.2", "8080"])
        assert p.stdout.readline().strip() == "listening"
        return self

    def _wireguard(self):
        pub = {}
        for m in ("gw", "pa", "pb"):
            # the private key never leaves the machine: generated there, read by wg-quick's PostUp
            pub[m] = self.c[m].run(["sh", "-c", "umask 077; wg genkey > /etc/wireguard/private.key; "
                                    "wg pubkey < /etc/wireguard/private.key"]).stdout.strip()
        post_up = "PostUp = wg set %i private-key /etc/wireguard/private.key\n"
        gw_conf = "[Interface]\nAddress = %s/24\nListenPort = 51820\n%s" % (GW_VPN, post_up)
        for m, (_tenant, addr, _wan) in PEERS.items():
            gw_conf += "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n" % (pub[m], addr)
            self.c[m].write_file("/etc/wireguard/wg0.conf", "[Interface]\nAddress = %s/32\n%s\n[Peer]\nPublicKey = %s\n"
                                 "AllowedIPs = 198.51.100.0/24\nEndpoint = %s:51820\nPersistentKeepalive = 5\n" % (
                                     addr, post_up, pub["gw"], GW_WAN), mode=0o600)
        self.c["gw"].write_file("/etc/wireguard/wg0.conf", gw_conf, mode=0o600)
        for m in ("gw", "pa", "pb"):
            self.c[m].run(["systemctl", "start", "wg-quick@wg0"], timeout=60)
        for m in ("pa", "pb"):
            assert self.c[m].wait_ping(GW_VPN), "%s: no tunnel to the gateway" % m

    def _postgres(self):
        gw = self.c["gw"]
        gw.write_file("/etc/postgresql/15/main/conf.d/berqenas-test.conf", "listen_addresses = '*'\n")
        gw.run(["systemctl", "restart", "postgresql@15-main"], timeout=60)
        sql = ["CREATE DATABASE berqenas;", "CREATE ROLE berqenas_tenants NOLOGIN;"]
        for tenant in ("acme", "globex"):
            for suffix in ("_app", "_ro"):
                pw = secrets.token_urlsafe(18)
                self.passwords[tenant + suffix] = pw
                sql.append("CREATE ROLE %s%s LOGIN IN ROLE berqenas_tenants PASSWORD '%s';" % (tenant, suffix, pw))
        sql.append("REVOKE CONNECT ON DATABASE berqenas FROM PUBLIC;")
        sql.append("GRANT CONNECT ON DATABASE berqenas TO berqenas_tenants;")
        # SQL (with the passwords) goes through stdin, never argv
        gw.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
               input="\n".join(sql) + "\n", timeout=60)
        # the block postgres_tenant keeps at the top of pg_hba.conf: tenant roles rejected unless admitted above
        gw.write_file(HBA, TENANT_HBA_BLOCK + gw.read_file(HBA), mode=0o640)
        gw.run(["chown", "postgres:postgres", HBA])
        gw.run(["systemctl", "reload", "postgresql@15-main"])

    # -- playbooks ---------------------------------------------------------------------------------------
    def vars(self, exposures, **extra):
        v = {
            "berqenas_exposures": exposures,
            "gateway_vpn_peers": [
                {"name": m, "tenant": t, "addresses": [a + "/32"], "enabled": True} for m, (t, a, _w) in PEERS.items()
            ],
            "gateway_local_addresses": [GW_WAN, GW_VPN, "203.0.113.1"],
            "gateway_management_sources": ["192.0.2.254/32"],
            "gateway_vpn_subnets": ["198.51.100.0/24"],
            "gateway_egress_interface": "lan",
            # the guard has its own test (over real SSH); elsewhere it would only cost time
            "gateway_guard_enabled": False,
        }
        v.update(extra)
        return v

    def apply(self, exposures, check=False, diff=False, inventory=None, netns=None, **extra):
        self.run_count += 1
        path = os.path.join(self.workdir, "vars-%d.yml" % self.run_count)
        with open(path, "w") as f:
            yaml.safe_dump(self.vars(exposures, **extra), f)
        playbook = os.path.join(support_env.REPO, "playbooks", "gateway_apply.yml")
        env = dict(self.c.ansible_env, ANSIBLE_PIPELINING="True")
        if netns is None:
            return self.c.playbook(playbook, extravars_file=path, check=check, diff=diff, inventory=inventory,
                                   env=env)
        argv = ["ip", "netns", "exec", netns, os.path.join(support_env.VENV_BIN, "ansible-playbook"),
                "-i", inventory, "-e", "@" + path, playbook]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=support_env.REPO)
        return r

    # -- probes ------------------------------------------------------------------------------------------
    def tcp(self, node, addr, port, timeout=1.5):
        n = self.c[node]
        python = "python3" if n.is_machine else support_env.PYTHON
        return probe_result(n.run([python, "-c", PROBE, addr, str(port), str(timeout)], timeout=30).stdout)

    def sql(self, node, user, password_of=None):
        out = self.c[node].run(["python3", "-c", SQL_PROBE, GW_VPN, user, "berqenas"],
                               input=self.passwords[password_of or user], timeout=30).stdout.strip()
        return out

    def gw(self, argv):
        return self.c["gw"].run(argv).stdout

    def state(self):
        """Everything the gateway role owns on gw, to compare before/after a check-mode run."""
        gw = self.c["gw"]
        files = {p: gw.read_file(p) for p in ("/etc/ufw/before.rules", "/etc/ufw/before6.rules", "/etc/ufw/after.init",
                                              "/etc/default/ufw", HBA)}
        files["iptables"] = "\n".join(x for x in gw.run(["iptables-save"]).stdout.splitlines() if x[:1] not in "#:")
        return json.dumps(files, sort_keys=True)
