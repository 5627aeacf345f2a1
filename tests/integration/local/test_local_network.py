"""`berqenas local up` with its default network, end to end in ONE test (kept short for the CI budget; the
longer demo-style suite lives on branch wt/t3-full): a fresh home, the local VPN + gateway host in its network
namespace (bq-<hash of the home>), one tenant with one VPN peer in a client namespace of its own
(tests/support/local_clients.py) that connects through the local gateway and runs SQL on its tenant's database;
the host's firewall, routes and /etc are the same before, during and after; `local down --purge` leaves no
namespace, interface, process or file of that home."""

import hashlib
import json
import os
import subprocess

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import localnet

from tests.integration.gateway.conftest import host_firewall_state
from tests.support.cli import Cli
from tests.support.env import PYTHON
from tests.support.local_clients import Client, sql

pytestmark = pytest.mark.local


def _out(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def host_state():
    """The host's firewall (as the gateway tests record it), routes and the /etc directories the roles write."""
    state = host_firewall_state()
    state["ip route"] = _out(["ip", "route", "show", "table", "all"])
    state["ip -6 route"] = _out(["ip", "-6", "route", "show", "table", "all"])
    for top in ("/etc/wireguard", "/etc/berqenas", "/etc/netns"):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    state[path] = hashlib.sha256(f.read()).hexdigest()
    return state


def _changed(before, now):
    return sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))


def _cmdlines():
    """{pid: argv joined by spaces} of every process on the host (read from /proc, no `ps`)."""
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    procs[int(pid)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                pass  # gone meanwhile
    return procs


def test_local_up_default_network_peer_runs_sql_through_gateway_and_down_purge_leaves_nothing(test_home, ansible_env):
    home = os.path.join(test_home, "local-net")
    lay = localnet.layout(home)
    cli = Cli(ansible_env, home)
    before = host_state()
    assert lay["netns"] not in _out(["ip", "netns", "list"])
    client, purged = None, False
    try:
        status = cli("local", "up", "--json").json  # the default: --network
        assert status["netns"] == lay["netns"] and status["endpoint"] == "203.0.113.1", status
        addrs = _out(["ip", "-n", lay["netns"], "-br", "addr"])
        assert "198.51.100.1/24" in addrs and "203.0.113.1/24" in addrs, addrs
        # what runs for this instance: the processes inside its namespace and its PostgreSQL
        instance_pids = {int(p) for p in _out(["ip", "netns", "pids", lay["netns"]]).split()}
        data_dir = status.get("data_dir") or os.path.join(os.path.dirname(status["socket_dir"]), "data")
        with open(os.path.join(data_dir, "postmaster.pid")) as f:  # the cluster may live outside the home
            instance_pids.add(int(f.readline()))
        procs = _cmdlines()
        assert any("wireguard-go" in procs.get(p, "") for p in instance_pids), {p: procs.get(p) for p in instance_pids}
        instance_procs = {p: procs[p] for p in instance_pids if p in procs}

        created = cli("tenant", "create", "acme", "--json").json
        # the local host is this machine: its credentials file (0600, under the home) is what `tenant show
        # --credentials` fetches, read directly to save that playbook's run
        with open(created["credentials_file"]) as f:
            creds = json.load(f)["app"]
        added = cli("vpn", "peer", "add", "alice", "--tenant", "acme", "--json").json
        cli("gateway", "expose", "acme", "--json")
        client = Client(home, 1, added["config_file"])
        assert client.wait_handshake(timeout=90), "no WireGuard handshake with the local host within 90 s"
        res = sql(client, PYTHON, status["port"], creds, status["database"],
                  "SELECT session_user, current_database(), host(inet_client_addr())", timeout=10)
        # acme's own role on the instance's database, and pg sees the peer's own VPN address (through the gateway)
        assert res == {"ok": True, "rows": [[creds["user"], status["database"], "198.51.100.2"]]}, res
        assert _changed(before, host_state()) == []  # while up, too

        client.close()
        client = None
        cli("local", "down", "--purge", "--json")
        purged = True
        assert lay["netns"] not in _out(["ip", "netns", "list"])
        assert lay["id"][:6] not in _out(["ip", "-br", "link"])  # no client veth end left on the host
        assert not os.path.exists(home)
        assert not os.path.exists(os.path.dirname(status["socket_dir"])) and not os.path.exists(data_dir)
        now = _cmdlines()
        left = {p: c for p, c in instance_procs.items() if now.get(p) == c}
        assert left == {}, left  # wireguard-go, the anchor, the forwarder and postgres are gone
        assert [c for c in now.values() if home in c or lay["netns"] in c] == []
        assert _changed(before, host_state()) == []
    finally:
        if client is not None:
            client.close()
        if not purged:
            cli("local", "down", "--purge", "--json", check=False, timeout=300)
