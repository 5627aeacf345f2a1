# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WireGuard host side of the wireguard_server module: files, the host lock, key tools, QR codes and the
running interface (wg, wg-quick, systemctl, ip).

The WireGuard work that decides what to do is pure and lives in module_utils/wireguard.py (``plan``); this
file only reads and changes the host. Secrets go to 0600 files written atomically and to ``wg`` on stdin or
from a 0600 file, never on a command line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import io
import os
import tempfile
import time
import traceback

from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wgu

try:
    import segno

    HAS_SEGNO = True
    SEGNO_IMPORT_ERROR = None
except ImportError:
    HAS_SEGNO = False
    SEGNO_IMPORT_ERROR = traceback.format_exc()


class WgToolKeys(object):
    """Fallback key generation through wg(8): keys pass on stdin/stdout only."""

    def __init__(self, module):
        self.module = module

    def private(self):
        rc, out, err = self.module.run_command(["wg", "genkey"], check_rc=True)
        return out.strip()

    def pair(self):
        priv = self.private()
        return priv, self.public(priv)

    def public(self, private_b64):
        rc, out, err = self.module.run_command(["wg", "pubkey"], data=private_b64, check_rc=True)
        return out.strip()


def read_text(path):
    """The text of ``path``, or None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except (IOError, OSError):
        return None


class HostFiles(object):
    """The host's files as ``wireguard.plan`` reads them (a dict stands in for it in unit tests)."""

    read = staticmethod(read_text)
    exists = staticmethod(os.path.exists)

    @staticmethod
    def listdir(path):
        return os.listdir(path) if os.path.isdir(path) else []


def write_secret(path, text_or_bytes, sync=True, mode=0o600):
    """Atomically write a 0600 (or ``mode``) file (temp file in the same directory, then rename); fsync unless
    sync=False."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        data = text_or_bytes.encode("utf-8") if not isinstance(text_or_bytes, bytes) else text_or_bytes
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = None
        os.rename(tmp, path)
    finally:
        if fd is not None:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_dir(path, mode=0o700):
    if not os.path.isdir(path):
        os.makedirs(path, mode)
    os.chmod(path, mode)


class Lock(object):
    """flock on a file of the interface's state directory, held by every apply and by the expiry helper."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.time() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError):
                if time.time() > deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise
                time.sleep(0.2)

    def __exit__(self, *a):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def qr_outputs(text):
    """(png bytes, terminal text) of a client config (needs segno: check HAS_SEGNO first)."""
    qr = segno.make(text, micro=False)
    png = io.BytesIO()
    qr.save(png, kind="png", scale=4)
    term = io.StringIO()
    try:
        qr.terminal(out=term, compact=True)
    except TypeError:
        qr.terminal(out=term)
    return png.getvalue(), term.getvalue()


class Clock(object):
    """Seconds spent per phase, returned as the module's ``timings`` (the benchmark reads them)."""

    def __init__(self):
        self.laps = {}
        self.t = time.time()

    def lap(self, name):
        now = time.time()
        self.laps[name] = round(now - self.t, 4)
        self.t = now


class Runtime(object):
    """The running interface: inspect, start, restart, syncconf, routes, enabled at boot."""

    def __init__(self, module, name, manager):
        self.module = module
        self.name = name
        if manager == "auto":
            manager = "systemd" if os.path.isdir("/run/systemd/system") else "wg-quick"
        self.manager = manager

    def exists(self):
        return os.path.exists("/sys/class/net/%s" % self.name)

    def dump(self):
        rc, out, err = self.module.run_command(["wg", "show", self.name, "dump"])
        if rc != 0:
            return None, {}
        return wgu.parse_dump(out)

    def implementation(self):
        if not self.exists():
            return "unknown"
        rc, out, err = self.module.run_command(["ip", "-d", "link", "show", "dev", self.name])
        return "kernel" if " wireguard " in out + " " else "wireguard-go"

    def run(self, argv):
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            self.module.fail_json(msg="apply wireguard interface %s: %s failed: %s"
                                  % (self.name, " ".join(argv[:3]), (err or out).strip()[-800:]))

    def start(self, restart=False):
        if self.manager == "systemd":
            self.run(["systemctl", "restart", self.unit()])
        else:
            if restart and self.exists():
                self.run(["wg-quick", "down", self.name])
            # own session: wireguard-go must outlive this task
            self.run(["setsid", "-w", "wg-quick", "up", self.name])

    def unit(self):
        return "wg-quick@%s.service" % self.name

    def enabled_at_boot(self):
        rc, out, err = self.module.run_command(["systemctl", "is-enabled", self.unit()])
        return out.strip() == "enabled"

    def enable_at_boot(self):
        self.run(["systemctl", "enable", self.unit()])

    def routes(self):
        """Routes this module added to the interface (proto static), as network strings."""
        out = set()
        if not self.exists():
            return out
        for fam in ("-4", "-6"):
            rc, text, err = self.module.run_command(["ip", fam, "route", "show", "dev", self.name, "proto", "static"])
            for line in text.splitlines():
                if line.strip():
                    dest = line.split()[0]
                    if "/" not in dest:
                        dest += "/32" if fam == "-4" else "/128"
                    out.add(dest)
        return out

    def set_routes(self, wanted):
        have = self.routes()
        for net in sorted(wanted - have):
            self.run(["ip", "route", "replace", net, "dev", self.name, "proto", "static"])
        for net in sorted(have - wanted):
            self.run(["ip", "route", "del", net, "dev", self.name, "proto", "static"])

    def syncconf(self, native_conf, workdir):
        """``wg syncconf`` from a temporary 0600 file in ``workdir`` (keys never on a command line)."""
        fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".sync-", suffix=".conf")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, native_conf.encode("utf-8"))
            os.close(fd)
            fd = None
            self.run(["wg", "syncconf", self.name, tmp])
        finally:
            if fd is not None:
                os.close(fd)
            os.unlink(tmp)
