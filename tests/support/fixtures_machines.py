"""Fixtures for multi-host tests on systemd-nspawn machines (API: tests/support/machines.py).

- ``machine_rootfs`` (session): path of the rootfs, built or refreshed by scripts/build-rootfs.sh.
- ``machines`` (function) / ``machines_module`` (module): factory ``boot(topology) -> Cluster``; every
  cluster it booted is torn down when the fixture's scope ends, even after a failure.
"""

import os
import subprocess

import pytest

from tests.support import env as support_env
from tests.support.machines import Cluster


@pytest.fixture(scope="session")
def machine_rootfs():
    script = os.path.join(support_env.REPO, "scripts", "build-rootfs.sh")
    subprocess.run(["bash", script], check=True, timeout=900)
    return subprocess.run(["bash", script, "--print-path"], check=True, capture_output=True, text=True).stdout.strip()


def _factory(rootfs, env):
    clusters = []

    def boot(topology, **kw):
        cluster = Cluster(topology, rootfs, ansible_env=env, **kw)
        clusters.append(cluster)
        return cluster.start()

    return boot, clusters


@pytest.fixture
def machines(machine_rootfs, ansible_env):
    boot, clusters = _factory(machine_rootfs, ansible_env)
    yield boot
    for c in clusters:
        c.teardown()


@pytest.fixture(scope="module")
def machines_module(machine_rootfs, ansible_env):
    boot, clusters = _factory(machine_rootfs, ansible_env)
    yield boot
    for c in clusters:
        c.teardown()
