"""One table of good and bad values per rule, fed to every front door of that rule; every door gives one verdict.

Doors: the rule in module_utils/validation.py, the domain helpers modules call (gateway, wireguard, mssql_sync),
the gateway_plan module's own entry point (build_plan) and wireguard_server's (validate_peers /
validate_interface), the playbook filters, and the CLI's click callbacks (through CliRunner: a usage error,
exit code 2, means "refused"; any other outcome means the value passed the rule).
"""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.berqenas.platform.plugins.filter import names as names_filter
from ansible_collections.berqenas.platform.plugins.filter import tenant as tenant_filter
from ansible_collections.berqenas.platform.plugins.module_utils import gateway as gw
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S
from ansible_collections.berqenas.platform.plugins.module_utils import validation as v
from ansible_collections.berqenas.platform.plugins.module_utils import wireguard as wg
from berqenas_orchestrator import runner
from berqenas_orchestrator.cli import main
from click.testing import CliRunner

pytestmark = pytest.mark.unit

TEMPLATE = "{{ lookup('pipe', 'id') }}"
KEY = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PG = {"host": "127.0.0.1", "port": 5432}

TABLE = {
    "tenant name": (["acme", "t0001", "a" * 40, "acme_2"],
                    ["", "Acme", "9a", "_a", "a" * 41, "a-b", "a b", "pg_x", "berqenas_x", "public", "null", "true",
                     "select", TEMPLATE, "acme\n", "ä"]),
    "remote database name": (["erp", "legacy_erp", "a" * 40],
                             ["acme-corp", "null", "true", "pg_catalog", "Erp", "9erp", "a" * 41, "", "-x", TEMPLATE]),
    "peer name": (["laptop1", "0phone", "a-b_c", "x" * 32],
                  ["", "Bad!", "x" * 33, "-x", "a b", "A1", "null", "true", TEMPLATE]),
    "exposure name": (["db", "web-1", "a_b"], ["", "Db", "1db", "-db", "a b", "a" * 41, "null", "false", TEMPLATE]),
    "host": (["db.example.com", "sql-01", "203.0.113.5", "2001:db8::1", "host."],
             ["$(id)", "-oProxyCommand=id", "a b", "a;b", "a|b", "a`id`", "a'b", "a/b", "", "1234", "a..b", "a-.b",
              "x" * 254, "fe80::1%eth0", TEMPLATE]),
    "port": (["1", "1433", "65535"], ["0", "65536", "-1", "01433", " 1433", "14x", "0x10", TEMPLATE]),
    "cidr": (["203.0.113.0/24", "198.51.100.7/32", "fd00::/8", "198.51.100.7"],
             ["198.51.100.7/24", "203.0.113.0/33", "nonsense", "", " 203.0.113.0/24", TEMPLATE]),
    "interface name": (["wg0", "eth0.100", "br-lan", "wg+1", "a" * 15],
                       ["", "a" * 16, "-wg", ".wg", "..", "wg 0", "wg/0", "wg:0", TEMPLATE]),
    "wireguard key": ([KEY], ["", "A" * 43 + "=", "not-a-key", KEY[:-2], KEY + "AA", TEMPLATE]),
    "expiry": (["2026-12-31T00:00:00Z", "2026-12-31T02:00:00+02:00", "2026-12-31 00:00:00+00:00"],
               ["soon", "2026-12-31T00:00:00", "2026-13-01T00:00:00Z", "2026-12-31", TEMPLATE]),
    "mtu": (["1280", "1420", "9000"], ["1279", "9001", "-1", "1420.0", "14x", "", TEMPLATE]),
    "keepalive": (["0", "25", "65535"], ["-1", "65536", "25s", "2.5", TEMPLATE]),
}


def _iface(**kw):
    args = {"name": "wg0", "addresses": ["198.51.100.1/24"], "listen_port": 51820}
    args.update(kw)
    return wg.validate_interface(**args)


# rule -> {door: callable(value)}; a door refuses by raising (ValidationError, AnsibleFilterError, SyncError)
DOORS = {
    "tenant name": {
        "validation": v.tenant_name,
        "filter tenant_name": tenant_filter.tenant_name,
        "filter tenant_spec": tenant_filter.tenant_spec,
        "gateway.validate_name": gw.validate_name,
        "gateway_plan (build_plan)": lambda x: gw.build_plan({"exposures": [{"tenant": x}], "postgres": PG}),
        "wireguard_server (validate_peers)": lambda x: wg.validate_peers([{"name": "p1", "tenant": x}], _iface()),
    },
    "remote database name": {
        "validation": v.remotedb_name,
        "mssql_sync.remotedb_name": S.remotedb_name,
        "filter remotedb_name": names_filter.remotedb_name,
    },
    "peer name": {
        "validation": v.peer_name,
        "filter peer_name": names_filter.peer_name,
        "wireguard_server (validate_peers)": lambda x: wg.validate_peers([{"name": x, "tenant": "acme"}], _iface()),
    },
    "exposure name": {
        "validation": v.exposure_name,
        "gateway.validate_exposure_name": gw.validate_exposure_name,
        "gateway_plan (build_plan)": lambda x: gw.build_plan({"exposures": [{"tenant": "acme", "name": x}],
                                                              "postgres": PG}),
    },
    "host": {
        "validation": v.host,
        "gateway.validate_host": gw.validate_host,
        "mssql_sync.host_name": S.host_name,
        "gateway_plan (postgres host)": lambda x: gw.build_plan({"exposures": [], "postgres": {"host": x}}),
        "wireguard_server (endpoint)": lambda x: _iface(endpoint=x if ":" not in x else "[%s]" % x),
    },
    "port": {
        "validation": v.port,
        "gateway.validate_port": gw.validate_port,
        "wireguard.check_port": wg.check_port,
        "gateway_plan (public_port)": lambda x: gw.build_plan({"exposures": [
            {"tenant": "acme", "target": "203.0.113.2:8080", "public_port": x}], "postgres": PG}),
        "wireguard_server (listen_port)": lambda x: _iface(listen_port=x),
    },
    "cidr": {
        "validation": v.cidr,
        "gateway.validate_cidr": gw.validate_cidr,
        "gateway_plan (allow)": lambda x: gw.build_plan({"exposures": [{"tenant": "acme", "allow": [x]}],
                                                        "postgres": PG}),
        "wireguard_server (client_allowed_ips)": lambda x: _iface(client_allowed_ips=[x]),
    },
    "interface name": {
        "validation": v.interface_name,
        "gateway.validate_interface": gw.validate_interface,
        "gateway_plan (vpn_interface)": lambda x: gw.build_plan({"exposures": [], "postgres": PG,
                                                                "masquerade": {"vpn_interface": x}}),
        "wireguard_server (interface)": lambda x: _iface(name=x),
    },
    "wireguard key": {
        "validation": v.wireguard_key,
        "wireguard.check_key": lambda x: wg.check_key(x, "public key"),
        "wireguard_server (public_key)": lambda x: wg.validate_peers(
            [{"name": "p1", "tenant": "acme", "public_key": x or None}] if x else [{"name": "p1", "tenant": "acme",
                                                                                    "public_key": 5}], _iface()),
    },
    "expiry": {
        "validation": v.expiry,
        "wireguard.parse_expiry": wg.parse_expiry,
        "wireguard_server (expires)": lambda x: wg.validate_peers([{"name": "p1", "tenant": "acme", "expires": x}],
                                                                  _iface()),
    },
    "mtu": {
        "validation": v.mtu,
        "wireguard_server (mtu)": lambda x: _iface(mtu=x),
    },
    "keepalive": {
        "validation": v.keepalive,
        "wireguard_server (persistent_keepalive)": lambda x: _iface(client_keepalive=x),
        "wireguard_server (peer persistent_keepalive)": lambda x: wg.validate_peers(
            [{"name": "p1", "tenant": "acme", "persistent_keepalive": x}], _iface()),
    },
}

# rule -> the CLI arguments that carry the value through its click callback (exit code 2 = refused)
CLI = {
    "tenant name": [lambda x: ["tenant", "show", x], lambda x: ["vpn", "peer", "add", "p1", "--tenant", x],
                    lambda x: ["gateway", "unexpose", x]],
    "remote database name": [lambda x: ["remotedb", "remove", x], lambda x: ["sync", "run", x]],
    "peer name": [lambda x: ["vpn", "peer", "remove", x]],
    "exposure name": [lambda x: ["gateway", "unexpose", "acme", "--name", x]],
    "host": [lambda x: ["remotedb", "add", "erp", "--tenant", "nobody", "--host", x, "--user", "u",
                        "--password-file", "-", "--database", "d"],
             lambda x: ["gateway", "expose", "nobody", "--to", ("[%s]" % x if ":" in x else x) + ":80"]],
    "port": [lambda x: ["remotedb", "add", "erp", "--tenant", "nobody", "--host", "h", "--port", x, "--user", "u",
                        "--password-file", "-", "--database", "d"]],
    "cidr": [lambda x: ["gateway", "expose", "nobody", "--allow", x]],
    "wireguard key": [lambda x: ["vpn", "peer", "add", "p1", "--tenant", "nobody", "--public-key", x]],
    "expiry": [lambda x: ["vpn", "peer", "add", "p1", "--tenant", "nobody", "--expires", x]],
}

# values a door cannot express the same way (documented, not silently skipped)
NOT_APPLICABLE = {
    # an empty --expires / --public-key means "none given" on the command line, as in the peer list
    ("expiry", "cli"): {""},
    ("wireguard key", "cli"): {""},
    # an empty or absent expires is "no expiry" for the rule itself too (None/'' -> None)
    ("expiry", "validation"): {""}, ("expiry", "wireguard.parse_expiry"): {""},
    ("expiry", "wireguard_server (expires)"): {""},
    # an empty exposure name or endpoint in the playbook inputs means the default ("db") or none
    ("exposure name", "gateway_plan (build_plan)"): {""}, ("host", "wireguard_server (endpoint)"): {""},
    ("interface name", "gateway_plan (vpn_interface)"): {""},
}


def _cases():
    for rule, (good, bad) in TABLE.items():
        for value in good:
            yield pytest.param(rule, value, True, id=f"{rule}-good-{value!r}"[:80])
        for value in bad:
            yield pytest.param(rule, value, False, id=f"{rule}-bad-{value!r}"[:80])


def _passes(door, value):
    try:
        door(value)
    except (v.ValidationError, AnsibleFilterError, S.SyncError):
        return False
    return True


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("front-doors")
    inv = tmp / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")

    def no_run(*a, **kw):
        raise AssertionError("no playbook may run: every command here fails before its run")

    def invoke(args):
        saved = runner.run_playbook
        runner.run_playbook = no_run
        try:
            with CliRunner().isolation(input="pw\n"):
                try:
                    main(["--home", str(tmp / "home"), "-i", str(inv), *args])
                    return 0
                except SystemExit as exc:
                    return exc.code
        finally:
            runner.run_playbook = saved

    return invoke


@pytest.mark.parametrize("rule,value,good", list(_cases()))
def test_every_door_gives_the_same_verdict(cli, rule, value, good):
    verdicts = {}
    for door, fn in DOORS[rule].items():
        if value in NOT_APPLICABLE.get((rule, door), ()):
            continue
        verdicts[door] = _passes(fn, value)
    if value not in NOT_APPLICABLE.get((rule, "cli"), ()):
        for i, build in enumerate(CLI.get(rule, [])):
            verdicts[f"cli #{i}"] = cli(build(value)) != 2
    assert verdicts, "no door took the value"
    wrong = {door: ok for door, ok in verdicts.items() if ok != good}
    assert not wrong, f"{rule} {value!r} should be {'accepted' if good else 'refused'}; doors disagreeing: {wrong}"
