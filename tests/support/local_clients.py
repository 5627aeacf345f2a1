"""VPN clients of the local instance, each in a network namespace of its own (used by the `local` tests and, as
`python -m tests.support.local_clients`, by `make demo`).

A client namespace ``bqcl-<pid>-<n>`` gets a veth pair: one end (203.0.113.(10+n)/24) in the client, the other
enslaved to the local host's bridge ``bqlan0`` inside the instance's namespace. Its WireGuard interface comes
up with ``wg-quick`` from the client config ``berqenas vpn peer add`` wrote, inside a private mount namespace
whose /run is a tmpfs (so the UAPI socket never lands in the host's /run). ``close()`` removes all of it.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import tempfile
import time

from ansible_collections.berqenas.platform.plugins.module_utils import localnet

from tests.support import isolation

ANCHOR = 'mount -t tmpfs -o mode=0755 tmpfs /run && echo $$ > "$1" && exec sleep infinity'


def _sh(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kw)


class Client:
    def __init__(self, home: str, n: int, config_file: str):
        lay = localnet.layout(os.path.abspath(home))
        self.netns = f"bqcl-{os.getpid()}-{n}"
        self.address = f"203.0.113.{10 + n}"
        self.outer, inner = localnet.client_link_names(lay["id"], n)
        self._dir = tempfile.mkdtemp(prefix="bq-client-")
        pidfile = os.path.join(self._dir, "anchor.pid")
        _sh(["ip", "netns", "add", self.netns])
        try:
            _sh(["ip", "-n", self.netns, "link", "set", "lo", "up"])
            _sh(["ip", "-n", self.netns, "link", "add", inner, "type", "veth", "peer", "name", self.outer,
                 "netns", lay["netns"]])
            _sh(["ip", "-n", lay["netns"], "link", "set", self.outer, "master", lay["bridge"], "up"])
            _sh(["ip", "-n", self.netns, "addr", "add", self.address + "/24", "dev", inner])
            _sh(["ip", "-n", self.netns, "link", "set", inner, "up"])
            self._anchor = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
                                             "private", "sh", "-c", ANCHOR, "sh", pidfile],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.time() + 20
            while not os.path.exists(pidfile) or not open(pidfile).read().strip():
                if time.time() > deadline:
                    raise RuntimeError("client namespace: anchor did not start")
                time.sleep(0.05)
            self.pid = int(open(pidfile).read())
            conf = os.path.join(self._dir, "wgc0.conf")  # wg-quick names the interface after the file
            with open(config_file) as src, open(os.open(conf, os.O_WRONLY | os.O_CREAT, 0o600), "w") as dst:
                dst.write(src.read())
            self.run(["wg-quick", "up", conf])
        except BaseException:
            self.close()
            raise

    def run(self, argv, check=True, timeout=60, **kw):
        """ARGV inside the client (its network and its private /run)."""
        res = subprocess.run(["nsenter", "--net", "--mount", f"--target={self.pid}", "--", *argv],
                             capture_output=True, text=True, timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.netns}: rc={res.returncode} {res.stderr.strip()}")
        return res

    def wait_handshake(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.run(["wg", "show", "wgc0", "latest-handshakes"]).stdout.split()
            if len(out) >= 2 and out[1] != "0":
                return True
            self.run(["ping", "-c", "1", "-W", "1", "198.51.100.1"], check=False)
        return False

    def close(self):
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True,
                             timeout=60).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        anchor = getattr(self, "_anchor", None)
        if anchor is not None:
            anchor.kill()
            anchor.wait(timeout=60)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=60)
        # the veth end in the local host's namespace dies with its peer
        subprocess.run(["rm", "-rf", "--", self._dir], capture_output=True, timeout=60)


SQL_PROBE = r"""
import json, sys
import psycopg
a = json.load(sys.stdin)
try:
    with psycopg.connect(host=a["host"], port=a["port"], user=a["user"], password=a["password"],
                         dbname=a["dbname"], connect_timeout=a["timeout"]) as c:
        print(json.dumps({"ok": True, "rows": [list(r) for r in c.execute(a["sql"]).fetchall()]}, default=str))
except psycopg.Error as e:
    state = e.sqlstate
    if state is None:  # refused before authentication: libpq keeps no SQLSTATE, the server's own reply has it
        try:
            state = startup_sqlstate(a["host"], a["port"], a["user"], a["dbname"], a["timeout"])
        except OSError:
            state = None
    print(json.dumps({"ok": False, "sqlstate": state, "error": str(e).strip().splitlines()[0]}))
"""


def sql(client: Client, python: str, port: int, creds: dict, database: str, query: str, timeout: int = 3) -> dict:
    """Run QUERY from CLIENT against the local host's VPN address (the password goes through stdin)."""
    import json

    args = {"host": "198.51.100.1", "port": int(port), "user": creds["user"], "password": creds["password"],
            "dbname": database, "sql": query, "timeout": timeout}
    probe = inspect.getsource(isolation.startup_sqlstate) + SQL_PROBE
    res = client.run([python, "-c", probe], input=json.dumps(args), timeout=2 * timeout + 60)
    return json.loads(res.stdout)



def _berqenas(*args, json_out=True):
    """The `berqenas` command of this venv (as the demo's user runs it): its JSON answer, or its text shown."""
    import json
    import sys

    argv = [sys.executable, "-m", "berqenas_orchestrator", *args] + (["--json"] if json_out else [])
    res = subprocess.run(argv, check=True, text=True, timeout=900, capture_output=json_out)
    return json.loads(res.stdout) if json_out else None


def main(argv=None):
    """The VPN + gateway proof of `make demo`: one peer per tenant in its own client namespace, through the gateway.

    The first TENANT=PEER's database is exposed (the demo exposed it), the others are not: the first peer runs
    SQL on its tenant's database, the others are dropped by the gateway. Then this exposes the others too (`berqenas
    gateway expose`, printed) and each peer, admitted by the firewall now, tries every other tenant's password:
    SQLSTATE 28000 from pg_hba. Exit code 1 when anything is not as expected."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Print the VPN + gateway proof of the local platform.")
    ap.add_argument("peers", nargs="+", metavar="TENANT=PEER",
                    help="e.g. acme=alice globex=bob (the first tenant's database is the exposed one)")
    ns = ap.parse_args(argv)
    pairs = [p.split("=", 1) for p in ns.peers]
    if any(len(p) != 2 for p in pairs):
        ap.error("each argument is TENANT=PEER")
    status = _berqenas("local", "status")
    home = status["home"]
    creds = {t: _berqenas("tenant", "show", t, "--credentials")["credentials"]["app"] for t, _ in pairs}
    clients, results = {}, []

    def check(tenant, peer, what, good, text):
        results.append(good)
        print(f"{peer + ' (' + tenant + ')':<18} {what:<46} -> {text}{'' if good else ' [UNEXPECTED]'}", flush=True)

    def attempt(tenant, who):
        return sql(clients[tenant], sys.executable, status["port"], creds[who], status["database"],
                   "SELECT session_user, host(inet_client_addr())", timeout=5)

    def outcome(res):
        if res["ok"]:
            return f"ALLOWED (as {res['rows'][0][0]}, pg sees {res['rows'][0][1]})"
        if res.get("sqlstate"):
            return f"DENIED by pg_hba (SQLSTATE {res['sqlstate']})"
        return f"DROPPED by the gateway ({res['error']})"

    try:
        for n, (tenant, peer) in enumerate(pairs, start=1):
            conf = os.path.join(home, "vpn", peer, peer + ".conf")
            clients[tenant] = Client(home, n, conf)
            up = clients[tenant].wait_handshake(timeout=90)
            check(tenant, peer, f"WireGuard handshake from {clients[tenant].netns}", up,
                  f"{'OK' if up else 'NONE within 90 s'} ({clients[tenant].address} -> 203.0.113.1)")
        for n, (tenant, peer) in enumerate(pairs):
            res = attempt(tenant, tenant)
            want_ok = n == 0  # only the first tenant's database is exposed
            good = res["ok"] if want_ok else (not res["ok"] and res.get("sqlstate") is None)
            check(tenant, peer, f"SQL on {tenant}'s database at 198.51.100.1", good, outcome(res))
        for tenant, _ in pairs[1:]:
            print(f"== berqenas gateway expose {tenant}  (the firewall now admits its peer: pg_hba is the next wall)",
                  flush=True)
            _berqenas("gateway", "expose", tenant, json_out=False)
        for tenant, peer in pairs:
            for other, _ in pairs:
                res = attempt(tenant, other)
                good = res["ok"] if other == tenant else res.get("sqlstate") == "28000"
                check(tenant, peer, f"with {other}'s password ({creds[other]['user']})", good, outcome(res))
    finally:
        for c in clients.values():
            c.close()
    print(f"VPN proof: {sum(results)}/{len(results)} as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
