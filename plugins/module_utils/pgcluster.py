# -*- coding: utf-8 -*-
# Copyright: berqenas.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throwaway PostgreSQL cluster run by an unprivileged user.

Shared by the ``local_postgres`` module (the embedded default behind ``berqenas local``) and
by the test harness, so both start PostgreSQL the same way:

* ``initdb`` + ``pg_ctl`` run as ``postgres`` when we are root (PostgreSQL refuses root);
* data and socket directories live where that user can reach them, even when the caller's
  home or checkout is under a 0700 directory; the socket directory is 0700, so only its owner
  and root can connect, and local connections are ``trust`` there;
* TCP on 127.0.0.1 only, ``scram-sha-256`` for every host connection.

Commands are argument lists (never a shell). Pure except for the process/file work it exists for.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import time


class ClusterError(Exception):
    """A cluster operation failed; the message says which and why."""


def pg_bindir():
    """Return the newest PostgreSQL server bin directory installed (Debian layout first)."""
    env = os.environ.get("BERQENAS_PG_BINDIR")
    if env:
        return env
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if cands:
        return os.path.dirname(cands[-1])
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise ClusterError("find PostgreSQL: no initdb found (install postgresql-15)")


def free_port(host="127.0.0.1"):
    """Ask the kernel for a free TCP port on host."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_free(port, host="127.0.0.1"):
    """Whether a listener could bind HOST:PORT now (SO_REUSEADDR, as PostgreSQL and the local forwarder bind)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _run_user():
    """The user that runs the server: postgres when we are root, else ourselves."""
    if os.geteuid() == 0:
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError("start PostgreSQL: running as root and no 'postgres' system user exists")
    return pwd.getpwuid(os.geteuid())


class Cluster:
    """One cluster described by its directories; ``state_file`` records them as JSON."""

    def __init__(self, base_dir, port=None, socket_dir=None, superuser="postgres", extra_conf=None):
        self.base_dir = os.path.abspath(base_dir)
        self.data_dir = os.path.join(self.base_dir, "data")
        self.socket_dir = socket_dir or os.path.join(self.base_dir, "sock")
        self.log_file = os.path.join(self.base_dir, "server.log")
        self.port = port
        self.superuser = superuser
        self.extra_conf = dict(extra_conf or {})
        self.bindir = pg_bindir()
        self.user = _run_user()
        if len(os.path.join(self.socket_dir, ".s.PGSQL.65535")) > 107:
            raise ClusterError("start PostgreSQL: socket path too long (over 107 bytes): %s" % self.socket_dir)

    # -- helpers -------------------------------------------------------------------------
    def _cmd(self, argv, check=True, timeout=120, netns=None):
        name = os.path.basename(argv[0])
        if os.geteuid() == 0 and self.user.pw_uid != 0:
            argv = ["runuser", "-u", self.user.pw_name, "--"] + argv
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              cwd="/", check=False, env=dict(os.environ, LC_ALL="C.UTF-8"))
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise ClusterError("%s failed (rc=%d): %s" % (name, proc.returncode, err))
        return proc

    def _own(self, path, mode):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        os.chown(path, self.user.pw_uid, self.user.pw_gid) if os.geteuid() == 0 else None

    @property
    def initialized(self):
        return os.path.isfile(os.path.join(self.data_dir, "PG_VERSION"))

    def running(self):
        if not self.initialized:
            return False
        proc = self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "status"], check=False)
        return proc.returncode == 0

    # -- lifecycle -----------------------------------------------------------------------
    def init(self):
        """initdb if needed; returns True when it created the cluster."""
        if self.initialized:
            return False
        # every parent must be traversable by the server user; base itself is 0700 and owned by it
        self._own(self.base_dir, 0o700)
        self._own(self.socket_dir, 0o700)
        self._cmd([os.path.join(self.bindir, "initdb"), "-D", self.data_dir, "-U", self.superuser,
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
        conf = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "'%s'" % self.socket_dir,
                "password_encryption": "'scram-sha-256'", "fsync": "off", "synchronous_commit": "off",
                "full_page_writes": "off", "max_connections": "200", "shared_buffers": "'128MB'"}
        conf.update(self.extra_conf)
        with open(os.path.join(self.data_dir, "postgresql.auto.conf"), "a") as f:
            for k, v in sorted(conf.items()):
                f.write("%s = %s\n" % (k, v))
        return True

    def start(self, wait=30, netns=None):
        """Start if not running (in network namespace NETNS when given); returns True when it started it."""
        if self.running():
            return False
        if not self.port:
            self.port = free_port()
        self._own(self.socket_dir, 0o700)
        options = "-p %d" % int(self.port)
        if netns:  # inside the local network host: every address of that namespace (loopback, VPN, bridge)
            options += " -c listen_addresses=*"
        self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "-l", self.log_file, "-w",
                   "-t", str(wait), "-o", options, "start"], timeout=wait + 30, netns=netns)
        return True

    def stop(self):
        if not self.running():
            return False
        self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "stop"])
        return True

    def purge(self):
        """Stop and remove every directory this cluster created."""
        self.stop()
        existed = os.path.exists(self.base_dir) or os.path.exists(self.socket_dir)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        return existed

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            proc = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-h", self.socket_dir, "-p",
                                   str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
            if proc.returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError("start PostgreSQL: not ready after %ss (log: %s)" % (timeout, self.log_file))

    def conninfo(self, dbname="postgres"):
        """Keyword args for psycopg.connect() as the superuser over the socket (no password)."""
        return {"host": self.socket_dir, "port": int(self.port), "user": self.superuser, "dbname": dbname}

    def describe(self):
        return {"base_dir": self.base_dir, "data_dir": self.data_dir, "socket_dir": self.socket_dir,
                "port": self.port, "superuser": self.superuser, "log_file": self.log_file}

    def save(self, path):
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.describe(), f, indent=2, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            d = json.load(f)
        return cls(d["base_dir"], port=d.get("port"), socket_dir=d["socket_dir"], superuser=d["superuser"])
