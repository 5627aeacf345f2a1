"""Two local instances in different homes, up at the same time, do not collide; one's `down --purge` removes only
its own things. ONE test (two `local up` with the network cost most of it, so they run at once and the first of
them is also the SIGTERM-cancel proof):

- instance A's `local up` is cut off by SIGTERM as soon as its namespace exists (exit code 130), then A's and B's
  `local up` run at the same time and both complete (A's finishes what the cut-off one began);
- what is global on the host differs: namespace names, the host's PostgreSQL port (127.0.0.1, forwarded into each
  namespace), the clusters' directories, the IPv6 VPN prefix; what has the same name (wg0, bqlan0, WireGuard's
  port 51820, 203.0.113.1) lives in each instance's own namespace, with its own wireguard-go, key and marker;
- B's home holds stale pid files (the anchor's and the forwarder's, as a reboot leaves them) naming a process on
  the host: B's `local up` neither takes it for its anchor (the playbooks would then run in the host's own network
  and /etc) nor signals it;
- A's `down --purge` leaves B as it was: its namespace, links, processes, WireGuard key and PostgreSQL answer."""

import json
import os
import signal
import subprocess

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import localnet

from tests.support import local_instances as li
from tests.support.cli import Cli

pytestmark = pytest.mark.local


def _pid(path):
    with open(path) as f:
        return int(f.read().split()[0])


def _instance(status, lay):
    """What the instance runs and names, read from the kernel: its links (with their aliases), its long-lived
    processes with their command lines (the anchor, the forwarder, wireguard-go, the postmaster; PostgreSQL's
    backends and workers come and go), its WireGuard key and port, its addresses."""
    links = li.netns_links(lay["netns"])
    pids = li.netns_pids(lay["netns"])
    procs = li.cmdlines()
    postmaster = _pid(os.path.join(os.path.dirname(status["socket_dir"]), "data", "postmaster.pid"))
    wg_go = {p for p in pids if "wireguard-go" in (procs.get(p) or "")}
    core = {_pid(lay["anchor_pidfile"]), _pid(lay["forward_pidfile"]), postmaster, *wg_go}
    assert core <= pids, (core, pids)  # all of them inside the instance's namespace
    return {
        "links": {n: links[n].get("ifalias") for n in links},
        "processes": {p: procs.get(p) for p in core},
        "wireguard-go": wg_go,
        "wg": [li.in_anchor(lay, ["wg", "show", "wg0", what]).strip() for what in ("public-key", "listen-port")],
        "addrs": li.out(["ip", "-n", lay["netns"], "-br", "addr"]),
        "port": status["port"],
        "socket_dir": status["socket_dir"],
    }


def test_two_instances_side_by_side_after_a_sigterm_cut_off_and_one_purge_leaves_the_other(test_home, ansible_env):
    homes = [os.path.join(test_home, "side-a"), os.path.join(test_home, "side-b")]
    lays = [localnet.layout(h) for h in homes]
    clis = [Cli(ansible_env, h) for h in homes]
    host_links = li.host_links()
    up = [True, False]  # whatever A's cut-off start leaves, the finally purges
    bystander = subprocess.Popen(["sleep", "900"])  # a process on the host, in the host's namespaces
    try:
        os.makedirs(lays[1]["dir"], mode=0o700)
        for pidfile, text in ((lays[1]["anchor_pidfile"], "%d" % bystander.pid),
                              (lays[1]["forward_pidfile"], "%d 1" % bystander.pid)):
            with open(pidfile, "w") as f:
                f.write(text)
        rc, answer, stderr = li.cancel_during_namespace_setup(clis[0].env, lays[0], signal.SIGTERM)
        assert rc == 130 and answer["status"] == "canceled", (rc, answer, stderr)

        procs = [li.start_up(cli.env) for cli in clis]  # both at once
        up[1] = True
        results = [li.finish(p) for p in procs]
        assert [r[0] for r in results] == [0, 0], results
        status = [json.loads(r[1]) for r in results]
        a, b = (_instance(s, lay) for s, lay in zip(status, lays, strict=True))

        # names and ports global on the host: distinct
        assert [s["netns"] for s in status] == [lay["netns"] for lay in lays] and lays[0]["netns"] != lays[1]["netns"]
        assert a["port"] != b["port"] and all(li.postgres_answers(s["port"]) for s in status), status
        assert a["socket_dir"] != b["socket_dir"]
        assert [n for n in li.host_links() - host_links if lays[0]["id"][:6] in n or lays[1]["id"][:6] in n] == []
        # the same names inside: each instance's own, in its own namespace
        for inst, lay in ((a, lays[0]), (b, lays[1])):
            assert set(inst["links"]) == {"lo", "bqlan0", "wg0"}, inst["links"]
            assert inst["links"]["lo"] == lay["marker"]
            assert "203.0.113.1/24" in inst["addrs"] and lay["vpn_addresses"][1] in inst["addrs"], inst["addrs"]
            assert inst["wg"][1] == "51820" and len(inst["wireguard-go"]) == 1, inst
        assert lays[0]["vpn_addresses"][1] != lays[1]["vpn_addresses"][1]
        assert a["wg"][0] != b["wg"][0]  # two WireGuard hosts, two keys
        assert set(a["processes"]).isdisjoint(b["processes"])
        assert bystander.pid not in b["processes"] and bystander.poll() is None  # not taken, not signalled
        assert "wg0" not in li.host_links() - host_links

        clis[0]("local", "down", "--purge", "--json")
        up[0] = False
        assert lays[0]["netns"] not in li.namespaces() and not os.path.exists(homes[0])
        assert li.cluster_dirs(homes[0]) == [] and not li.postgres_answers(a["port"], timeout=5)
        assert [c for c in li.cmdlines().values() if homes[0] in c or lays[0]["netns"] in c] == []
        # B as it was: the same links (marker too), processes (same pids, same command lines), key, PostgreSQL
        assert _instance(status[1], lays[1]) == b
        assert li.postgres_answers(b["port"]) and os.path.isfile(os.path.join(homes[1], "local.json"))
        assert li.cluster_dirs(homes[1]) != []

        clis[1]("local", "down", "--purge", "--json")
        up[1] = False
        assert lays[1]["netns"] not in li.namespaces() and not os.path.exists(homes[1])
    finally:
        bystander.kill()
        bystander.wait(timeout=60)
        for cli, is_up in zip(clis, up, strict=True):
            if is_up:
                cli("local", "down", "--purge", "--json", check=False, timeout=300)
