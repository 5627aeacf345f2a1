"""`local up` cut off while it builds its namespace, and a namespace of that name that is not the instance's.

Ctrl-C (SIGINT) as soon as the instance's namespace exists: exit code 130, and `local down --purge` then leaves
no namespace, link, process, mount or file of that home (SIGTERM followed by a `local up` that completes is in
test_local_side_by_side.py, which needs that instance up anyway). A namespace named like the instance's but
without its marker (another instance whose directory hashes alike) makes `local up` fail with exit code 1 naming
it, and `local down --purge` leaves it alone."""

import os
import signal
import subprocess

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import localnet

from tests.support import local_instances as li
from tests.support.cli import Cli

pytestmark = pytest.mark.local


def test_sigint_during_namespace_setup_exits_130_and_down_purge_leaves_nothing(test_home, ansible_env):
    home = os.path.join(test_home, "cancel-netns")
    lay = localnet.layout(home)
    cli = Cli(ansible_env, home)
    assert lay["netns"] not in li.namespaces()
    purged = False
    try:
        rc, answer, stderr = li.cancel_during_namespace_setup(cli.env, lay, signal.SIGINT)
        assert rc == 130 and answer["status"] == "canceled", (rc, answer, stderr)
        cli("local", "down", "--purge", "--json")
        purged = True
        assert lay["netns"] not in li.namespaces()
        assert [n for n in li.host_links() if lay["id"][:6] in n] == []  # (other sessions' links come and go)
        assert not os.path.exists(home), os.listdir(home)  # the directory the cut-off start made, too
        assert li.cluster_dirs(home) == []
        assert [m for m in li.mounts() if lay["netns"] in m or home in m] == []
        assert [c for c in li.cmdlines().values() if home in c or lay["netns"] in c] == []
    finally:
        if not purged:
            cli("local", "down", "--purge", "--json", check=False, timeout=300)


def test_a_namespace_without_the_instance_marker_is_refused_and_left_alone(test_home, ansible_env):
    home = os.path.join(test_home, "taken-netns")
    lay = localnet.layout(home)
    cli = Cli(ansible_env, home)
    other = localnet.owner_marker(os.path.join(test_home, "some-other-instance"))
    li.out(["ip", "netns", "add", lay["netns"]])
    purged = False
    try:
        li.out(["ip", "-n", lay["netns"], "link", "set", "lo", "alias", other])
        li.out(["ip", "-n", lay["netns"], "link", "add", "bqother0", "type", "bridge"])
        res = cli("local", "up", "--json", check=False)
        assert res.rc == 1, res
        msg = res.json["error"]
        assert f"namespace {lay['netns']} exists and is not this instance's" in msg, msg
        assert li.cluster_dirs(home) == []  # refused before PostgreSQL
        cli("local", "down", "--purge", "--json")
        purged = True
        links = li.netns_links(lay["netns"])  # still there, untouched
        assert set(links) == {"lo", "bqother0"} and links["lo"].get("ifalias") == other, links
        assert not os.path.exists(home)
    finally:
        subprocess.run(["ip", "netns", "del", lay["netns"]], capture_output=True, timeout=60)
        if not purged:
            cli("local", "down", "--purge", "--json", check=False, timeout=300)
