#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: local_network
short_description: The local instance's VPN and gateway host, a network namespace with its own /etc
version_added: "0.1.0"
description:
  - Brings up, for one instance directory, a network namespace C(bq-<8 hex digits of the directory's hash>) with
    a bridge C(bqlan0) at 203.0.113.1/24 that client namespaces attach to, and an anchor process in it that
    holds a private mount namespace where C(/etc) is an overlay (writes land under C(HOME/network/etc), never in
    the host's C(/etc)) and C(/run) is a tmpfs. The playbooks reach this host with the
    C(community.docker.nsenter) connection on the anchor's PID, so wireguard-go and ufw run there like on any host.
  - With O(forward_port), a forwarder on the host's 127.0.0.1:PORT connects into the namespace's 127.0.0.1:PORT
    (the local PostgreSQL runs inside the namespace so VPN peers reach it with their own addresses).
  - The namespace's loopback carries the instance's marker (its interface alias, C(berqenas-local <SHA-256 of the
    directory>)). A namespace of that name without this instance's marker (another instance whose directory hashes
    alike, or something else) is refused on V(started) and left alone on V(stopped) and V(absent) (a warning).
  - Every step of V(started) runs only when its result is missing, so a start cut off half-way (Ctrl-C) is completed
    by the next one, and V(absent) removes what it left (the instance directory too when nothing else is in it).
  - Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root); without them it fails before touching anything.
  - The host's firewall, routes, interfaces and C(/etc) are not touched.
options:
  home:
    description: The instance directory (absolute; no C(,) or C(:), which overlayfs options cannot carry).
    type: path
    required: true
  state:
    description:
      - V(started) creates what is missing; V(stopped) ends every process in the namespace and deletes it
        (the namespace's C(/etc) stays under the instance directory); V(absent) also removes that directory.
    type: str
    choices: [started, stopped, absent]
    default: started
  forward_port:
    description: Forward the host's 127.0.0.1:PORT to the namespace's 127.0.0.1:PORT.
    type: int
attributes:
  check_mode:
    support: full
    description: Reports whether something would be created or removed, touching nothing.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: A second run with the same arguments changes nothing.
requirements: [iproute2, util-linux (unshare), overlayfs]
author:
  - berqenas platform team (@berqenas)
"""

EXAMPLES = r"""
- name: The local VPN and gateway host
  berqenas.platform.local_network:
    home: /srv/berqenas
    forward_port: 54321
"""

RETURN = r"""
netns:
  description: The namespace's name.
  returned: always
  type: str
  sample: bq-1a2b3c4d
anchor_pid:
  description: PID of the anchor process (the nsenter connection's target); null when stopped.
  returned: always
  type: int
endpoint:
  description: The address clients reach the WireGuard port at (on the bridge).
  returned: always
  type: str
  sample: 203.0.113.1
layout:
  description: Every name and path derived from the instance directory (module_utils/localnet.py).
  returned: always
  type: dict
"""

import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import threading
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.berqenas.platform.plugins.module_utils.localnet import (
    LocalNetError, effective_capabilities, layout, owner, privilege_problem)

CLONE_NEWNET = 0x40000000
ANCHOR_SCRIPT = ('mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc'
                 ' && mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 1777 /run/lock'
                 ' && echo $$ > "$3" && exec sleep infinity')


def _pidfile(pidfile):
    """(pid, the rest of the line) of a pid file whose process lives, else (None, None)."""
    try:
        with open(pidfile) as f:
            words = f.read().split()
        pid = int(words[0])
        os.kill(pid, 0)
        return pid, words[1:]
    except (OSError, ValueError, IndexError):
        return None, None


def _alive(pidfile):
    return _pidfile(pidfile)[0]


def _in_netns(module, pid, netns):
    """Whether process PID is in namespace NETNS (a pid file's PID may be another process's by now: a reboot)."""
    if not pid or not _netns_exists(netns):
        return False
    rc, out, dummy = module.run_command(["ip", "netns", "identify", str(pid)])
    return rc == 0 and netns in out.split()  # rc 1: the process ended meanwhile


def _ours(module, lay, pidfile):
    """The PID in PIDFILE when that process lives and is in the instance's namespace, else None."""
    pid = _alive(pidfile)
    return pid if _in_netns(module, pid, lay["netns"]) else None


def _netns_exists(name):
    return os.path.exists(os.path.join("/run/netns", name))


def _run(module, argv):
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg="local network: %s failed (rc=%d): %s" % (argv[0], rc, err.strip()))
    return out


def _json(module, argv):
    return json.loads(_run(module, argv) or "[]")


def _wait(cond, what, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise LocalNetError("local network: %s not ready after %ss" % (what, timeout))


def _ownership(module, lay, home):
    """None when the namespace does not exist, else "ours" or "foreign" (module_utils/localnet.owner). An
    unmarked one is ours when our anchor runs in it (made before markers existed) or when it holds nothing but
    its loopback and our bridge (a start cut off before the marker)."""
    netns = lay["netns"]
    if not _netns_exists(netns):
        return None
    links = _json(module, ["ip", "-n", netns, "-j", "link", "show"])
    lo = [link for link in links if link.get("ifname") == "lo"]
    who = owner(lo[0].get("ifalias") if lo else "", home)
    if who != "unmarked":
        return who
    if _ours(module, lay, lay["anchor_pidfile"]):
        return "ours"
    empty = not _run(module, ["ip", "netns", "pids", netns]).split()
    return "ours" if empty and {link.get("ifname") for link in links} <= {"lo", lay["bridge"]} else "foreign"


def _foreign(lay):
    return ("local network: namespace %s exists and is not this instance's (its loopback does not carry the marker "
            "%r): another berqenas instance whose directory hashes alike, or something else; remove it "
            "(ip netns del %s) or use another instance directory" % (lay["netns"], lay["marker"], lay["netns"]))


def _ensure_links(module, lay):
    """The loopback (with the marker) and the bridge with its address, all up: each step only when missing, so a
    start cut off half-way (Ctrl-C) is completed by the next one."""
    changed = False
    ns = ["ip", "-n", lay["netns"]]
    links = {link.get("ifname"): link for link in _json(module, ns + ["-j", "link", "show"])}
    if (links.get("lo") or {}).get("ifalias") != lay["marker"]:
        _run(module, ns + ["link", "set", "lo", "alias", lay["marker"]])
        changed = True
    if lay["bridge"] not in links:
        _run(module, ns + ["link", "add", lay["bridge"], "type", "bridge"])
        changed = True
    addr, plen = lay["underlay_address"].split("/")
    info = _json(module, ns + ["-j", "addr", "show", "dev", lay["bridge"]])
    have = [(a.get("local"), a.get("prefixlen")) for i in info for a in i.get("addr_info", [])]
    if (addr, int(plen)) not in have:
        _run(module, ns + ["addr", "add", lay["underlay_address"], "dev", lay["bridge"]])
        changed = True
    for dev in ("lo", lay["bridge"]):
        if "UP" not in (links.get(dev) or {}).get("flags", []):
            _run(module, ns + ["link", "set", dev, "up"])
            changed = True
    return changed


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(listener, port):
    """The forwarder (a daemon child, already in the namespace): accept on the host, connect inside it."""
    while True:
        client = listener.accept()[0]
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _start_forwarder(module, lay, port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        raise LocalNetError("local network: the host's 127.0.0.1:%d (this instance's PostgreSQL port) is taken by "
                            "another process; `berqenas local down` then `local up` moves PostgreSQL to a free port"
                            % port)
    listener.listen(128)
    pid = os.fork()
    if pid == 0:  # first child: a new session, then the daemon in a grandchild
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for n in (0, 1, 2):
                os.dup2(null, n)
            # into the namespace before the pid file exists: a forwarder without one (its start cut off) is still
            # one of the namespace's processes, which stopping ends
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join("/run/netns", lay["netns"]), os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(1)
            os.close(fd)
            fd = os.open(lay["forward_pidfile"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, ("%d %d" % (os.getpid(), port)).encode())
            os.close(fd)
            _serve(listener, port)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    listener.close()
    _wait(lambda: _ours(module, lay, lay["forward_pidfile"]), "forwarder")


def _spawn(argv):
    """Start ARGV detached (its own session, stdio on /dev/null), never waited for: the anchor lives on."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for n in (0, 1, 2):
                os.dup2(null, n)
            os.closerange(3, 65536)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def _end(pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    _wait(lambda: not _exists(pid), "end of process %d" % pid, timeout=10)


def _exists(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _stop(module, lay, home):
    changed = False
    who = _ownership(module, lay, home)
    if who == "foreign":
        module.warn(_foreign(lay) + "; left as it is")
    elif who == "ours":
        out = _run(module, ["ip", "netns", "pids", lay["netns"]])
        pids = [int(p) for p in out.split()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in pids:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
            deadline = time.time() + 10
            while time.time() < deadline and _run(module, ["ip", "netns", "pids", lay["netns"]]).split():
                time.sleep(0.05)
        _run(module, ["ip", "netns", "del", lay["netns"]])
        changed = True
    for f in (lay["anchor_pidfile"], lay["forward_pidfile"]):
        if os.path.exists(f):
            os.unlink(f)
    return changed


def _start(module, lay, home, forward_port):
    changed = False
    if not _netns_exists(lay["netns"]):
        _run(module, ["ip", "netns", "add", lay["netns"]])
        changed = True
    if _ownership(module, lay, home) == "foreign":
        raise LocalNetError(_foreign(lay))
    if not os.path.isdir(home):
        os.makedirs(home, 0o700)
    changed = _ensure_links(module, lay) or changed
    if not _ours(module, lay, lay["anchor_pidfile"]):
        for d in (lay["dir"], lay["etc_upper"], lay["etc_work"]):
            if not os.path.isdir(d):
                os.makedirs(d, 0o700)
        _spawn(["ip", "netns", "exec", lay["netns"], "unshare", "--mount", "--propagation", "private",
                "sh", "-c", ANCHOR_SCRIPT, "sh", lay["etc_upper"], lay["etc_work"], lay["anchor_pidfile"]])
        _wait(lambda: _ours(module, lay, lay["anchor_pidfile"]), "anchor process")
        changed = True
    if forward_port:
        pid, rest = _pidfile(lay["forward_pidfile"])
        if not _in_netns(module, pid, lay["netns"]):
            pid = None  # not the forwarder (a stale pid file): never signalled
        if pid and rest != [str(forward_port)]:  # forwarding a port PostgreSQL left (it moved to a free one)
            _end(pid)
            pid = None
        if not pid:
            _start_forwarder(module, lay, forward_port)
            changed = True
    return changed


def main():
    module = AnsibleModule(argument_spec=dict(
        home=dict(type="path", required=True),
        state=dict(type="str", default="started", choices=["started", "stopped", "absent"]),
        forward_port=dict(type="int"),
    ), supports_check_mode=True)
    p = module.params
    home = os.path.abspath(p["home"])
    if "," in home or ":" in home:
        module.fail_json(msg="local network: instance directory %s: ',' and ':' are not allowed" % home)
    if p["forward_port"] is not None and not 1024 <= p["forward_port"] <= 65535:
        module.fail_json(msg="local network: forward_port %s out of range 1024-65535" % p["forward_port"])
    try:
        lay = layout(home)
        # stopping or removing what does not exist needs no privileges (`local down` of a --no-network instance)
        needed = p["state"] == "started" or _netns_exists(lay["netns"])
        problem = privilege_problem(effective_capabilities())
        if problem and needed and not module.check_mode:
            module.fail_json(msg="local network: " + problem + " (in a playbook: local_platform_network: false)")
        up = _ours(module, lay, lay["anchor_pidfile"]) and (
            not p["forward_port"] or _ours(module, lay, lay["forward_pidfile"]))
        if module.check_mode:
            changed = not up if p["state"] == "started" else (
                _netns_exists(lay["netns"]) or (p["state"] == "absent" and os.path.exists(lay["dir"])))
        elif p["state"] == "started":
            changed = _start(module, lay, home, p["forward_port"])
        else:
            changed = _stop(module, lay, home)
            if p["state"] == "absent" and os.path.exists(lay["dir"]):
                shutil.rmtree(lay["dir"])
                changed = True
            if p["state"] == "absent" and os.path.isdir(home) and not os.listdir(home):
                os.rmdir(home)  # what a start cut off before anything else left: the directory it made
                changed = True
    except LocalNetError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, netns=lay["netns"], endpoint=lay["endpoint"], layout=lay,
                     anchor_pid=_ours(module, lay, lay["anchor_pidfile"]))


if __name__ == "__main__":
    main()
