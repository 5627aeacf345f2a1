"""Gateway planning: validation of every input and the rendered firewall / pg_hba blocks."""

import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import gateway as gw

pytestmark = pytest.mark.unit

PEERS = [
    {"name": "a-laptop", "tenant": "acme", "addresses": ["198.51.100.2/32", "fd00::2/128"], "enabled": True},
    {"name": "a-off", "tenant": "acme", "addresses": ["198.51.100.9/32"], "enabled": False},
    {"name": "b-laptop", "tenant": "globex", "addresses": ["198.51.100.3"], "enabled": True},
    # the wireguard role's published shape carries more keys; an expired peer is no source
    {"name": "a-old", "tenant": "acme", "addresses": ["198.51.100.8/32"], "enabled": True, "expired": True,
     "public_key": "x", "allowed_ips": ["198.51.100.8/32"], "config_file": "/etc/wireguard/clients/a-old.conf"},
]


def plan(exposures, **extra):
    config = {"exposures": exposures, "vpn_peers": PEERS, "wireguard": {"port": 51820}}
    config.update(extra)
    return gw.build_plan(config)


def test_postgres_exposure_opens_only_the_tenants_enabled_peers_and_writes_pg_hba():
    p = plan([{"tenant": "acme", "service": "postgres", "allow": ["203.0.113.0/24"]}])
    (e,) = p["exposures"]
    assert (e["kind"], e["port"], e["target"], e["name"]) == ("input", 5432, "127.0.0.1:5432", "db")
    assert e["sources"] == ["198.51.100.2/32", "203.0.113.0/24", "fd00::2/128"]
    v4 = p["before_rules"].splitlines()
    rule = '-A BQ-INPUT -s 198.51.100.2/32 -p tcp -m tcp --dport 5432 -m comment --comment "bq:acme:db" -j ACCEPT'
    assert rule in v4
    # disabled, expired, other tenant's peers: none of them
    assert not any(a in line for line in v4 for a in ("198.51.100.9", "198.51.100.8", "198.51.100.3"))
    assert p["pg_hba"].splitlines() == [
        "# exposure acme/db",
        "host berqenas acme_app,acme_ro 198.51.100.2/32 scram-sha-256",
        "host berqenas acme_app,acme_ro fd00::2/128 scram-sha-256",
        "hostssl berqenas acme_app,acme_ro 203.0.113.0/24 scram-sha-256",
    ]


def test_ipv6_peer_addresses_get_filter_rules_in_before6_only():
    peers = [{"name": "a6", "tenant": "acme", "addresses": ["fd00::2/128"], "enabled": True}]
    p = gw.build_plan({"exposures": [{"tenant": "acme"}], "vpn_peers": peers})
    assert "-A BQ-INPUT -s fd00::2/128 -p tcp -m tcp --dport 5432" in p["before6_rules"]
    assert "fd00::2" not in p["before_rules"]
    assert "*nat" not in p["before6_rules"]  # no IPv6 NAT: routed IPv6 stays denied
    assert p["before6_rules"].splitlines()[:3] == ["*filter", ":BQ-INPUT - [0:0]", "-A ufw6-before-input -j BQ-INPUT"]


def test_forward_renders_dnat_per_source_route_allow_and_no_masquerade_for_it():
    p = plan(
        [{"tenant": "globex", "name": "web", "target": "203.0.113.2:8080", "public_port": 18080}],
        masquerade={"sources": ["198.51.100.0/24"], "egress_interface": "eth1", "vpn_interface": "wg0"},
    )
    rules = p["before_rules"].splitlines()
    assert rules[:3] == ["*nat", ":BQ-PREROUTING - [0:0]", ":BQ-POSTROUTING - [0:0]"]
    dnat = [r for r in rules if "DNAT --to-destination" in r]
    assert dnat == [
        "-A BQ-PREROUTING -s 198.51.100.3/32 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 18080 "
        '-m comment --comment "bq:globex:web" -j DNAT --to-destination 203.0.113.2:8080'
    ]
    # DNAT'ed connections return before the MASQUERADE rule: the backend sees the peer's address
    ret = rules.index("-A BQ-POSTROUTING -m conntrack --ctstate DNAT -j RETURN")
    masq = rules.index("-A BQ-POSTROUTING -s 198.51.100.0/24 -o eth1 -j MASQUERADE")
    assert ret < masq
    assert (
        "-A BQ-FORWARD -s 198.51.100.3/32 -d 203.0.113.2 -p tcp -m tcp --dport 8080 -m conntrack --ctstate DNAT "
        '-m comment --comment "bq:globex:web" -j ACCEPT' in rules
    )
    assert p["pg_hba"] == ""  # not a database exposure


def test_every_chain_is_declared_so_reloads_flush_it_and_jumps_hang_off_flushed_ufw_chains():
    p = plan([{"tenant": "acme"}])
    rules = p["before_rules"].splitlines()
    for chain in ("BQ-PREROUTING", "BQ-POSTROUTING", "BQ-INPUT", "BQ-FORWARD"):
        assert ":%s - [0:0]" % chain in rules
    jumps = [r for r in rules if " -j BQ-" in r]
    assert jumps == ["-A ufw-before-input -j BQ-INPUT", "-A ufw-before-forward -j BQ-FORWARD"]
    assert not any(r.startswith(("-A PREROUTING", "-A POSTROUTING", "-A INPUT", "-A FORWARD")) for r in rules)


def test_management_and_wireguard_rules_and_rendering_is_deterministic():
    cfg = {"exposures": [{"tenant": "globex"}, {"tenant": "acme"}], "vpn_peers": PEERS,
           "management": {"port": 2222, "sources": ["192.0.2.0/24"]}, "wireguard": {"port": 51820}}
    p1 = gw.build_plan(cfg)
    cfg["exposures"].reverse()
    p2 = gw.build_plan(cfg)
    assert p1["before_rules"] == p2["before_rules"] and p1["pg_hba"] == p2["pg_hba"]
    assert '-A BQ-INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 2222 -m comment --comment "bq:management" -j ACCEPT' in (
        p1["before_rules"])
    assert '-A BQ-INPUT -p udp -m udp --dport 51820 -m comment --comment "bq:wireguard" -j ACCEPT' in p1["before_rules"]
    assert [e["tenant"] for e in p1["exposures"]] == ["acme", "globex"]


def test_absent_exposures_render_nothing_and_an_empty_plan_still_declares_chains():
    p = plan([{"tenant": "acme", "state": "absent"}])
    assert p["exposures"] == [] and p["pg_hba"] == ""
    assert ":BQ-INPUT - [0:0]" in p["before_rules"] and "acme" not in p["before_rules"]


def test_postgres_on_another_host_is_forwarded_unmasqueraded_and_keeps_pg_hba():
    p = plan([{"tenant": "acme"}], postgres={"host": "203.0.113.5", "port": 5433})
    (e,) = p["exposures"]
    assert (e["kind"], e["port"], e["target"]) == ("forward", 5433, "203.0.113.5:5433")
    assert "--to-destination 203.0.113.5:5433" in p["before_rules"]
    assert "host berqenas acme_app,acme_ro 198.51.100.2/32 scram-sha-256" in p["pg_hba"]


def test_local_addresses_count_as_this_host():
    p = plan([{"tenant": "acme", "target": "192.0.2.1:8080"}], local_addresses=["192.0.2.1"])
    assert p["exposures"][0]["kind"] == "input"


PAYLOAD = "{{ lookup('pipe', 'touch /tmp/bq-pwned') }}"


@pytest.mark.parametrize(
    "exposure, message",
    [
        ({"tenant": "Acme"}, "invalid tenant name"),
        ({"tenant": "acme;drop"}, "invalid tenant name"),
        ({"tenant": PAYLOAD}, "template"),
        ({"tenant": "acme", "name": PAYLOAD}, "template"),
        ({"tenant": "acme", "name": "a b"}, "invalid exposure name"),
        ({"tenant": "acme", "public_port": 0}, "invalid public port"),
        ({"tenant": "acme", "target": "203.0.113.2:8080", "public_port": 70000}, "invalid public port"),
        ({"tenant": "acme", "target": "203.0.113.2:8080", "public_port": True}, "invalid public port"),
        ({"tenant": "acme", "target": "203.0.113.2:8080", "public_port": "80x"}, "invalid public port"),
        ({"tenant": "acme", "target": "203.0.113.2:0"}, "invalid target port"),
        ({"tenant": "acme", "target": "203.0.113.2"}, "invalid target"),
        ({"tenant": "acme", "target": "bad_host!:80"}, "invalid target host"),
        ({"tenant": "acme", "target": "999.1.1.1:80"}, "invalid target host"),
        ({"tenant": "acme", "target": PAYLOAD + ":80"}, "template"),
        ({"tenant": "acme", "target": "db.example.invalid:5432"}, "must be an IPv4 address"),
        ({"tenant": "acme", "target": "[fd00::5]:80"}, "IPv4 only"),
        ({"tenant": "acme", "allow": ["198.51.100.7/24"]}, "has host bits set"),
        ({"tenant": "acme", "allow": ["300.0.0.0/8"]}, "invalid allowed CIDR"),
        ({"tenant": "acme", "allow": ["198.51.100.0/24; rm -rf /"]}, "invalid allowed CIDR"),
        ({"tenant": "acme", "allow": [PAYLOAD]}, "template"),
        ({"tenant": "acme", "allow": "198.51.100.0/24"}, "allow must be a list"),
        ({"tenant": "acme", "service": "redis"}, "unknown service"),
        ({"tenant": "acme", "service": "postgres", "target": "203.0.113.2:1"}, "either service or target"),
        ({"tenant": "acme", "public_port": 6543}, "exposed on its own port"),
        ({"tenant": "acme", "target": "203.0.113.2:22", "public_port": 22}, "reserved"),
        ({"tenant": "acme", "bogus": 1}, "unknown keys"),
        ({"tenant": "acme", "state": "gone"}, "invalid state"),
    ],
)
def test_bad_exposures_are_rejected_with_a_clear_message(exposure, message):
    with pytest.raises(gw.GatewayError, match=message):
        plan([exposure])


def test_duplicate_and_conflicting_exposures_are_rejected():
    with pytest.raises(gw.GatewayError, match="duplicate exposure acme/db"):
        plan([{"tenant": "acme"}, {"tenant": "acme", "name": "db"}])
    with pytest.raises(gw.GatewayError, match="both claim public port 18080"):
        plan([{"tenant": "acme", "name": "x", "target": "203.0.113.2:80", "public_port": 18080},
              {"tenant": "globex", "name": "y", "target": "203.0.113.3:80", "public_port": 18080}])
    # the same target on the same port (two tenants' databases on the platform port) is fine
    assert len(plan([{"tenant": "acme"}, {"tenant": "globex"}])["exposures"]) == 2


@pytest.mark.parametrize(
    "config, message",
    [
        ({"management": {"port": "ssh"}}, "invalid management port"),
        ({"management": {"sources": ["192.0.2.1/8"]}}, "has host bits set"),
        ({"wireguard": {"port": 99999}}, "invalid wireguard port"),
        ({"masquerade": {"sources": ["198.51.100.0/24"], "egress_interface": "eth0; reboot"}}, "invalid egress"),
        ({"masquerade": {"egress_interface": "averyveryverylongname0"}}, "invalid egress"),
        ({"postgres": {"host": PAYLOAD}}, "template"),
        ({"postgres": {"database": "Bad-Name"}}, "invalid database name"),
        ({"postgres": {"role_suffixes": ["_app", "; drop"]}}, "invalid login role suffix"),
        ({"vpn_peers": [{"name": "p", "tenant": "acme", "addresses": ["not-an-ip"]}]}, "invalid address of peer"),
        ({"vpn_peers": [{"name": "p", "tenant": "acme", "addresses": ["198.51.100.2"], "enabled": "yes"}]},
         "invalid enabled"),
        ({"local_addresses": ["nope"]}, "invalid local address"),
        ({"surprise": 1}, "unknown gateway setting"),
    ],
)
def test_bad_settings_are_rejected(config, message):
    config.setdefault("exposures", [])
    with pytest.raises(gw.GatewayError, match=message):
        gw.build_plan(config)


@pytest.mark.parametrize("value", ["db.example.org", "a-b.c", "localhost", "203.0.113.9", "fd00::1"])
def test_valid_hosts(value):
    assert gw.validate_host(value) == value


@pytest.mark.parametrize("value", ["-bad.example", "a..b", "1.2.3", "x" * 254, "", " a", "a_b"])
def test_invalid_hosts(value):
    with pytest.raises(gw.GatewayError):
        gw.validate_host(value)


def test_public_plan_is_plain_data():
    p = gw.public_plan(plan([{"tenant": "acme", "allow": ["203.0.113.0/24"]}]))
    assert p["exposures"][0]["vpn_sources"][0] == "198.51.100.2/32"
    assert p["management"]["sources"] == []


def test_hook_inserts_jumps_only_when_missing_and_removes_every_copy():
    hook = gw.render_hook()
    assert hook.startswith("#!/bin/sh\n")
    check_then_insert = "-C PREROUTING -j BQ-PREROUTING 2>/dev/null || $ipt -t nat -I PREROUTING 1 -j BQ-PREROUTING"
    assert check_then_insert in hook
    assert "while $ipt -t nat -C POSTROUTING -j BQ-POSTROUTING 2>/dev/null; do" in hook
    assert "ip6tables -w -X BQ-INPUT" in hook
