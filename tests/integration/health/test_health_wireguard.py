"""A stale handshake made for real: a WireGuard hub and one peer (wireguard-go) in two network namespaces this test
creates, a handshake over the tunnel, then the peer's tunnel killed (-9). `berqenas health` reports the peer stale
with exit code 1 and `berqenas status` shows it stale; before the kill both say active/healthy.

Each namespace has a holder process in a private mount namespace with a tmpfs /run (the UAPI sockets in
/run/wireguard stay per namespace, nothing is written to the host's /run); every command runs there through
nsenter. Addresses: 192.0.2.0/24 underlay, 198.51.100.0/24 tunnel."""

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.support.cli import Cli, local_inventory
from tests.support.env import VENV_BIN

pytestmark = [pytest.mark.health, pytest.mark.vpn]

STALE_AFTER = 3


class Node:
    def __init__(self, ns):
        self.ns = ns
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0700 /run/wireguard && echo ready && exec sleep 3600"],
            stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "ready"
        self.wg = None

    def argv(self, *argv):
        return ["nsenter", "-t", str(self.holder.pid), "-n", "-m", *argv]

    def run(self, *argv, **kw):
        return subprocess.run(self.argv(*argv), check=True, capture_output=True, text=True, **kw)

    def start_wireguard(self, conf_text, address):
        conf = "/run/wireguard/wg0.setconf"
        self.run("sh", "-c", "umask 077 && cat > %s" % conf, input=conf_text)
        self.wg = subprocess.Popen(self.argv("wireguard-go", "wg0"), env=dict(os.environ, WG_PROCESS_FOREGROUND="1"),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while self.run("sh", "-c", "test -e /sys/class/net/wg0 && echo up || true").stdout.strip() != "up":
            assert time.monotonic() < deadline and self.wg.poll() is None, "wireguard-go did not start"
            time.sleep(0.05)
        self.run("wg", "setconf", "wg0", conf)
        self.run("ip", "address", "add", address, "dev", "wg0")
        self.run("ip", "link", "set", "wg0", "up")

    def close(self):
        for p in (self.wg, self.holder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if self.holder.stdout:
            self.holder.stdout.close()
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


@pytest.fixture()
def tunnel(tmp_path):
    from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wg

    tag = uuid.uuid4().hex[:6]
    hub, peer = Node("bq-hh-%s" % tag), Node("bq-hp-%s" % tag)
    try:
        hub.run("ip", "link", "set", "lo", "up")
        peer.run("ip", "link", "set", "lo", "up")
        hub.run("ip", "link", "add", "bqh0", "type", "veth", "peer", "name", "bqp0")
        hub.run("ip", "link", "set", "bqp0", "netns", str(peer.holder.pid))  # its netns file is not in this mount ns
        hub.run("ip", "address", "add", "192.0.2.1/24", "dev", "bqh0")
        hub.run("ip", "link", "set", "bqh0", "up")
        peer.run("ip", "address", "add", "192.0.2.2/24", "dev", "bqp0")
        peer.run("ip", "link", "set", "bqp0", "up")
        hub_priv, hub_pub = wg.generate_keypair()
        peer_priv, peer_pub = wg.generate_keypair()
        hub.start_wireguard("[Interface]\nPrivateKey = %s\nListenPort = 51820\n\n[Peer]\nPublicKey = %s\n"
                            "AllowedIPs = 198.51.100.2/32\n" % (hub_priv, peer_pub), "198.51.100.1/24")
        peer.start_wireguard("[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = 192.0.2.1:51820\n"
                             "AllowedIPs = 198.51.100.1/32\nPersistentKeepalive = 1\n" % (peer_priv, hub_pub),
                             "198.51.100.2/24")
        # the hub's allocations where the wireguard role keeps them, and the desired state that names the peer
        state_dir = tmp_path / "wireguard"
        (state_dir / "wg0").mkdir(parents=True)
        (state_dir / "wg0" / "state.json").write_text(json.dumps({"peers": {"alice": {
            "tenant": "acme", "addresses": ["198.51.100.2/32"], "public_key": peer_pub, "enabled": True}}}))
        inv = tmp_path / "inventory"
        local_inventory(inv, ("wireguard",), {
            "wireguard_state_dir": str(state_dir), "berqenas_health_stale_after": 3600,
            "berqenas_health_state_dir": str(tmp_path / "health")})
        (inv / "group_vars" / "all" / "tenants.yml").write_text(json.dumps({"berqenas_tenants": [{"name": "acme"}]}))
        (inv / "group_vars" / "all" / "vpn.yml").write_text(json.dumps({"berqenas_vpn_peers": [
            {"name": "alice", "tenant": "acme"}]}))
        yield hub, peer, inv, peer_pub
    finally:
        peer.close()
        hub.close()


def _handshake_age(hub, pub):
    out = hub.run("wg", "show", "wg0", "latest-handshakes").stdout
    for line in out.splitlines():
        key, ts = line.split("\t")
        if key == pub and int(ts):
            return time.time() - int(ts)
    return None


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_killed_tunnel_makes_the_peer_stale(tunnel, ansible_env, tmp_path):
    hub, peer, inv, pub = tunnel
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(ansible_env, str(home))

    def run(*args):
        return subprocess.run(hub.argv(os.path.join(VENV_BIN, "berqenas"), "-i", str(inv), *args), env=cli.env,
                              capture_output=True, text=True, timeout=300, cwd="/")

    peer.run("ping", "-c", "1", "-W", "5", "198.51.100.1")  # through the tunnel: the first handshake
    _wait(lambda: _handshake_age(hub, pub) is not None, 30, "no handshake")

    r = run("status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["read_from"]["wireguard"] == "local"
    (alice,) = data["peers"]
    assert alice["state"] == "active" and alice["addresses"] == ["198.51.100.2/32"] and alice["rx_bytes"] > 0
    assert data["tenants"][0]["peers_active"] == 1

    peer.wg.kill()  # the peer's tunnel dies: no more handshakes or keepalives
    # from now on a handshake older than STALE_AFTER is stale (before, 3600 s: however slow the box, the peer was
    # active above; a handshake is only renewed every 2 minutes, so a short threshold could not tell)
    platform = inv / "group_vars" / "all" / "platform.yml"
    platform.write_text(platform.read_text().replace('"berqenas_health_stale_after": 3600',
                                                     '"berqenas_health_stale_after": %d' % STALE_AFTER))
    assert ('"berqenas_health_stale_after": %d' % STALE_AFTER) in platform.read_text()
    peer.wg.wait(10)
    _wait(lambda: (_handshake_age(hub, pub) or 0) > STALE_AFTER + 1, 60, "handshake never aged")

    r = run("health", "--json", "--only", "wireguard")
    assert r.returncode == 1, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    stale = checks["wg0/peer/alice"]
    assert not stale["healthy"] and stale["status"] == "stale" and stale["since"], stale
    assert checks["wg0"]["healthy"] and checks["wg0"]["metrics"]["listen_port"] == 51820

    data = json.loads(run("status", "--json").stdout)
    assert data["peers"][0]["state"] == "stale" and not data["healthy"]
    assert [c["name"] for c in data["health"] if not c["healthy"]] == ["wg0/peer/alice"]
