"""Benchmark of the WireGuard role: many peers, hitless changes, beside a restart baseline.

For each size N (default 1,000 and 5,000), on fresh systemd-nspawn machines (tests/support/machines.py): a hub
and two live clients pinging the hub through the tunnel every 0.05 s for the whole run. Through the real playbook
(playbooks/vpn_apply.yml, the whole role, ansible-playbook over nsenter), addresses from fd00::/8:

  first apply      2 -> N+2 peers (N keys generated on the host, N allocations, one syncconf)
  no-change re-run N+2 -> N+2 (must report changed=0); then 3 x (the same re-run, and again with
                   wireguard_expiry_timer=false as the baseline): the expiry timer tasks' cost as a ratio of medians
  add one          N+2 -> N+3 (syncconf)
  baseline         the same change (N+3 -> N+4) applied by restarting the interface: files written by the module
                   with service_manager=none, then `systemctl restart wg-quick@wg0` (what a restart-based role does)

Printed per step: wall seconds of the whole playbook and of the module task alone (profile_tasks), pings
lost by each live client (a lost ping = an icmp_seq with no reply, each 0.05 s of traffic), changed.
Targets: N=5,000 first apply <= 10 s, add one <= 3 s, zero pings lost on our path. The baseline's loss is
the re-handshake gap after a restart (measured here, in the same run).

Run: .venv/bin/python bench/bench_vpn.py [--sizes 1000,5000] [--json] [--log-dir DIR]   (root; builds the rootfs)
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import env as support_env  # noqa: E402

support_env.setup_import_path()

import yaml  # noqa: E402

from tests.support.machines import Cluster, Topology  # noqa: E402

REPO = support_env.REPO
APPLY = os.path.join(REPO, "playbooks", "vpn_apply.yml")
STATE = "/etc/berqenas/wireguard/wg0"
HUB_V6 = "fd00:b::1"


def rootfs():
    script = os.path.join(REPO, "scripts", "build-rootfs.sh")
    subprocess.run(["bash", script], check=True)
    return subprocess.run(["bash", script, "--print-path"], check=True, capture_output=True, text=True).stdout.strip()


class Bed:
    def __init__(self, home):
        topo = Topology()
        topo.machine("hub", groups=["wireguard"], mask=["postgresql.service"])
        topo.machine("c1", mask=["postgresql.service"])
        topo.machine("c2", mask=["postgresql.service"])
        topo.link("wan", {"hub": "192.0.2.1/24", "c1": "192.0.2.11/24", "c2": "192.0.2.12/24"})
        self.cluster = Cluster(topo, rootfs(), ansible_env=support_env.ansible_env(home)).start()
        gv = os.path.join(self.cluster.workdir, "group_vars")
        os.makedirs(gv)
        self.vars_path = os.path.join(gv, "wireguard.yml")
        self.pings = []
        self.log_dir = None
        self.size = 0
        self.runs = 0

    def apply(self, peers, **over):
        data = {
            "wireguard_addresses": [HUB_V6 + "/64"],
            "wireguard_endpoint": "192.0.2.1",
            "wireguard_persistent_keepalive": 5,
            "wireguard_manage_packages": False,
            "wireguard_qr": False,
            "wireguard_peers": peers,
        }
        data.update(over)
        with open(self.vars_path, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        t = time.perf_counter()
        env = dict(self.cluster.ansible_env, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
        res = self.cluster.playbook(APPLY, env=env)
        dt = time.perf_counter() - t
        if self.log_dir:  # the whole output (profile_tasks: seconds per task) of each run, for a closer look
            self.runs += 1
            name = "n%d-run%d-%d-peers.log" % (self.size, self.runs, len(peers))
            with open(os.path.join(self.log_dir, name), "w") as f:
                f.write(res.stdout)
        if res.returncode != 0:
            raise SystemExit("apply failed:\n" + res.stdout[-4000:])
        # profile_tasks: the module task alone (transfer + run + result), beside the whole playbook
        m = re.search(r"Reconcile the interface and its peers -+ ([0-9.]+)s", res.stdout)
        return dt, res.recap()["hub"]["changed"], float(m.group(1)) if m else float("nan")

    def clients_up(self):
        for name in ("c1", "c2"):
            m = self.cluster[name]
            conf = self.cluster["hub"].read_file(f"{STATE}/clients/{name}.conf")
            m.write_file("/etc/wireguard/wg0.conf", conf, 0o600)
            m.run(["systemctl", "restart", "wg-quick@wg0.service"])
        for name in ("c1", "c2"):
            for _ in range(100):
                if self.cluster[name].run(["ping", "-c", "1", "-W", "1", HUB_V6], check=False).returncode == 0:
                    break

    def start_pings(self):
        self.pings = [self.cluster[n].popen(["ping", "-n", "-i", "0.05", "-W", "1", HUB_V6]) for n in ("c1", "c2")]

    def stop_pings(self):
        lost = []
        for p in self.pings:
            os.killpg(p.pid, signal.SIGINT)
            out, _ = p.communicate(timeout=30)
            seqs = set(int(x) for x in re.findall(r"icmp_seq=(\d+) ", out))
            sent = int(re.search(r"(\d+) packets transmitted", out).group(1))
            lost.append(len(set(range(1, sent - 10)) - seqs))  # the last 0.5 s may still be in flight
        self.pings = []
        return lost

    def teardown(self):
        self.cluster.teardown()


def bench_size(n, home, log_dir=None):
    live = [{"name": "c1", "tenant": "live"}, {"name": "c2", "tenant": "live"}]
    bulk = [{"name": "p%05d" % i, "tenant": "bench"} for i in range(n)]
    rows = []
    bed = Bed(home)
    bed.log_dir, bed.size = log_dir, n
    try:
        bed.apply(live, wireguard_qr=False)
        bed.clients_up()
        time.sleep(1)

        def step(label, peers, settle=1.5, **over):
            bed.start_pings()
            time.sleep(1)
            dt, changed, module_s = bed.apply(peers, **over)
            time.sleep(settle)
            lost = bed.stop_pings()
            rows.append({"peers": n, "step": label, "seconds": round(dt, 2), "module_seconds": module_s,
                         "lost_c1": lost[0], "lost_c2": lost[1], "changed": changed})  # fmt: skip
            print("  %-36s %6.2f s (module task %.2f s)  lost c1/c2 %d/%d  changed=%d"
                  % (label, dt, module_s, lost[0], lost[1], changed), file=sys.stderr)  # fmt: skip

        step("first apply (2 -> N+2)", live + bulk)
        step("no-change re-run", live + bulk)
        # the expiry timer's tasks (find + systemd when current) beside the same re-run without them, alternated
        # three times each in this run: their cost is the ratio of the medians
        for _ in range(3):
            step("no-change re-run, timer tasks", live + bulk, settle=0)
            step("no-change re-run, timer off (baseline)", live + bulk, settle=0, wireguard_expiry_timer=False)
        step("add one (syncconf)", live + bulk + [{"name": "extra1", "tenant": "bench"}])
        # baseline: the same change applied by a restart
        bed.start_pings()
        time.sleep(1)
        t = time.perf_counter()
        dt_files, _, _ = bed.apply(live + bulk + [{"name": "extra1", "tenant": "bench"}, {"name": "extra2",
                                   "tenant": "bench"}], wireguard_service_manager="none")  # fmt: skip
        t_restart = time.perf_counter()
        bed.cluster["hub"].run(["systemctl", "restart", "wg-quick@wg0.service"], timeout=120)
        dt_restart = time.perf_counter() - t_restart
        total = time.perf_counter() - t
        time.sleep(20)  # clients need ~15 s to re-handshake after a restart
        lost = bed.stop_pings()
        rows.append({"peers": n, "step": "baseline: add one by restart", "seconds": round(total, 2),
                     "restart_seconds": round(dt_restart, 2), "lost_c1": lost[0], "lost_c2": lost[1],
                     "changed": 1})  # fmt: skip
        print("  %-36s %6.2f s (restart %.2f s)  lost c1/c2 %d/%d" % ("baseline: add one by restart", total,
              dt_restart, lost[0], lost[1]), file=sys.stderr)  # fmt: skip
    finally:
        bed.teardown()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--log-dir", help="keep every playbook's output (with profile_tasks) in this directory")
    a = ap.parse_args()
    # a killed benchmark still tears its machines down (the finally clauses run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    home = tempfile.mkdtemp(prefix="bq-bench-vpn-")
    os.makedirs(os.path.join(home, ".ansible", "tmp"))
    rows = []
    try:
        for n in [int(x) for x in a.sizes.split(",")]:
            print(f"N = {n} extra peers (+2 live clients pinging every 0.05 s)", file=sys.stderr)
            rows += bench_size(n, home, a.log_dir)
    finally:
        subprocess.run(["rm", "-rf", home])
    ratios = []
    for n in sorted(set(r["peers"] for r in rows)):
        def median(label, n=n):
            xs = sorted(r["seconds"] for r in rows if r["peers"] == n and r["step"] == label)
            return xs[len(xs) // 2] if xs else float("nan")
        on, off = median("no-change re-run, timer tasks"), median("no-change re-run, timer off (baseline)")
        ratios.append({"peers": n, "timer_tasks_s": on, "timer_off_s": off, "ratio": round(on / off, 2)})
    if a.json:
        print(json.dumps({"rows": rows, "expiry_timer_ratio": ratios}, indent=2))
        return
    print("load average at the start: %s" % load_start)
    print("load average at the end: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print("| peers | step | playbook s | module task s | pings lost c1 / c2 | changed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mod = "%.2f" % r["module_seconds"] if "module_seconds" in r else "restart %.2f" % r["restart_seconds"]
        print("| %d | %s | %.2f | %s | %d / %d | %d |" % (r["peers"], r["step"], r["seconds"], mod, r["lost_c1"],
              r["lost_c2"], r["changed"]))  # fmt: skip
    for r in ratios:
        print("N=%d no-change re-run, median of 3: with the expiry timer's tasks %.2f s, without (baseline) %.2f s: "
              "ratio %.2fx" % (r["peers"], r["timer_tasks_s"], r["timer_off_s"], r["ratio"]))


if __name__ == "__main__":
    main()
