"""Command-line front of the machine harness (tests/support/machines.py), for molecule's create/destroy steps.

    python -m tests.support.machines_cli up TOPOLOGY_FILE --state DIR   # boots, writes DIR/inventory.yml
    python -m tests.support.machines_cli down --state DIR               # tears everything down

The harness ties a cluster's life to the process that started it (namespace names carry its pid and stale ones
are removed once that pid is gone), so `up` starts a small keeper process that holds the Cluster and waits;
`down` signals it and the keeper runs Cluster.teardown(). The keeper's log is DIR/harness.log.

TOPOLOGY_FILE (YAML), the same vocabulary as tests.support.machines.Topology:

    machines:
      - {name: db1, groups: [db], hostvars: {tenant_x: 1}, mask: [wg-quick@wg0.service]}
      - {name: gw}
    namespaces: [ctl]
    links:
      - {name: lan, members: {db1: 203.0.113.2/24, gw: 203.0.113.1/24}, gateway: {db1: 203.0.113.1}}

Exit codes: 0 ok, 1 harness failure (message on stderr), 2 usage.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

import yaml

from tests.support import env as support_env

READY = "ready"
PIDFILE = "keeper.pid"
LOG = "harness.log"
INVENTORY = "inventory.yml"


def load_topology(path):
    from tests.support.machines import HarnessError, Topology

    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    unknown = set(spec) - {"machines", "namespaces", "links"}
    if unknown:
        raise HarnessError(f"{path}: unknown keys {sorted(unknown)} (machines, namespaces, links)")
    topo = Topology()
    for m in spec.get("machines") or []:
        if isinstance(m, str):
            m = {"name": m}
        topo.machine(m["name"], groups=m.get("groups", ()), hostvars=m.get("hostvars"), mask=m.get("mask", ()))
    for ns in spec.get("namespaces") or []:
        topo.namespace(ns)
    for link in spec.get("links") or []:
        topo.link(link["name"], link["members"], gateway=link.get("gateway"))
    if not any(n.kind == "machine" for n in topo.nodes.values()):
        raise HarnessError(f"{path}: no machines")
    return topo


def _rootfs():
    script = os.path.join(support_env.REPO, "scripts", "build-rootfs.sh")
    subprocess.run(["bash", script], check=True, timeout=1200)
    out = subprocess.run(["bash", script, "--print-path"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _alive_keeper(state):
    """The keeper's pid if it is running (and really is our keeper), else None."""
    try:
        with open(os.path.join(state, PIDFILE)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    return pid if b"tests.support.machines_cli" in cmdline and b"keep" in cmdline else None


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def keep(topology_file, state):
    """The keeper: boot the cluster, publish its inventory, wait for SIGTERM, tear down."""
    from tests.support.machines import Cluster

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    _write_atomic(os.path.join(state, PIDFILE), f"{os.getpid()}\n")
    cluster = None
    try:
        topo = load_topology(topology_file)
        cluster = Cluster(topo, _rootfs(), workdir=os.path.join(state, "cluster"))
        os.makedirs(cluster.workdir, exist_ok=True)
        t0 = time.monotonic()
        cluster.start()
        with open(cluster.inventory_path) as f:
            _write_atomic(os.path.join(state, INVENTORY), f.read())
        names = ", ".join(n for n, node in cluster.nodes.items() if node.is_machine)
        print(f"machines up in {time.monotonic() - t0:.1f}s: {names}", flush=True)
        _write_atomic(os.path.join(state, READY), "ok\n")
        while True:
            signal.pause()
    finally:
        for name in (READY, INVENTORY):
            try:
                os.unlink(os.path.join(state, name))
            except FileNotFoundError:
                pass
        if cluster is not None:
            cluster.teardown()
            print("machines down", flush=True)


def up(topology_file, state, timeout):
    state = os.path.abspath(state)
    os.makedirs(state, exist_ok=True)
    if _alive_keeper(state) and os.path.exists(os.path.join(state, READY)):
        print(f"machines already up: {os.path.join(state, INVENTORY)}")
        return 0
    down(state)  # a half-started keeper from before
    log_path = os.path.join(state, LOG)
    with open(log_path, "ab") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "tests.support.machines_cli", "keep", os.path.abspath(topology_file), state],
            cwd=support_env.REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command and molecule's process group
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(state, READY)):
            print(f"machines up: {os.path.join(state, INVENTORY)}")
            return 0
        if keeper.poll() is not None:
            break
        time.sleep(0.2)
    rc = keeper.poll()
    if rc is None:
        keeper.terminate()
        try:
            keeper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            keeper.kill()
    with open(log_path, errors="replace") as f:
        tail = f.read()[-3000:]
    why = f"keeper exited rc={rc}" if rc is not None else f"not up within {timeout}s"
    print(f"machines up failed ({why}):\n{tail}", file=sys.stderr)
    return 1


def down(state, timeout=60):
    from tests.support.machines import cleanup_stale

    state = os.path.abspath(state)
    pid = _alive_keeper(state)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            cleanup_stale()  # its namespaces carry its (now dead) pid
    for name in (READY, PIDFILE, INVENTORY):
        try:
            os.unlink(os.path.join(state, name))
        except FileNotFoundError:
            pass
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.support.machines_cli", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pu = sub.add_parser("up", help="boot the machines of TOPOLOGY_FILE; inventory at STATE/inventory.yml")
    pu.add_argument("topology")
    pu.add_argument("--state", required=True, help="directory for the inventory, keeper pid and log")
    pu.add_argument("--timeout", type=float, default=1200, help="seconds (includes a first rootfs build)")
    pd = sub.add_parser("down", help="tear down what `up --state STATE` booted")
    pd.add_argument("--state", required=True)
    pk = sub.add_parser("keep", help=argparse.SUPPRESS)
    pk.add_argument("topology")
    pk.add_argument("state")
    args = p.parse_args(argv)
    from tests.support.machines import HarnessError

    try:
        if args.cmd == "up":
            load_topology(args.topology)  # bad input: a clear error before anything is booted
            return up(args.topology, args.state, args.timeout)
        if args.cmd == "down":
            return down(args.state)
        return keep(args.topology, args.state)
    except (HarnessError, OSError, KeyError, TypeError, yaml.YAMLError) as e:
        print(f"machines {args.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
