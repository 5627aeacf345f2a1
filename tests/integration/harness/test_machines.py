"""The multi-host harness itself: two machines and a plain namespace, pinging over a veth and a bridge."""

import os

import pytest

from tests.support.machines import HarnessError, Topology

pytestmark = [pytest.mark.vpn, pytest.mark.gateway]


def test_two_machines_ping_and_playbook(machines, tmp_path):
    topo = Topology()
    topo.machine("m1", groups=["hub"], hostvars={"probe_peer": "192.0.2.12"})
    topo.machine("m2", mask=["postgresql.service"])
    topo.namespace("ctl")
    topo.link("wan", {"m1": "192.0.2.11/24", "m2": ["192.0.2.12/24", "fd00:2::12/64"]})
    topo.link("lan", {"m1": "203.0.113.1/24", "m2": "203.0.113.2/24", "ctl": "203.0.113.254/24"},
              gateway={"ctl": "203.0.113.1"})  # fmt: skip
    cluster = machines(topo)
    m1, m2, ctl = cluster["m1"], cluster["m2"], cluster["ctl"]

    # each machine is its own host: own hostname, own systemd as PID 1, own interfaces
    assert m1.run(["hostname"]).stdout.strip() == "m1"
    assert m2.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert "wan" in m2.run(["ip", "-br", "link"]).stdout
    # the veth and the bridge carry traffic; the masked unit stayed off
    m1.run(["ping", "-c", "2", "-W", "2", "192.0.2.12"])
    ctl.run(["ping", "-c", "2", "-W", "2", "203.0.113.2"])
    assert m2.run(["systemctl", "is-active", "postgresql.service"], check=False).stdout.strip() != "active"
    assert m1.run(["systemctl", "is-active", "postgresql@15-main.service"], check=False).stdout.strip() == "active"
    # the overlay is private to each machine
    m1.write_file("/etc/probe", "one\n", mode=0o600)
    assert m1.file_mode("/etc/probe") == (0o600, "root")
    assert m2.run(["test", "-e", "/etc/probe"], check=False).returncode == 1
    # Ansible reaches the machines through the generated inventory
    play = tmp_path / "probe.yml"
    play.write_text(
        "- hosts: hub\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: ping -c 1 -W 2 {{ probe_peer }}\n      changed_when: false\n"
        "    - ansible.builtin.copy: {dest: /etc/from-ansible, content: hi, mode: '0644'}\n"
    )
    res = cluster.playbook(str(play))
    assert res.returncode == 0, res.stdout
    assert res.recap()["m1"]["changed"] == 1
    assert m1.read_file("/etc/from-ansible") == "hi"
    nss = [n.ns for n in cluster.nodes.values()]
    cluster.teardown()
    for ns in nss:
        assert not os.path.exists(f"/run/netns/{ns}")


def test_only_documentation_ranges():
    topo = Topology().machine("a").machine("b")
    with pytest.raises(HarnessError, match="documentation ranges"):
        topo.link("wan", {"a": "100.64.0.1/24", "b": "100.64.0.2/24"})
    with pytest.raises(HarnessError, match="node name"):
        Topology().machine("Bad_Name")
