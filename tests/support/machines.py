"""Multi-host test machines: systemd-nspawn containers booted from one read-only rootfs, wired by the harness.

API (the fixtures live in tests/support/fixtures_machines.py)
-------------------------------------------------------------
Describe a topology, boot it, use it, tear it down::

    from tests.support.machines import Topology

    topo = Topology()
    topo.machine("gw", groups=["gateway"], hostvars={"role": "hub"})          # a booted systemd machine
    topo.machine("c1", mask=["postgresql.service"])                          # units masked at boot
    topo.namespace("ctl")                                                      # a plain netns, no machine
    topo.link("wan", {"gw": "192.0.2.1/24", "c1": "192.0.2.11/24", "ctl": "192.0.2.254/24"})
    topo.link("lan", {"gw": ["203.0.113.1/24", "fd00:1::1/64"], "c1": "203.0.113.2/24"},
              gateway={"c1": "203.0.113.1"})                                 # default route of c1 via gw

    cluster = machines(topo)        # fixture `machines` (function scope) or `machines_module` (module scope)
    gw = cluster["gw"]
    gw.run(["ip", "-br", "addr"]).stdout          # argv only (nsenter into every namespace of the machine)
    gw.run(["wg", "set", ...], input="...")     # secrets go through stdin, never argv
    p = cluster["ctl"].popen(["ping", "-i", "0.05", "192.0.2.1"])   # background process (killed at teardown)
    gw.read_file("/etc/wireguard/wg0.conf"); gw.write_file(path, text, mode=0o600)
    cluster.inventory_path          # YAML inventory: every machine, nsenter connection, groups + hostvars
    res = cluster.playbook("playbooks/vpn_apply.yml", extravars_file=..., check=False, diff=False,
                           limit=None, extra_args=[...])     # CompletedProcess (stdout+stderr in .stdout)
    res.recap()                     # {"gw": {"ok": 5, "changed": 1, "failed": 0, ...}, ...}

* `Topology.machine(name, groups=, hostvars=, mask=)`: name `^[a-z][a-z0-9]{0,11}$`; it becomes the
  machine's hostname and its inventory_hostname.  `mask` lists units masked at boot (`systemd.mask=`), e.g.
  `postgresql.service` on machines that do not need the database (saves CPU and RAM).
* `binds=[(host_path, read_only[, machine_path]), ...]` mounts host directories into the machine (at the same
  path unless given): e.g. the checkout read-only, so the machine runs the repository's .venv and CLI, or the
  harness PostgreSQL's socket directory.
* `Topology.namespace(name)`: a network namespace without a machine (a controller, a traffic endpoint);
  commands run there with `ip netns exec` on the host's filesystem.
* `Topology.link(name, members, gateway=)`: one L2 segment. Each member gets an interface named after the
  link (`name`, <= 15 chars) with the given address(es). Two members: a veth pair; more: a bridge in the
  segment's own namespace. `gateway` maps member -> default-route next hop (IPv4 or IPv6).
  Only documentation ranges are accepted: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, fd00::/8.
* Every namespace is `bqt-<pid>-<n>-<node>` (pid of the test process); machines are started with
  `--volatile=overlay --keep-unit --register=no --network-namespace-path --capability=CAP_NET_ADMIN
  --bind=/dev/net/tun --console=passive` and waited for until `systemctl is-system-running` is
  running/degraded.  Teardown (also on failure): SIGTERM each nspawn (clean poweroff), SIGKILL what is left,
  kill every process in our namespaces, delete the namespaces, remove the machines' /run/systemd/nspawn
  entries. Leftovers of a dead test process (its pid is in the names) are removed at the next start.
* The rootfs comes from scripts/build-rootfs.sh (fixture `machine_rootfs`, cached under .cache/).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import yaml

from tests.support import env as support_env

PREFIX = "bqt-"
DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "fd00::/8")]
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
LINK_RE = re.compile(r"^[a-z][a-z0-9_-]{0,14}$")
NSPAWN_RUN = "/run/systemd/nspawn"
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
_counter = itertools.count(1)


class HarnessError(RuntimeError):
    pass


def _sh(argv, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    res = subprocess.run(argv, **kw)
    if check and res.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed rc={res.returncode}: {res.stderr.strip()[-2000:]}")
    return res


def _check_addr(addr):
    iface = ipaddress.ip_interface(addr)
    if not any(iface.ip in net for net in DOC_NETS):
        raise HarnessError(
            f"address {addr}: only documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, fd00::/8)"
        )
    return str(iface)


@dataclass
class _Node:
    name: str
    kind: str  # "machine" | "namespace"
    groups: list = field(default_factory=list)
    hostvars: dict = field(default_factory=dict)
    mask: list = field(default_factory=list)
    binds: list = field(default_factory=list)  # [(host path, read_only, machine path)]


@dataclass
class _Link:
    name: str
    members: dict  # node -> [addr, ...]
    gateway: dict


class Topology:
    """A description of machines, plain namespaces and L2 links (see the module docstring)."""

    def __init__(self):
        self.nodes: dict[str, _Node] = {}
        self.links: list[_Link] = []

    def _add(self, node):
        if not NAME_RE.match(node.name):
            raise HarnessError(f"node name {node.name!r}: must match {NAME_RE.pattern}")
        if node.name in self.nodes:
            raise HarnessError(f"node {node.name!r} declared twice")
        self.nodes[node.name] = node
        return self

    def machine(self, name, groups=(), hostvars=None, mask=(), binds=()):
        norm = []
        for b in binds:
            src, ro, dst = (tuple(b) + (b[0],))[:3]
            for path in (src, dst):
                if not os.path.isabs(path) or ":" in path:
                    raise HarnessError(f"bind {path!r}: an absolute path without ':'")
            norm.append((src, bool(ro), dst))
        return self._add(_Node(name, "machine", list(groups), dict(hostvars or {}), list(mask), norm))

    def namespace(self, name):
        return self._add(_Node(name, "namespace"))

    def link(self, name, members, gateway=None):
        if not LINK_RE.match(name):
            raise HarnessError(f"link name {name!r}: must match {LINK_RE.pattern}")
        if any(lk.name == name for lk in self.links):
            raise HarnessError(f"link {name!r} declared twice")
        norm = {}
        for node, addrs in members.items():
            if node not in self.nodes:
                raise HarnessError(f"link {name}: unknown node {node!r}")
            addrs = [addrs] if isinstance(addrs, str) else list(addrs or [])
            norm[node] = [_check_addr(a) for a in addrs]
        gateway = dict(gateway or {})
        for node, hop in gateway.items():
            if node not in norm:
                raise HarnessError(f"link {name}: gateway for non-member {node!r}")
            _check_addr(hop)
        if len(norm) < 2:
            raise HarnessError(f"link {name}: needs at least two members")
        self.links.append(_Link(name, norm, gateway))
        return self


class Node:
    """A running machine or namespace. `run`/`popen` take argv lists (never a shell string)."""

    def __init__(self, cluster, spec, ns):
        self.cluster = cluster
        self.name = spec.name
        self.spec = spec
        self.ns = ns
        self.leader = None  # host pid of the machine's PID 1
        self.nspawn = None  # Popen of systemd-nspawn
        self.machine_name = None
        self.log_path = None

    @property
    def is_machine(self):
        return self.spec.kind == "machine"

    def _prefix(self):
        if self.is_machine:
            return ["nsenter", "-t", str(self.leader), "-a", "--"]
        return ["ip", "netns", "exec", self.ns]

    def run(self, argv, check=True, input=None, timeout=60):
        """Run argv inside the node; returns CompletedProcess(text). Raises HarnessError if check and rc != 0."""
        if isinstance(argv, str):
            raise TypeError("argv must be a list")
        env = CLEAN_ENV if self.is_machine else None
        res = subprocess.run(
            self._prefix() + list(argv), input=input, capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and res.returncode != 0:
            raise HarnessError(
                f"[{self.name}] {' '.join(argv)} rc={res.returncode}: {(res.stderr or res.stdout).strip()[-2000:]}"
            )
        return res

    def wait_ping(self, addr, timeout=30):
        """True once ADDR answers one echo (retried, 1 s each, until TIMEOUT): a single echo lost on a loaded box,
        or a WireGuard handshake still under way, is not a failure; an address that never answers is."""
        deadline = time.monotonic() + timeout
        while True:
            if self.run(["ping", "-n", "-c", "1", "-W", "1", addr], check=False, timeout=10).returncode == 0:
                return True
            if time.monotonic() >= deadline:
                return False

    def popen(self, argv, **kw):
        """Start argv in the node in the background (own session); the cluster kills it at teardown."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        if self.is_machine:
            kw.setdefault("env", CLEAN_ENV)
        p = subprocess.Popen(self._prefix() + list(argv), start_new_session=True, **kw)
        self.cluster._procs.append(p)
        return p

    def read_file(self, path):
        return self.run(["cat", "--", path]).stdout

    def write_file(self, path, text, mode=0o644):
        self.run(["install", "-D", "-m", "%o" % mode, "/dev/stdin", path], input=text)

    def file_mode(self, path):
        out = self.run(["stat", "-c", "%a %U", "--", path]).stdout.split()
        return int(out[0], 8), out[1]


class PlaybookResult(subprocess.CompletedProcess):
    def recap(self):
        """Parse PLAY RECAP into {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}."""
        out = {}
        in_recap = False
        for line in self.stdout.splitlines():
            if line.startswith("PLAY RECAP"):
                in_recap = True
                continue
            if in_recap and ":" in line:
                host, _, rest = line.partition(":")
                out[host.strip()] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)}
        return out


class Cluster:
    """A booted topology. Index it by node name; `teardown()` is idempotent."""

    def __init__(self, topology, rootfs, ansible_env=None, workdir=None, boot_timeout=90):
        self.topology = topology
        self.rootfs = os.path.realpath(rootfs)
        self.ansible_env = ansible_env
        self.tag = f"{os.getpid()}-{next(_counter)}"
        self.workdir = workdir or tempfile.mkdtemp(prefix=f"{PREFIX}{self.tag}-")
        self.boot_timeout = boot_timeout
        self.nodes: dict[str, Node] = {}
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self.inventory_path = os.path.join(self.workdir, "inventory.yml")

    # -- lifecycle --------------------------------------------------------------------------------------
    def _ns_name(self, name):
        return f"{PREFIX}{self.tag}-{name}"

    def _add_ns(self, name):
        ns = self._ns_name(name)
        _sh(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def start(self):
        cleanup_stale()
        if not os.path.isfile(os.path.join(self.rootfs, "usr", "bin", "systemctl")):
            raise HarnessError(f"rootfs {self.rootfs} is not built: run scripts/build-rootfs.sh")
        try:
            for spec in self.topology.nodes.values():
                self.nodes[spec.name] = Node(self, spec, self._add_ns(spec.name))
            for link in self.topology.links:
                self._wire(link)
            for node in self.nodes.values():
                if node.is_machine:
                    self._boot(node)
            deadline = time.monotonic() + self.boot_timeout
            for node in self.nodes.values():
                if node.is_machine:
                    self._wait(node, deadline)
            self._write_inventory()
        except BaseException:
            self.teardown()
            raise
        return self

    def _wire(self, link):
        members = list(link.members)
        if len(members) == 2:
            a, b = (self.nodes[m] for m in members)
            _sh(["ip", "link", "add", "name", link.name, "netns", a.ns, "type", "veth",
                 "peer", "name", link.name, "netns", b.ns])  # fmt: skip
        else:
            sw = self._add_ns(f"sw{len(self._namespaces)}")
            _sh(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
            _sh(["ip", "-n", sw, "link", "set", "br0", "up"])
            for i, m in enumerate(members):
                port = f"p{i}"
                _sh(["ip", "link", "add", "name", link.name, "netns", self.nodes[m].ns, "type", "veth",
                     "peer", "name", port, "netns", sw])  # fmt: skip
                _sh(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
        for m, addrs in link.members.items():
            ns = self.nodes[m].ns
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                _sh(["ip", "-n", ns, "addr", "add", addr, "dev", link.name, *extra])
            _sh(["ip", "-n", ns, "link", "set", link.name, "up"])
        for m, hop in link.gateway.items():
            fam = "-6" if ":" in hop else "-4"
            _sh(["ip", "-n", self.nodes[m].ns, fam, "route", "add", "default", "via", hop, "dev", link.name])

    def _boot(self, node):
        node.machine_name = f"{PREFIX}{self.tag}-{node.name}"
        node.log_path = os.path.join(self.workdir, f"{node.name}.console.log")
        argv = [
            "systemd-nspawn", "-q", "-b", "-D", self.rootfs, "--volatile=overlay",
            "-M", node.machine_name, f"--hostname={node.name}",
            "--keep-unit", "--register=no", f"--network-namespace-path=/run/netns/{node.ns}",
            "--capability=CAP_NET_ADMIN", "--bind=/dev/net/tun", "--console=passive",
        ]  # fmt: skip
        argv += [f"--bind-ro={s}:{d}" if ro else f"--bind={s}:{d}" for s, ro, d in node.spec.binds]
        argv += ["--"] + [f"systemd.mask={u}" for u in node.spec.mask]
        # /proc/sys/net writable inside the machine (it is the machine's own network namespace, never the
        # host's): ip_forward and the other per-netns sysctls that ufw and the roles set
        env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
        with open(node.log_path, "w") as log:
            node.nspawn = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env
            )

    def _wait(self, node, deadline):
        state = "?"
        while time.monotonic() < deadline:
            if node.nspawn.poll() is not None:
                raise HarnessError(f"machine {node.name} exited rc={node.nspawn.returncode}: {self._log_tail(node)}")
            # the container's PID 1 is the nspawn child running systemd (nspawn may fork short-lived helpers)
            node.leader = None
            for kid in _sh(["pgrep", "-P", str(node.nspawn.pid)], check=False).stdout.split():
                try:
                    with open(f"/proc/{kid}/comm") as f:
                        if f.read().strip() == "systemd":
                            node.leader = int(kid)
                            break
                except OSError:
                    continue
            if node.leader is not None:
                r = subprocess.run(["nsenter", "-t", str(node.leader), "-a", "systemctl", "is-system-running"],
                                   capture_output=True, text=True, env=CLEAN_ENV)  # fmt: skip
                state = r.stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise HarnessError(f"machine {node.name} not up in time (state {state!r}): {self._log_tail(node)}")

    @staticmethod
    def _log_tail(node):
        try:
            with open(node.log_path) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def _write_inventory(self):
        groups: dict[str, dict] = {}
        hosts = {}
        for node in self.nodes.values():
            if not node.is_machine:
                continue
            hv = {
                "ansible_connection": "community.docker.nsenter",
                "ansible_nsenter_pid": node.leader,
                "ansible_python_interpreter": "/usr/bin/python3",
            }
            hv.update(node.spec.hostvars)
            hosts[node.name] = hv
            for g in node.spec.groups:
                groups.setdefault(g, {"hosts": {}})["hosts"][node.name] = {}
        inv = {"all": {"hosts": hosts, "children": groups}}
        with open(self.inventory_path, "w") as f:
            yaml.safe_dump(inv, f, sort_keys=False)

    def teardown(self):
        for p in self._procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self._procs = []
        machines = [n for n in self.nodes.values() if n.nspawn is not None]
        for n in machines:
            if n.nspawn.poll() is None:
                n.nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container to power off
        deadline = time.monotonic() + 15
        for n in machines:
            try:
                n.nspawn.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(n.nspawn.pid, signal.SIGKILL)
                n.nspawn.wait()
            if n.leader:
                _kill_pid(n.leader)
        for ns in reversed(self._namespaces):
            _delete_ns(ns)
        self._namespaces = []
        for n in machines:
            _remove_nspawn_run(n.machine_name)
            n.nspawn = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- use ---------------------------------------------------------------------------------------------
    def __getitem__(self, name) -> Node:
        return self.nodes[name]

    def playbook(self, playbook, extravars_file=None, check=False, diff=False, limit=None, extra_args=(),
                 env=None, timeout=600, inventory=None):  # fmt: skip
        """Run ansible-playbook against the cluster's inventory (env: the `ansible_env` fixture)."""
        env = dict(env or self.ansible_env or os.environ)
        argv = [os.path.join(support_env.VENV_BIN, "ansible-playbook"), "-i", inventory or self.inventory_path]
        if extravars_file:
            argv += ["-e", "@" + extravars_file]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if limit:
            argv += ["--limit", limit]
        argv += list(extra_args) + [playbook]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=support_env.REPO)
        return PlaybookResult(r.args, r.returncode, r.stdout + r.stderr, r.stderr)


def _kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _delete_ns(ns):
    pids = _sh(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        _kill_pid(int(pid))
    for _ in range(50):
        if not _sh(["ip", "netns", "pids", ns], check=False).stdout.split():
            break
        time.sleep(0.05)
    _sh(["ip", "netns", "delete", ns], check=False)


def _remove_nspawn_run(machine_name):
    if not machine_name:
        return
    for sub in ("propagate", "unix-export"):
        shutil.rmtree(os.path.join(NSPAWN_RUN, sub, machine_name), ignore_errors=True)
    subs = [os.path.join(NSPAWN_RUN, d) for d in ("propagate", "unix-export", "locks")]
    for d in subs + [NSPAWN_RUN]:
        try:
            os.rmdir(d)  # only when empty: another session may be using it
        except OSError:
            pass


def cleanup_stale():
    """Remove namespaces (and nspawn leftovers) of test processes that no longer exist."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for ns in names:
        m = re.match(rf"^{re.escape(PREFIX)}(\d+)-\d+-", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _delete_ns(ns)
            _remove_nspawn_run(ns)


def dump_json(obj):
    return json.dumps(obj, indent=2, sort_keys=True)
