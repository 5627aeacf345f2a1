"""Benchmark: N tenants through our path vs the naive per-tenant community.postgresql play, same run, same server.

Our path = playbooks/tenant_create.yml run through the orchestrator's ansible-runner adapter (what `berqenas`
does), tenants listed in the inventory. Baseline = bench/naive_tenants.yml (7 community.postgresql tasks per
tenant, the per-object method), measured in every run at N=10, N=25 and --baseline-n (100): sizes it was not run
at get the least-squares line through those points, printed as "fitted" beside the measured ones.

    .venv/bin/python bench/bench_tenants.py [--sizes 100,300,1000] [--baseline 10,25] [--baseline-n 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.env import REPO, ansible_env, setup_import_path  # noqa: E402

setup_import_path()
from berqenas_orchestrator import runner  # noqa: E402

from bench.baseline import report  # noqa: E402
from tests.support.pg import TestCluster  # noqa: E402


def write_inventory(root, cluster, db, tenants):
    inv = os.path.join(root, "inv-" + db)
    os.makedirs(os.path.join(inv, "group_vars", "all"), exist_ok=True)
    with open(os.path.join(inv, "hosts.yml"), "w") as f:
        f.write("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                f"      ansible_python_interpreter: {sys.executable}\n"
                "  children:\n    berqenas_db:\n      hosts:\n        localhost: {}\n")
    with open(os.path.join(inv, "group_vars", "all", "platform.yml"), "w") as f:
        json.dump({"berqenas_db_socket": cluster.host, "berqenas_db_port": cluster.port, "berqenas_db_user": "postgres",
                   "berqenas_db_name": db, "berqenas_credentials_dir": os.path.join(root, "creds-" + db),
                   "berqenas_tenants": tenants}, f)
    return inv


def timed_run(playbook, inv, env):
    t = time.perf_counter()
    os.environ.update({k: env[k] for k in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "HOME") if k in env})
    res = runner.run_playbook(playbook, inventory=inv)
    dt = time.perf_counter() - t
    if not res.ok:
        raise SystemExit(f"{playbook} failed: {res.failures[-3:]}")
    return dt, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--baseline", default="10,25")
    ap.add_argument("--baseline-n", type=int, default=100,
                    help="also run the naive play at this N (measured, not fitted); 0 skips it")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args()
    sizes = [int(x) for x in ns.sizes.split(",") if x]
    base_sizes = sorted({int(x) for x in ns.baseline.split(",") if x} | ({ns.baseline_n} if ns.baseline_n else set()))
    work = tempfile.mkdtemp(prefix="bq-bench-")
    env = ansible_env(work)
    cluster = TestCluster()
    out = {"ours": {}, "naive": {}}
    try:
        for n in sizes:
            db = cluster.create_database(f"bench{n}")
            names = [f"n{n}_t{i:04d}" for i in range(n)]
            inv = write_inventory(work, cluster, db, names)
            fresh, _ = timed_run(os.path.join(REPO, "playbooks", "tenant_create.yml"), inv, env)
            rerun, res = timed_run(os.path.join(REPO, "playbooks", "tenant_create.yml"), inv, env)
            summary = res.data.get("berqenas_result", {}).get("summary", {})
            out["ours"][n] = {"fresh_s": round(fresh, 2), "rerun_s": round(rerun, 2),
                              "rerun_tenants_changed": summary.get("created", 0) + summary.get("updated", 0),
                              "rerun_tasks_changed": res.changed}
            print(f"ours   N={n:5d}: fresh {fresh:7.2f} s, no-change re-run {rerun:6.2f} s "
                  f"(tenants changed on re-run: {out['ours'][n]['rerun_tenants_changed']})", flush=True)
        for n in base_sizes:
            db = cluster.create_database(f"naive{n}")
            inv = write_inventory(work, cluster, db, [f"b{n}_t{i:04d}" for i in range(n)])
            dt, _ = timed_run(os.path.join(REPO, "bench", "naive_tenants.yml"), inv, env)
            out["naive"][n] = {"fresh_s": round(dt, 2)}
            print(f"naive  N={n:5d}: fresh {dt:7.2f} s (measured)", flush=True)
        report(out, "per_tenant_s")
        if len(sizes) >= 2:
            a, b = sizes[0], sizes[-1]
            per_a = out["ours"][a]["fresh_s"] / a
            per_b = out["ours"][b]["fresh_s"] / b
            print(f"\nper-tenant cost ours: {per_a * 1000:.1f} ms at N={a}, {per_b * 1000:.1f} ms at N={b} "
                  f"(includes one ansible start-up per run)")
        print("targets: 1,000 fresh <= 15 s; no-change re-run of 1,000 <= 5 s with changed=0")
        if ns.json:
            print(json.dumps(out, indent=2))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
