"""WireGuard role on real machines: tunnels, hitless peer changes, removal/disable/expiry, idempotence, bad input,
secrets. The tests of this module share one hub + two clients and run in order (each builds on the previous)."""

import datetime
import hashlib
import json
import os
import re
import select
import signal
import time

import pytest
import yaml

from tests.integration.vpn.conftest import STATE, ok
from tests.support import env as support_env

pytestmark = pytest.mark.vpn

C1 = {"name": "c1", "tenant": "acme"}
C3 = {"name": "c3", "tenant": "acme"}


def c2(vpn, **kw):
    return dict({"name": "c2", "tenant": "globex", "public_key": vpn.c2_public}, **kw)


def can_ping(machine, addr="198.51.100.1", count=2):
    argv = ["ping", "-c", str(count), "-W", "1", "-i", "0.2", addr]
    return machine.run(argv, check=False, timeout=30).returncode == 0


def wait_ping(machine, addr="198.51.100.1", timeout=20):
    """A peer that was off re-handshakes within REKEY_TIMEOUT (5 s) + jitter: retry for a while."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if machine.run(["ping", "-c", "1", "-W", "1", addr], check=False, timeout=10).returncode == 0:
            return True
    return False


def fingerprint(hub):
    """Checksums of everything the module persists, and the live peer set."""
    out = hub.run(["sh", "-c", "cd /etc/berqenas/wireguard/wg0 && find . /etc/wireguard -type f | sort | "
                   "xargs sha256sum"]).stdout  # fmt: skip
    live = hub.run(["wg", "show", "wg0", "dump"]).stdout.splitlines()
    stable = sorted("\t".join(ln.split("\t")[i] for i in (0, 1, 3)) for ln in live[1:])  # key, psk, allowed-ips
    return out + live[0] + hashlib.sha256("\n".join(stable).encode()).hexdigest()


def test_tunnels_carry_traffic(vpn):
    c1m, c2m, hub = vpn.cluster["c1"], vpn.cluster["c2"], vpn.hub
    # c2 brings its own key: the platform never sees its private key
    priv = c2m.run(["wg", "genkey"]).stdout.strip()
    c2m.write_file("/root/c2.key", priv + "\n", mode=0o600)
    vpn.c2_public = c2m.run(["wg", "pubkey"], input=priv + "\n").stdout.strip()

    rc = ok(vpn.apply([C1, c2(vpn)], wireguard_manage_packages=True))
    assert rc["failed"] == 0 and rc["changed"] >= 1

    st = vpn.state()
    assert st["peers"]["c1"]["addresses"] == ["198.51.100.2", "fd00:b::2"]
    assert st["peers"]["c2"]["addresses"] == ["198.51.100.3", "fd00:b::3"]
    assert "private_key" not in st["peers"]["c2"] and st["peers"]["c2"]["public_key"] == vpn.c2_public
    # files: private, in a private directory
    for path in ("/etc/wireguard/wg0.conf", f"{STATE}/state.json", f"{STATE}/server.key",
                 f"{STATE}/clients/c1.conf", f"{STATE}/clients/c2.conf", f"{STATE}/clients/c1.png",
                 f"{STATE}/clients/c1.qr.txt"):  # fmt: skip
        assert hub.file_mode(path) == (0o600, "root"), path
    assert hub.file_mode(STATE) == (0o700, "root")
    png_magic = hub.run(["od", "-An", "-c", "-N", "4", f"{STATE}/clients/c1.png"]).stdout.split()
    assert png_magic[1:4] == ["P", "N", "G"]
    # the client-supplied peer's config has everything but the private key
    c2conf = hub.read_file(f"{STATE}/clients/c2.conf")
    assert "\nPrivateKey" not in c2conf and "PresharedKey = " in c2conf and "Endpoint = 192.0.2.1:51820" in c2conf
    # wireguard-go runs (no kernel module here) under wg-quick@wg0
    assert " tun " in hub.run(["ip", "-d", "link", "show", "wg0"]).stdout
    assert hub.run(["systemctl", "is-active", "wg-quick@wg0"]).stdout.strip() == "active"

    vpn.client_up(c1m, "c1")
    conf = c2conf.replace(f"# PrivateKey = <the private key that belongs to {vpn.c2_public}>", "PrivateKey = " + priv)
    c2m.write_file("/etc/wireguard/wg0.conf", conf, mode=0o600)
    c2m.run(["systemctl", "restart", "wg-quick@wg0.service"])

    for m in (c1m, c2m):
        assert can_ping(m), m.name
        assert can_ping(m, "fd00:b::1"), m.name
    # a TCP exchange through the tunnel, both ways
    srv = hub.popen(["nc", "-l", "-N", "198.51.100.1", "7000"])
    wait_listening(hub, "198.51.100.1", 7000)
    out = c1m.run(["sh", "-c", "echo hello-from-c1 | nc -N -w 3 198.51.100.1 7000"], check=False)
    srv_out, _ = srv.communicate(timeout=10)
    assert out.returncode == 0 and srv_out.strip() == "hello-from-c1"
    # and the underlay port is the only way in: the server published both peers
    dump = vpn.dump()
    assert set(dump) == {st["peers"]["c1"]["public_key"], vpn.c2_public}
    assert all(int(v[4]) > 0 for v in dump.values())  # both handshaked


def test_rerun_is_unchanged_and_check_mode_changes_nothing(vpn):
    rc = ok(vpn.apply([C1, c2(vpn)]))
    assert rc["changed"] == 0
    before = fingerprint(vpn.hub)
    res = vpn.apply([C1, c2(vpn), C3], check=True, diff=True)
    rc = ok(res)
    assert rc["changed"] >= 1  # check mode predicts the change...
    assert fingerprint(vpn.hub) == before  # ...and makes none
    assert "+# c3 (tenant acme)" in res.stdout and "PresharedKey = <redacted>" in res.stdout
    # an unrelated --limit run (a client machine only) touches nothing on the hub
    res = vpn.apply([C1, c2(vpn)], limit="c1")
    assert res.returncode == 0, res.stdout[-3000:]
    assert fingerprint(vpn.hub) == before


def wait_listening(node, addr, port, timeout=30):
    """Wait until a TCP listener is bound to addr:port in node (instead of sleeping and hoping)."""
    deadline = time.monotonic() + timeout
    while not node.run(["ss", "-Hltn", "src", "%s:%d" % (addr, port)], check=False).stdout.strip():
        assert time.monotonic() < deadline, "nothing listens on %s:%d in %s" % (addr, port, node.name)
        time.sleep(0.05)


def _first_reply(proc, timeout=30):
    """Read a running ping's output up to its first echo reply; returns what it read (part of its output)."""
    head, deadline = b"", time.monotonic() + timeout
    fd = proc.stdout.fileno()  # raw reads: nothing is left in the text wrapper's buffer for communicate()
    while not re.search(rb"icmp_seq=\d+ ttl=", head):
        left = deadline - time.monotonic()
        assert left > 0, "no echo reply within %ds: %r" % (timeout, head)
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, "ping ended before any reply: %r" % head
            head += chunk
    return head.decode()


def _stop_and_check_pings(proc, head=""):
    """SIGINT a running `ping -i 0.05`; returns (sent, seqs missing among those sent before its last 0.5 s)."""
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    out = head + out
    seqs = sorted(int(x) for x in re.findall(r"icmp_seq=(\d+) ttl=", out))
    sent = int(re.search(r"(\d+) packets transmitted", out).group(1))
    missing = sorted(set(range(1, sent - 10)) - set(seqs))  # the last 10 (0.5 s) may still be in flight
    return sent, missing


def test_adding_a_peer_drops_nothing(vpn):
    c1m, c2m = vpn.cluster["c1"], vpn.cluster["c2"]
    pid, ifindex = vpn.wg_pid(), vpn.ifindex()
    hs_before = {k: v[4] for k, v in vpn.dump().items()}
    pings = [m.popen(["ping", "-n", "-i", "0.05", "-W", "1", "198.51.100.1"]) for m in (c1m, c2m)]
    heads = [_first_reply(p) for p in pings]  # both are answered before the change starts
    rc = ok(vpn.apply([C1, c2(vpn), C3]))
    time.sleep(1.5)
    results = [_stop_and_check_pings(p, head) for p, head in zip(pings, heads, strict=True)]
    assert rc["changed"] >= 1
    for sent, missing in results:
        # A reload that broke the session loses every echo until a new handshake (>= 5 s: 100 in a row; a restart
        # ~15 s). On a loaded 2-core CI box the kernel can still drop a single echo anywhere in the run (CI once
        # lost seq 27 of 119, during ansible's start-up, long before syncconf), so: no two in a row, at most 2 in all.
        assert sent > 40 and len(missing) <= 2, results
        assert not any(b - a == 1 for a, b in zip(missing, missing[1:], strict=False)), results
    # no interface restart, no handshake reset, the third peer is live
    assert vpn.wg_pid() == pid and vpn.ifindex() == ifindex
    dump = vpn.dump()
    for k, hs in hs_before.items():
        assert dump[k][4] == hs
    assert vpn.state()["peers"]["c3"]["public_key"] in dump
    assert vpn.state()["peers"]["c3"]["addresses"] == ["198.51.100.4", "fd00:b::4"]


def test_disabled_expired_removed_peers_pass_no_traffic(vpn):
    c1m, c2m = vpn.cluster["c1"], vpn.cluster["c2"]
    pid = vpn.wg_pid()
    ok(vpn.apply([C1, c2(vpn, enabled=False), C3]))
    assert not can_ping(c2m) and can_ping(c1m)
    assert vpn.c2_public not in vpn.dump()
    assert vpn.state()["peers"]["c2"]["addresses"] == ["198.51.100.3", "fd00:b::3"]  # kept while disabled

    # re-enabled c2 passes again; c1, expired, does not
    past = "2020-01-01T00:00:00Z"
    t0 = time.monotonic()
    ok(vpn.apply([dict(C1, expires=past), c2(vpn), C3]))
    took = time.monotonic() - t0
    assert wait_ping(c2m) and not can_ping(c1m)

    # expiry between applies: the host's timer (every 2 s here) removes the peer once its time has come
    delay = int(took * 1.5) + 6
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
    ok(vpn.apply([C1, c2(vpn, expires=soon.strftime("%Y-%m-%dT%H:%M:%SZ")), C3]))
    if datetime.datetime.now(datetime.UTC) < soon - datetime.timedelta(seconds=2):
        assert can_ping(c2m)
    assert wait_ping(c1m)
    deadline = time.monotonic() + delay + 20
    while vpn.c2_public in vpn.dump() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vpn.c2_public not in vpn.dump(), "the expiry timer did not remove c2"
    assert not can_ping(c2m) and can_ping(c1m)
    assert vpn.c2_public not in vpn.hub.read_file("/etc/wireguard/wg0.conf")

    # removal: files go, the allocation is released, nobody else is renumbered
    ok(vpn.apply([C1, c2(vpn)]))
    st = vpn.state()
    assert "c3" not in st["peers"]
    assert vpn.hub.run(["test", "-e", f"{STATE}/clients/c3.conf"], check=False).returncode == 1
    assert st["peers"]["c1"]["addresses"] == ["198.51.100.2", "fd00:b::2"]
    assert vpn.wg_pid() == pid  # none of this restarted the interface
    assert can_ping(c1m) and wait_ping(c2m)  # c2 is back without an expiry


def test_no_renumbering_on_reorder_and_insert(vpn):
    c0 = {"name": "c0", "tenant": "acme", "allowed_ips": ["203.0.113.0/24"]}  # a site behind c0
    pid = vpn.wg_pid()
    ok(vpn.apply([c0, c2(vpn), C1]))  # new peer first, others reordered
    st = vpn.state()["peers"]
    assert st["c1"]["addresses"] == ["198.51.100.2", "fd00:b::2"]
    assert st["c2"]["addresses"] == ["198.51.100.3", "fd00:b::3"]
    assert st["c0"]["addresses"] == ["198.51.100.4", "fd00:b::4"]  # the released address, lowest free
    # the site's route is on the running interface (wg syncconf does not route; the module does), no restart
    assert "203.0.113.0/24 proto static" in vpn.hub.run(["ip", "route", "show", "dev", "wg0"]).stdout
    assert vpn.wg_pid() == pid
    assert wait_ping(vpn.cluster["c1"])


def test_interface_change_restarts(vpn):
    pid = vpn.wg_pid()
    ok(vpn.apply([C1, c2(vpn)], wireguard_mtu=1380))  # c0 and its site go too
    assert vpn.wg_pid() != pid
    assert "203.0.113.0/24" not in vpn.hub.run(["ip", "route", "show", "dev", "wg0"]).stdout
    assert "mtu 1380" in vpn.hub.run(["ip", "link", "show", "wg0"]).stdout
    assert "MTU = 1380" in vpn.hub.read_file("/etc/wireguard/wg0.conf")
    rc = ok(vpn.apply([C1, c2(vpn)], wireguard_mtu=1380))
    assert rc["changed"] == 0


BAD_CASES = [
    ({"peers": [{"name": "x1", "tenant": "acme", "public_key": "not-a-key"}]}, "not base64"),
    ({"peers": [{"name": "x1", "tenant": "acme", "public_key": "A" * 43 + "="}]}, "all-zero key"),
    ({"peers": [{"name": "x1", "tenant": "acme"}, {"name": "x1", "tenant": "globex"}]}, "duplicate peer name"),
    ({"peers": [{"name": "Bad Name", "tenant": "acme"}]}, "invalid peer name"),
    ({"peers": [{"name": "x" * 33, "tenant": "acme"}]}, "invalid peer name"),
    ({"peers": [{"name": "{{ 6*7 }}", "tenant": "acme"}]}, "template syntax"),
    ({"peers": [{"name": "x1", "tenant": "{{ lookup('pipe', 'id') }}"}]}, "template syntax"),
    (
        {
            "addresses": ["198.51.100.1/30"],
            "peers": [{"name": "x1", "tenant": "acme"}, {"name": "x2", "tenant": "acme"}],
        },
        "is full",
    ),
    ({"listen_port": 70000, "peers": []}, "listen_port"),
    ({"peers": [{"name": "x1", "tenant": "acme", "addresses": ["203.0.113.5"]}]}, "outside the VPN networks"),
    ({"peers": [{"name": "x1", "tenant": "acme", "expires": "tomorrow"}]}, "expires"),
    ({"peers": [{"name": "x1", "tenant": "acme", "expires": "2026-13-01T00:00:00Z"}]}, "expires"),
    ({"peers": [{"name": "x1", "tenant": "acme", "expires": "2026-12-01T00:00:00"}]}, "timezone"),
    ({"peers": [{"name": "x1", "tenant": "Acme"}]}, "tenant name"),
    ({"interface": "wg-much-too-long0", "peers": []}, "interface name"),
]


def test_bad_input_rejected_before_anything_changes(vpn, tmp_path):
    before = fingerprint(vpn.hub)
    # the payloads arrive as the orchestrator writes them: !unsafe data, never templates
    cases = [dict({"addresses": ["198.51.100.1/24", "fd00:b::1/64"], "listen_port": 51820, "interface": "wg0"}, **c)
             for c, _ in BAD_CASES]  # fmt: skip
    text = yaml.safe_dump({"bad_cases": cases}).replace("'{{", "!unsafe '{{")
    (tmp_path / "bad.yml").write_text(text)
    play = tmp_path / "bad_play.yml"
    play.write_text(
        "- hosts: wireguard\n  gather_facts: false\n  tasks:\n"
        "    - berqenas.platform.wireguard_server:\n"
        "        interface: '{{ item.interface }}'\n        addresses: '{{ item.addresses }}'\n"
        "        listen_port: '{{ item.listen_port }}'\n        peers: '{{ item.peers }}'\n"
        "        endpoint: 192.0.2.1\n"
        "      loop: '{{ bad_cases }}'\n      register: bad\n      ignore_errors: true\n"
        "    - ansible.builtin.copy:\n        dest: /root/bad.json\n        mode: '0600'\n"
        "        content: \"{{ bad.results | map(attribute='msg') | list | to_json }}\"\n"
    )
    res = vpn.playbook(str(play), extravars_file=str(tmp_path / "bad.yml"))
    assert res.returncode == 0, res.stdout[-4000:]
    msgs = json.loads(vpn.hub.read_file("/root/bad.json"))
    assert len(msgs) == len(BAD_CASES)
    for (case, expected), msg in zip(BAD_CASES, msgs, strict=True):
        assert expected in msg, (case, msg)
    assert "uid=" not in res.stdout  # the lookup never ran
    # and through the role: a duplicate name fails the play before anything changes
    res = vpn.apply([C1, c2(vpn), dict(C1, tenant="globex")])
    assert res.returncode != 0 and "duplicate peer name 'c1'" in res.stdout
    assert fingerprint(vpn.hub) == before
    assert wait_ping(vpn.cluster["c1"], timeout=30)  # back after the MTU restart (WireGuard re-handshakes within ~15 s)


def test_peer_config_fetch(vpn, tmp_path):
    ok(vpn.apply([C1, c2(vpn)]))
    dest = tmp_path / "out"
    play = os.path.join(support_env.REPO, "playbooks", "vpn_peer_config.yml")
    extra = tmp_path / "x.yml"
    extra.write_text(yaml.safe_dump({"berqenas_vpn_peer": "c1", "berqenas_vpn_dest": str(dest)}))
    res = vpn.playbook(play, extravars_file=str(extra))
    assert res.returncode == 0, res.stdout[-3000:]
    assert sorted(os.listdir(dest)) == ["c1.conf", "c1.png", "c1.qr.txt"]
    for f in dest.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600
    assert (dest / "c1.conf").read_text() == vpn.hub.read_file(f"{STATE}/clients/c1.conf")
    extra.write_text(yaml.safe_dump({"berqenas_vpn_peer": "nobody", "berqenas_vpn_dest": str(dest)}))
    res = vpn.playbook(play, extravars_file=str(extra))
    assert res.returncode != 0 and "no client config for peer nobody" in res.stdout


def test_no_secret_in_outputs_logs_or_loose_files(vpn, tmp_path):
    import ansible_runner

    hub = vpn.hub
    # one more apply through ansible-runner at -vvv, artifacts kept for inspection
    pdir = tmp_path / "runner"
    (pdir / "inventory").mkdir(parents=True)
    inv = yaml.safe_load(open(vpn.cluster.inventory_path))
    (pdir / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inv))
    (pdir / "inventory" / "group_vars").mkdir()
    (pdir / "inventory" / "group_vars" / "wireguard.yml").write_text(open(vpn.vars_path).read())
    env = {k: v for k, v in vpn.cluster.ansible_env.items() if k.startswith("ANSIBLE_") or k in ("HOME", "PATH")}
    r = ansible_runner.run(private_data_dir=str(pdir), playbook=os.path.join(support_env.REPO, "playbooks",
                           "vpn_apply.yml"), verbosity=3, quiet=True, envvars=env)  # fmt: skip
    assert r.rc == 0, r.stdout.read()[-3000:]

    st = vpn.state()
    secrets = {hub.read_file(f"{STATE}/server.key").strip()}
    for e in st["peers"].values():
        secrets.add(e["preshared_key"])
        if e.get("private_key"):
            secrets.add(e["private_key"])
    assert len(secrets) >= 4
    blobs = list(vpn.outputs)
    for root, _, files in os.walk(pdir):
        for f in files:
            with open(os.path.join(root, f), errors="replace") as fh:
                blobs.append(fh.read())
    blobs.append(hub.run(["journalctl", "--no-pager", "-o", "cat"]).stdout)
    for s in secrets:
        assert not any(s in b for b in blobs), "a secret leaked into output, artifacts or the journal"
    # on the hub, only 0600 files hold a secret
    pattern = "\n".join(sorted(secrets))
    hub.write_file("/run/bq-secrets", pattern + "\n", mode=0o600)
    found = hub.run(["grep", "-rlF", "-f", "/run/bq-secrets", "/etc", "/var", "/root", "/tmp", "/run"],
                    check=False).stdout.split()  # fmt: skip
    hub.run(["rm", "-f", "/run/bq-secrets"])
    found = [f for f in found if f != "/run/bq-secrets"]
    assert found, "the secrets must be somewhere"
    for f in found:
        mode, owner = hub.file_mode(f)
        assert mode & 0o077 == 0 and owner == "root", (f, oct(mode))
