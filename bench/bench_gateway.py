"""Benchmark: N database exposures through the gateway role vs a per-rule community.general.ufw loop, same run.

Both on fresh nspawn machines of the test harness (one per measurement, booted together), N tenants with one
VPN peer each, every tenant's database exposed to its peer. Ours = playbooks/gateway_apply.yml (one managed
block, one ufw reload, whatever N is). Baseline = bench/naive_gateway_ufw.yml (one community.general.ufw task
iteration per source, the per-rule method), measured at small N; other N get its least-squares line, labelled
"fitted" in the output.

    .venv/bin/python bench/bench_gateway.py [--sizes 50,200] [--baseline 10,25] [--json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.env import REPO, ansible_env, setup_import_path  # noqa: E402

setup_import_path()
from bench.baseline import report  # noqa: E402
from tests.support.machines import Cluster, Topology  # noqa: E402


def sources(n):
    # documentation ranges only: 198.51.100.0/24 and 203.0.113.0/24 give 508 host addresses
    hosts = list(ipaddress.ip_network("198.51.100.0/24").hosts()) + list(ipaddress.ip_network("203.0.113.0/24").hosts())
    if n > len(hosts):
        raise SystemExit("at most %d exposures" % len(hosts))
    return ["%s/32" % h for h in hosts[:n]]


def run(cluster, host, playbook, extravars, work, env):
    path = os.path.join(work, "vars-%s.yml" % host)
    with open(path, "w") as f:
        yaml.safe_dump(extravars, f)
    t = time.perf_counter()
    res = cluster.playbook(playbook, extravars_file=path, limit=host, env=env, timeout=3600)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit("%s on %s failed:\n%s" % (playbook, host, res.stdout[-3000:]))
    return dt, res.recap()[host]


def ours_vars(n):
    srcs = sources(n)
    return {
        "berqenas_exposures": [{"tenant": "t%04d" % i, "service": "postgres"} for i in range(n)],
        "gateway_vpn_peers": [
            {"name": "p%04d" % i, "tenant": "t%04d" % i, "addresses": [srcs[i]], "enabled": True} for i in range(n)
        ],
        "gateway_pg_hba_manage": False,
        "gateway_guard_enabled": False,
    }


def count_rules(cluster, host, chain):
    out = cluster[host].run(["iptables", "-S", chain]).stdout
    return sum(1 for line in out.splitlines() if "--dport 5432" in line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50,200")
    ap.add_argument("--baseline", default="10,25")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    sizes = [int(x) for x in ns.sizes.split(",") if x]
    base_sizes = [int(x) for x in ns.baseline.split(",") if x]
    rootfs = subprocess.run(["bash", os.path.join(REPO, "scripts", "build-rootfs.sh"), "--print-path"],
                            check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["bash", os.path.join(REPO, "scripts", "build-rootfs.sh")], check=True)
    topo = Topology()
    names = ["o%d" % n for n in sizes] + ["b%d" % n for n in base_sizes]
    for name in names:
        topo.machine(name, groups=["berqenas_gateway"], mask=["postgresql.service"])
    work = tempfile.mkdtemp(prefix="bq-bench-gw-")
    env = dict(ansible_env(work), ANSIBLE_PIPELINING="True")
    cluster = Cluster(topo, rootfs, ansible_env=env).start()
    out = {"ours": {}, "naive": {}}
    try:
        apply_pb = os.path.join(REPO, "playbooks", "gateway_apply.yml")
        for n in sizes:
            host = "o%d" % n
            fresh, _ = run(cluster, host, apply_pb, ours_vars(n), work, env)
            rerun, recap = run(cluster, host, apply_pb, ours_vars(n), work, env)
            rules = count_rules(cluster, host, "BQ-INPUT")
            assert rules == n, (rules, n)
            out["ours"][n] = {"fresh_s": round(fresh, 2), "rerun_s": round(rerun, 2), "rerun_changed": recap["changed"],
                              "rules": rules}
            print(f"ours   N={n:4d}: fresh {fresh:7.2f} s, no-change re-run {rerun:6.2f} s "
                  f"(changed={recap['changed']}, {rules} rules live)", flush=True)
        naive_pb = os.path.join(REPO, "bench", "naive_gateway_ufw.yml")
        for n in base_sizes:
            host = "b%d" % n
            dt, _ = run(cluster, host, naive_pb, {"bench_sources": sources(n), "bench_port": "5432"}, work, env)
            rules = count_rules(cluster, host, "ufw-user-input")
            assert rules == n, (rules, n)
            out["naive"][n] = {"fresh_s": round(dt, 2), "rules": rules}
            print(f"naive  N={n:4d}: fresh {dt:7.2f} s (measured, {rules} rules live)", flush=True)
        report(out, "per_rule_s")
        if ns.json:
            print(json.dumps(out, indent=2))
    finally:
        cluster.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
