"""Benchmark of `berqenas status` for 100 tenants and 1,000 VPN peers, beside the playbook path, in one run.

The platform is real and local: a throwaway PostgreSQL cluster (tests/support/pg.py) holding the tenants' schemas
and `berqenas.sync_state` rows, and a WireGuard interface wg0 (wireguard-go, in a network namespace this bench
creates, with a private mount namespace and a tmpfs /run) carrying the 1,000 peers, whose allocations
are in the state directory `wireguard.interface_status` reads. The inventory says both hosts are local.

  status     `berqenas status --json` (the console script, as a user runs it: desired state files, one wg dump,
             one catalog connection, in-process)
  baseline   the same figures through the playbook path (what status does for remote hosts, and what a
             dashboard built on the existing commands would run): `berqenas health --json --only wireguard
             --only sync`, one health_check.yml run through ansible-runner

Printed: the median (and min/max) wall seconds of each over --runs runs, and the ratio baseline / status.
Target: status under 2 s.

Run (root): .venv/bin/python bench/bench_status.py [--tenants 100] [--peers 1000] [--runs 5] [--json]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import env as support_env  # noqa: E402

support_env.setup_import_path()

from tests.support import pg as support_pg  # noqa: E402
from tests.support.cli import local_inventory, session_key_env  # noqa: E402

INNER = "BERQENAS_BENCH_STATUS_INNER"


def _peer_address(i):
    return "fd00:b5::%x/128" % (i + 2)


def prepare(root, cluster, n_tenants, n_peers):
    """The inventory, desired state, catalog rows and WireGuard allocations of the platform."""
    from ansible_collections.berqenas.platform.plugins.module_utils import sync_state
    from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wg

    inv = local_inventory(os.path.join(root, "inventory"), ("berqenas_db", "wireguard"))
    gv = os.path.join(inv, "group_vars", "all")
    state_dir = os.path.join(root, "wireguard")
    tenants = ["t%03d" % i for i in range(n_tenants)]
    peers = [{"name": "p%04d" % i, "tenant": tenants[i % n_tenants]} for i in range(n_peers)]
    files = {
        "platform.yml": {"berqenas_db_socket": cluster.host, "berqenas_db_host": "", "berqenas_db_port": cluster.port,
                         "berqenas_db_user": cluster.superuser, "berqenas_db_name": "berqenas",
                         "berqenas_credentials_dir": os.path.join(root, "credentials"),
                         "berqenas_health_state_dir": os.path.join(root, "health"),
                         "wireguard_state_dir": state_dir, "berqenas_vpn_interface": "wg0"},
        "tenants.yml": {"berqenas_tenants": [{"name": t} for t in tenants]},
        "vpn.yml": {"berqenas_vpn_peers": peers},
        "gateway.yml": {"berqenas_exposures": [{"tenant": t, "name": "db", "port": 5432, "target": "127.0.0.1:5432",
                                                "sources": []} for t in tenants]},
        "remotedbs.yml": {"berqenas_remotedbs": [{"name": "erp%03d" % i, "tenant": t, "host": "192.0.2.10",
                                                  "port": 1433, "user": "sync", "database": "erp"}
                                                 for i, t in enumerate(tenants)]},
    }
    for name, data in files.items():
        with open(os.path.join(gv, name), "w") as f:
            json.dump(data, f)
    with cluster.connect() as conn:
        conn.execute("CREATE DATABASE berqenas")
    with cluster.connect("berqenas") as conn:
        for t in tenants:
            conn.execute("CREATE SCHEMA %s" % t)  # names of this bench's own making (t000..)
        sync_state.ensure_state_table(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO berqenas.sync_state (job, source_schema, source_table, target_schema, target_table, "
                "rows_total, last_run_at, last_ok_at, last_result) VALUES (%s, 'dbo', 'Orders', %s, 'orders', %s, "
                "now(), now(), 'ok')", [("erp%03d" % i, t, 1000 + i) for i, t in enumerate(tenants)])
    keys = [wg.generate_keypair() for _ in peers]
    state = {"peers": {p["name"]: {"tenant": p["tenant"], "addresses": [_peer_address(i)], "public_key": keys[i][1],
                                   "enabled": True} for i, p in enumerate(peers)}}
    os.makedirs(os.path.join(state_dir, "wg0"), mode=0o700)
    with open(os.path.join(state_dir, "wg0", "state.json"), "w") as f:
        json.dump(state, f)
    server_key = wg.generate_keypair()[0]
    conf = ["[Interface]", "PrivateKey = %s" % server_key, "ListenPort = 51820", ""]
    for i in range(len(peers)):
        conf += ["[Peer]", "PublicKey = %s" % keys[i][1], "AllowedIPs = %s" % _peer_address(i), ""]
    conf_path = os.path.join(root, "wg0.conf")
    fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(conf))
    return inv, conf_path


def timed(argv, env, runs):
    """Wall seconds of each run, CPU seconds (user + system of the command and its children) of each, the
    last answer. The CPU figure says what the command costs whatever else loads the box."""
    out, cpu, last = [], [], None
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        p = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd="/")  # noqa: S603
        out.append(time.monotonic() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if p.returncode not in (0, 1):
            raise SystemExit("%s exited %s: %s" % (" ".join(argv[1:3]), p.returncode, p.stderr[-2000:]))
        last = json.loads(p.stdout)
    return out, cpu, last


def inner(args):
    """Inside the network namespace and a private mount namespace: bring wg0 up, measure, tear down."""
    root = os.environ[INNER]
    # a private /run (this mount namespace only): the UAPI sockets in /run/wireguard, nothing on the host's /run
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    os.mkdir("/run/wireguard", 0o700)
    cluster = support_pg.TestCluster()
    wgproc = None
    try:
        inv, conf = prepare(root, cluster, args.tenants, args.peers)
        wgproc = subprocess.Popen(["wireguard-go", "wg0"], env=dict(os.environ, WG_PROCESS_FOREGROUND="1"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists("/sys/class/net/wg0"):
            if time.monotonic() > deadline or wgproc.poll() is not None:
                raise SystemExit("wireguard-go did not create wg0")
            time.sleep(0.05)
        subprocess.run(["wg", "setconf", "wg0", conf], check=True)
        subprocess.run(["ip", "link", "set", "wg0", "up"], check=True)
        home = os.path.join(root, "home")
        os.mkdir(home, 0o700)
        env = dict(os.environ, BERQENAS_HOME=home, **session_key_env(os.path.join(root, "keys")))
        env.pop(INNER, None)
        cli = os.path.join(support_env.VENV_BIN, "berqenas")
        if os.environ.get("BERQENAS_BENCH_PROFILE"):
            subprocess.run([sys.executable, "-m", "cProfile", "-o", os.environ["BERQENAS_BENCH_PROFILE"], cli, "-i",
                            inv, "status", "--json"], env=env, check=False, stdout=subprocess.DEVNULL)
        status_s, status_cpu, data = timed([cli, "-i", inv, "status", "--json"], env, args.runs)
        assert len(data["peers"]) == args.peers and len(data["tenants"]) == args.tenants, data["read_from"]
        assert data["read_from"] == {"database": "local", "wireguard": "local"}, data["read_from"]
        assert len(data["sync"]) == args.tenants and all(p["addresses"] for p in data["peers"])
        base_s, base_cpu, bdata = timed([cli, "-i", inv, "health", "--json", "--only", "wireguard", "--only",
                                         "sync"], env, args.baseline_runs)
        assert sum(1 for c in bdata["checks"] if "/peer/" in c["name"]) == args.peers
        res = {"tenants": args.tenants, "peers": args.peers,
               "status_s": {"median": statistics.median(status_s), "min": min(status_s), "max": max(status_s)},
               "baseline_health_playbook_s": {"median": statistics.median(base_s), "min": min(base_s),
                                              "max": max(base_s)}}
        res["status_s"]["cpu_median"] = statistics.median(status_cpu)
        res["baseline_health_playbook_s"]["cpu_median"] = statistics.median(base_cpu)
        res["ratio"] = res["baseline_health_playbook_s"]["median"] / res["status_s"]["median"]
        res["cpu_ratio"] = statistics.median(base_cpu) / statistics.median(status_cpu)
        res["load_average"] = os.getloadavg()[0]
        print(json.dumps(res))
    finally:
        if wgproc is not None:
            wgproc.terminate()
            wgproc.wait(10)
        cluster.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.environ.get(INNER):
        return inner(args)
    ns = "bq-status-%s" % uuid.uuid4().hex[:8]
    root = tempfile.mkdtemp(prefix="bq-bench-status-")
    os.chmod(root, 0o711)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        p = subprocess.run(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                            sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                           env=dict(os.environ, **{INNER: root}), capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit("bench failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr[-3000:]))
        res = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    s, b = res["status_s"], res["baseline_health_playbook_s"]
    print("berqenas status, %d tenants, %d peers (local platform, real PostgreSQL + wireguard-go)"
          % (res["tenants"], res["peers"]))
    print("  status --json                 wall median %.2f s (min %.2f, max %.2f), CPU %.2f s  target < 2 s" % (
        s["median"], s["min"], s["max"], s["cpu_median"]))
    print("  baseline: health playbook     wall median %.2f s (min %.2f, max %.2f), CPU %.2f s" % (
        b["median"], b["min"], b["max"], b["cpu_median"]))
    print("  ratio baseline / status       %.1fx wall, %.1fx CPU  (load average %.1f on %d cores)" % (
        res["ratio"], res["cpu_ratio"], res["load_average"], os.cpu_count()))


if __name__ == "__main__":
    main()
