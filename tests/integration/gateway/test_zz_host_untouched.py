"""Runs last in the gateway directory: the HOST's firewall state is byte-identical to the one recorded
before the first gateway test (iptables-save and ip6tables-save without their timestamp comments, the nft
ruleset, every file under /etc/ufw with its mode, /etc/default/ufw, ip_forward). The session fixture asserts
the same again after every other gateway test has torn down."""

import pytest

from tests.integration.gateway.conftest import host_firewall_state

pytestmark = pytest.mark.gateway


def test_host_firewall_state_is_unchanged(gateway_host_guard):
    now = host_firewall_state()
    assert set(now) == set(gateway_host_guard)
    assert "/etc/default/ufw" in now and "/proc/sys/net/ipv4/ip_forward" in now and "/etc/ufw/before.rules" in now
    changed = sorted(k for k in now if now[k] != gateway_host_guard[k])
    assert changed == []
