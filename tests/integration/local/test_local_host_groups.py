"""A command whose host group is empty in the inventory fails with exit code 1, naming the group and how to add
a host (playbooks/checks/host_group.yml, imported first by the front-door playbooks): never a silent success,
never "did not publish"."""

import os

import pytest
import yaml

from tests.support.cli import Cli

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def db_only(test_home, ansible_env):
    """An inventory with a database host and a tenant, and no WireGuard or gateway host."""
    inv = os.path.join(test_home, "db-only-inventory")
    os.makedirs(os.path.join(inv, "group_vars", "all"), exist_ok=True)
    with open(os.path.join(inv, "hosts.yml"), "w") as f:
        yaml.safe_dump({"all": {"hosts": {"localhost": {"ansible_connection": "local"}},
                                "children": {"berqenas_db": {"hosts": {"localhost": {}}}}}}, f)
    with open(os.path.join(inv, "group_vars", "all", "tenants.yml"), "w") as f:
        yaml.safe_dump({"berqenas_tenants": [{"name": "acme"}]}, f)
    return Cli(ansible_env, os.path.join(test_home, "db-only-home")), inv


def test_vpn_peer_add_names_the_empty_group(db_only):
    cli, inv = db_only
    res = cli("--inventory", inv, "vpn", "peer", "add", "alice", "--tenant", "acme", "--json", check=False)
    assert res.rc == 1, res
    msg = res.json["error"]
    assert "host group 'wireguard' has no host" in msg and "all.children.wireguard.hosts" in msg, msg
    assert "did not publish" not in msg
    assert res.json.get("restored") == ["vpn.yml"]  # the desired state is as it was: no alice
    assert not os.path.exists(os.path.join(inv, "group_vars", "all", "vpn.yml"))


def test_gateway_status_names_the_empty_group(db_only):
    cli, inv = db_only
    res = cli("--inventory", inv, "gateway", "status", check=False)
    assert res.rc == 1, res
    assert "host group 'berqenas_gateway' has no host" in res.stderr, res.stderr
    assert "all.children.berqenas_gateway.hosts" in res.stderr
    assert res.stdout == ""
