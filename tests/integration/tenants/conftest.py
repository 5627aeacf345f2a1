import os

import pytest

from tests.support.cli import Cli


@pytest.fixture(scope="session")
def local_platform(test_home, ansible_env):
    """`berqenas local up` in an instance directory under a 0700 home; purged (and checked gone) afterwards."""
    home = os.path.join(test_home, "instance")
    cli = Cli(ansible_env, home)
    status = cli("local", "up", "--no-network", "--json").json
    yield cli, status
    cli("local", "down", "--purge", "--json")
    assert not os.path.exists(home)
    assert not os.path.exists(os.path.dirname(status["socket_dir"]))
    if status["socket_dir"].startswith("/var/lib/berqenas/local/"):  # root: nothing of the instance is left there
        assert not os.path.exists("/var/lib/berqenas/local") or os.listdir("/var/lib/berqenas/local")


@pytest.fixture(scope="session")
def three_tenants(local_platform):
    cli, status = local_platform
    names = ["acme", "globex", "initech"]
    for n in names:
        cli("tenant", "create", n, "--json")
    creds = {n: cli("tenant", "show", n, "--credentials", "--json").json["credentials"] for n in names}
    return cli, status, creds
