"""Remove expired peers from a running WireGuard interface and its wg-quick config (berqenas.platform).

Reads the allocations the wireguard role persisted (<state-dir>/<iface>/state.json). Public keys only ever
appear on argv (never a private or preshared key). Idempotent; the next apply of the role agrees with it.
"""

import argparse
import datetime
import fcntl
import json
import os
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", default="/etc/berqenas/wireguard")
    ap.add_argument("--config-dir", default="/etc/wireguard")
    ap.add_argument("interface")
    a = ap.parse_args()
    base = os.path.join(a.state_dir, a.interface)
    now = datetime.datetime.now(datetime.UTC)
    with open(os.path.join(base, ".lock"), "a") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        with open(os.path.join(base, "state.json")) as f:
            state = json.load(f)
        expired = set()
        for _name, e in state.get("peers", {}).items():
            exp = e.get("expires")
            if exp and datetime.datetime.fromisoformat(exp.replace("Z", "+00:00")) <= now:
                expired.add(e["public_key"])
        if not expired:
            return 0
        live = subprocess.run(["wg", "show", a.interface, "peers"], capture_output=True, text=True, check=False)
        for pub in set(live.stdout.split()) & expired:
            subprocess.run(["wg", "set", a.interface, "peer", pub, "remove"], check=True)
            print("removed expired peer %s from %s" % (pub, a.interface))
        conf = os.path.join(a.config_dir, a.interface + ".conf")
        with open(conf) as f:
            blocks = f.read().split("\n\n")  # the role writes one paragraph per peer
        keep = [
            b
            for b in blocks
            if not any(
                ln.startswith("PublicKey = ") and ln[len("PublicKey = ") :].strip() in expired for ln in b.splitlines()
            )
        ]
        if keep != blocks:
            fd, tmp = tempfile.mkstemp(dir=a.config_dir, prefix=".tmp-")
            with os.fdopen(fd, "w") as out:
                out.write("\n\n".join(keep))
            os.chmod(tmp, 0o600)
            os.rename(tmp, conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
