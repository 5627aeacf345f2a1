"""Local instances side by side, cut off, or run by an unprivileged user (the `local` robustness tests).

Everything here reads the kernel's and /proc's own view: the namespaces, the processes in them, the host's links
and mounts, and whether a PostgreSQL server answers on a host port (an SSLRequest, no credentials needed).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import time

from tests.support.env import VENV_BIN

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # PostgreSQL's SSLRequest: the server answers one byte, S or N


def out(argv, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=timeout).stdout


def namespaces() -> set[str]:
    return {line.split()[0] for line in out(["ip", "netns", "list"]).splitlines() if line.strip()}


def netns_pids(netns: str) -> set[int]:
    return {int(p) for p in out(["ip", "netns", "pids", netns]).split()}


def netns_links(netns: str) -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(out(["ip", "-n", netns, "-j", "link", "show"]))}


def host_links() -> set[str]:
    return {link["ifname"] for link in json.loads(out(["ip", "-j", "link", "show"]))}


def mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def cmdlines() -> dict[int, str]:
    """{pid: argv joined by spaces} of every process on the host."""
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    procs[int(pid)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                pass  # gone meanwhile
    return procs


def in_anchor(lay: dict, argv: list[str], timeout=60) -> str:
    """ARGV in the instance's host (its network and its private /run, where wireguard-go's UAPI socket is)."""
    with open(lay["anchor_pidfile"]) as f:
        pid = f.read().split()[0]
    return out(["nsenter", "--net", "--mount", f"--target={pid}", "--", *argv], timeout=timeout)


def postgres_answers(port: int, timeout: float = 10.0) -> bool:
    """Whether a PostgreSQL server answers on the host's 127.0.0.1:PORT (False when nothing listens there)."""
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(SSL_REQUEST)
            return s.recv(1) in (b"S", b"N")
    except OSError:
        return False


def cluster_dirs(home: str) -> list[str]:
    """The local PostgreSQL's directories of HOME outside it (local_postgres' default base dir as root)."""
    import hashlib

    digest = hashlib.sha256(os.path.normpath(home).encode()).hexdigest()[:12]
    return glob.glob(os.path.join("/var/lib/berqenas/local", digest))


def start_up(env: dict, *args) -> subprocess.Popen:
    """`berqenas local up --json ARGS` started (not waited for); progress on its stderr."""
    return subprocess.Popen([os.path.join(VENV_BIN, "berqenas"), "local", "up", "--json", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


def cancel_during_namespace_setup(env: dict, lay: dict, sig: int, timeout: float = 300.0) -> tuple[int, dict, str]:
    """`local up` for the home in ENV, cut off by SIG as soon as its namespace exists (the local_network module has
    just run `ip netns add`; its links, anchor, PostgreSQL and the VPN are still to come). Returns
    (exit code, the JSON on stdout, stderr). The window is the namespace's existence, polled every 2 ms: no sleep
    decides where the signal lands."""
    p = start_up(env)
    try:
        deadline = time.monotonic() + timeout
        path = os.path.join("/run/netns", lay["netns"])
        while not os.path.exists(path):
            if p.poll() is not None:
                raise AssertionError("local up ended (rc=%s) before its namespace appeared: %s"
                                     % (p.returncode, p.stderr.read()))
            if time.monotonic() > deadline:
                raise AssertionError("no namespace %s within %ss" % (lay["netns"], timeout))
            time.sleep(0.002)
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=60)
    return p.returncode, json.loads(stdout), stderr


def finish(p: subprocess.Popen, timeout: float = 600.0) -> tuple[int, str, str]:
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    return p.returncode, stdout, stderr


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    """Until /proc/PID is gone (a process that just exited may linger for a moment until its parent reaps it)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"process {pid} still there after {timeout}s"
        time.sleep(0.05)
