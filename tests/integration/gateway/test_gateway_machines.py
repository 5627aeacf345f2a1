"""The gateway role on nspawn machines, proven with real TCP and SQL probes (topology in topology.py).

One module-scoped cluster; the tests run in order and build on each other's state (each says what it
expects to find), which keeps the machine boots and playbook runs within the CI budget.
"""

import json
import shlex
import subprocess
import tempfile
import time

import pytest
import yaml

from tests.integration.gateway.topology import GW_VPN, GW_WAN, HBA, GatewayWorld, topology
from tests.support import env as support_env
from tests.support.cli import Cli

pytestmark = pytest.mark.gateway

DROPPED = ("BLOCKED", "TimeoutError")  # no answer at all: the firewall dropped the SYN
GUARD_S = 30  # shortest rollback guard timeout of the guard test

ACME_DB = {"tenant": "acme", "service": "postgres"}
GLOBEX_DB = {"tenant": "globex", "service": "postgres"}
GLOBEX_WEB = {"tenant": "globex", "name": "web", "target": "203.0.113.2:8080", "public_port": 18080}


@pytest.fixture(scope="module")
def world(machines_module):
    cluster = machines_module(topology())
    with tempfile.TemporaryDirectory(prefix="bq-gw-") as workdir:
        yield GatewayWorld(cluster, workdir).setup()


def ok(res, changed=None):
    recap = res.recap()
    assert res.returncode == 0 and recap["gw"]["failed"] == 0, res.stdout[-4000:]
    if changed is not None:
        assert recap["gw"]["changed"] == changed, res.stdout[-4000:]
    return recap["gw"]


def nat_rules(world):
    return world.gw(["iptables", "-t", "nat", "-S"]).splitlines()


def test_base_gateway_blocks_everything_but_management_and_wireguard(world):
    assert world.tcp("out", GW_WAN, 5432)[0] == "OPEN"  # ufw still disabled: the database answers
    ok(world.apply([]))
    assert "Status: active" in world.gw(["ufw", "status"])
    assert 'DEFAULT_INPUT_POLICY="DROP"' in world.gw(["cat", "/etc/default/ufw"])
    assert 'DEFAULT_FORWARD_POLICY="DROP"' in world.gw(["cat", "/etc/default/ufw"])
    assert world.gw(["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "1"
    assert world.tcp("pa", GW_VPN, 5432) == DROPPED
    assert world.tcp("pb", GW_VPN, 5432) == DROPPED
    assert world.tcp("out", GW_WAN, 5432) == DROPPED
    # the tunnel survives (WireGuard port allowed) and management SSH is open to the controller only
    assert world.c["pa"].wait_ping(GW_VPN)
    assert world.tcp("ctl", GW_WAN, 22)[0] == "OPEN"
    assert world.tcp("out", GW_WAN, 22) == DROPPED


def test_expose_acme_admits_only_acme_peers_and_reruns_change_nothing(world):
    res = ok(world.apply([ACME_DB], diff=True))
    assert res["changed"] > 0
    assert world.sql("pa", "acme_app") == "OK acme_app"
    assert world.tcp("pb", GW_VPN, 5432) == DROPPED  # globex's peer: dropped by the firewall
    assert world.tcp("out", GW_WAN, 5432) == DROPPED
    hba = world.gw(["cat", HBA])
    assert hba.index("# BEGIN BERQENAS GATEWAY EXPOSURES") < hba.index("# BEGIN berqenas.platform postgres_tenant")
    assert "host berqenas acme_app,acme_ro 198.51.100.2/32 scram-sha-256" in hba
    ok(world.apply([ACME_DB]), changed=0)


def test_check_mode_changes_nothing(world):
    before = world.state()
    res = world.apply([ACME_DB, GLOBEX_DB, GLOBEX_WEB], check=True, diff=True)
    recap = ok(res)
    assert recap["changed"] > 0  # it predicts the change...
    assert "+-A BQ-PREROUTING -s 198.51.100.3/32" in res.stdout  # ...and shows the nat block diff
    assert world.state() == before  # ...and makes none
    assert world.tcp("pb", GW_VPN, 5432) == DROPPED


def test_second_tenant_same_port_pg_hba_separates_tenants_and_dnat_reaches_backend(world):
    # postgres_tenant's block (re)inserted at the top, above ours, as its first run after ours would do
    hba = world.gw(["cat", HBA])
    tenant_block = hba[hba.index("# BEGIN berqenas.platform postgres_tenant"):]
    tenant_block = tenant_block[:tenant_block.index("# END berqenas.platform postgres_tenant")]
    tenant_block += "# END berqenas.platform postgres_tenant (managed, do not edit)\n"
    world.c["gw"].write_file(HBA, tenant_block + hba.replace(tenant_block, ""), mode=0o640)
    world.c["gw"].run(["chown", "postgres:postgres", HBA])
    assert world.gw(["cat", HBA]).index("# BEGIN berqenas.platform") < world.gw(["cat", HBA]).index("# BEGIN BERQ")
    ok(world.apply([ACME_DB, GLOBEX_DB, GLOBEX_WEB]))
    hba = world.gw(["cat", HBA])
    assert hba.index("# BEGIN BERQENAS GATEWAY EXPOSURES") < hba.index("# BEGIN berqenas.platform postgres_tenant")
    assert hba.count("# BEGIN BERQENAS GATEWAY EXPOSURES") == 1 and hba.count("+berqenas_tenants  all  reject") == 1
    # globex's peer reaches the port now, but acme's roles are not admitted from its address
    out = world.sql("pb", "acme_app")
    assert out.startswith("ERR 28000") and "pg_hba.conf rejects connection" in out, out
    assert world.sql("pb", "globex_app") == "OK globex_app"
    assert world.sql("pa", "acme_app") == "OK acme_app"
    # the forward reaches the backend unmasqueraded (the backend sees the peer's VPN address)
    assert world.tcp("pb", GW_VPN, 18080) == ("OPEN", "198.51.100.3")
    assert world.tcp("pa", GW_VPN, 18080) == DROPPED  # not acme's exposure
    assert world.tcp("out", GW_WAN, 18080) == DROPPED
    ok(world.apply([ACME_DB, GLOBEX_DB, GLOBEX_WEB]), changed=0)


def test_reloads_keep_one_copy_of_each_nat_rule(world):
    for _ in range(3):
        world.gw(["ufw", "reload"])
    rules = nat_rules(world)
    for line in ("-A PREROUTING -j BQ-PREROUTING", "-A POSTROUTING -j BQ-POSTROUTING",
                 "-A BQ-POSTROUTING -s 198.51.100.0/24 -o lan -j MASQUERADE"):
        assert rules.count(line) == 1, rules
    assert len([r for r in rules if "DNAT --to-destination 203.0.113.2:8080" in r]) == 1, rules
    assert world.tcp("pb", GW_VPN, 18080) == ("OPEN", "198.51.100.3")


def test_health_reports_a_chain_rule_removed_by_hand_as_drift(world, tmp_path):
    """`berqenas health --only gateway` on the same machine: healthy as applied; a BQ-INPUT rule deleted by hand
    is drift (exit 1, the missing rule named); `ufw reload` puts the rendered chains back. (The first run found
    false drift: iptables lists a rendered `-d 203.0.113.2` as `-d 203.0.113.2/32`.)"""
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(open(world.c.inventory_path).read())
    (inv / "group_vars" / "all" / "gateway_settings.yml").write_text(yaml.safe_dump(
        world.vars([ACME_DB, GLOBEX_DB, GLOBEX_WEB])))
    cli = Cli(dict(world.c.ansible_env, ANSIBLE_PIPELINING="True"), str(tmp_path / "home"))

    def health():
        res = cli("-i", str(inv), "health", "--only", "gateway", "--json", check=False)
        assert res.rc in (0, 1), res.stdout + res.stderr
        data = res.json
        assert data["healthy"] == (res.rc == 0)
        return res.rc, {c["name"]: c for c in data["checks"]}

    rc, checks = health()
    assert rc == 0 and checks["ufw"]["healthy"] and "ipv4/filter/BQ-INPUT" in checks, [
        (n, c["status"], c["detail"]) for n, c in checks.items() if not c["healthy"]]
    listed = world.gw(["iptables", "-S", "BQ-INPUT"]).splitlines()
    rule = next((r for r in listed if r.startswith("-A BQ-INPUT") and "--dport 5432" in r), None)
    assert rule, listed
    world.gw(["iptables", "-w", "-D", *shlex.split(rule)[1:]])
    try:
        rc, checks = health()
        c = checks["ipv4/filter/BQ-INPUT"]
        assert rc == 1 and c["status"] == "drift" and c["metrics"]["missing_rules"] == 1, c
        assert ("missing: %s" % rule.replace('"', "")) in c["detail"] and c["since"], c
        assert all(x["healthy"] for n, x in checks.items() if n != "ipv4/filter/BQ-INPUT"), checks
    finally:
        world.gw(["ufw", "reload"])
    assert rule in world.gw(["iptables", "-S", "BQ-INPUT"]).splitlines()


def test_bad_input_is_rejected_before_any_rule_is_written(world):
    before = world.state()
    for bad in ([{"tenant": "acme", "allow": ["198.51.100.7/24"]}],
                [{"tenant": "acme", "target": "203.0.113.2:99999"}],
                [{"tenant": "Acme;drop"}],
                [{"tenant": "acme", "target": "bad_host!:80"}]):
        res = world.apply(bad)
        # the playbook's front check (berqenas.platform.valid_input, module_utils/validation.py) refuses it
        assert res.returncode != 0 and "berqenas_exposures: invalid" in res.stdout, res.stdout[-3000:]
    assert world.state() == before
    # another run holds the host lock: this one waits, then fails before writing anything
    world.c["gw"].run(["mkdir", "/run/lock/berqenas-gateway"])
    try:
        res = world.apply([ACME_DB], gateway_lock_timeout=2)
        assert res.returncode != 0 and "another run holds /run/lock/berqenas-gateway" in res.stdout, res.stdout[-3000:]
    finally:
        world.c["gw"].run(["rmdir", "/run/lock/berqenas-gateway"])
    assert world.state() == before


def test_template_payloads_are_data_and_rejected(world, tmp_path):
    marker = tmp_path / "pwned"
    payload = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker
    path = tmp_path / "vars.yml"
    # the way the orchestrator writes desired state: every value tagged !unsafe
    path.write_text("berqenas_exposures:\n  - tenant: acme\n    allow: [!unsafe \"%s\"]\n" % payload)
    before = world.state()
    res = world.c.playbook(support_env.REPO + "/playbooks/gateway_apply.yml", extravars_file=str(path))
    assert res.returncode != 0 and "template syntax" in res.stdout, res.stdout[-3000:]
    assert not marker.exists()
    assert world.state() == before


def test_unexpose_leaves_nothing_behind(world):
    ok(world.apply([GLOBEX_DB, GLOBEX_WEB]))
    assert world.tcp("pa", GW_VPN, 5432) == DROPPED
    saved = world.gw(["iptables-save"]) + world.gw(["ip6tables-save"])
    assert "bq:acme" not in saved and "198.51.100.2" not in saved
    assert "acme" not in world.gw(["sed", "-n", "/# BEGIN BERQENAS GATEWAY EXPOSURES/,/# END BERQENAS/p", HBA])
    ok(world.apply([]))
    saved = world.gw(["iptables-save"])
    assert "-j DNAT" not in saved and "bq:globex" not in saved
    assert "BERQENAS GATEWAY EXPOSURES" not in world.gw(["cat", HBA])
    assert world.tcp("pb", GW_VPN, 18080) == DROPPED


def test_rule_set_cutting_management_rolls_back_by_itself(world, tmp_path):
    """Real SSH from the controller namespace: confirmation needs a fresh connection, else the host restores."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    world.c["gw"].write_file("/root/.ssh/authorized_keys", (tmp_path / "id_ed25519.pub").read_text(), mode=0o600)
    inventory = tmp_path / "ssh.yml"
    inventory.write_text(
        "all:\n  children:\n    berqenas_gateway:\n      hosts:\n        gw:\n"
        "          ansible_host: %s\n          ansible_user: root\n          ansible_ssh_private_key_file: %s\n"
        "          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
        "          ansible_python_interpreter: /usr/bin/python3\n          ansible_timeout: 5\n" % (GW_WAN, key))
    ctl = world.c["ctl"].ns
    t_good = time.monotonic()
    good = world.apply([], inventory=str(inventory), netns=ctl, gateway_guard_enabled=True)
    assert good.returncode == 0, good.stdout[-4000:]
    # the guard must outlast the run's way from arming to confirming, which a loaded box stretches: at least
    # GUARD_S, else twice what the same (good) run just took
    guard_s = max(GUARD_S, int(2 * (time.monotonic() - t_good)) + 10)

    t0 = time.monotonic()
    bad = world.apply([], inventory=str(inventory), netns=ctl, gateway_management_sources=["203.0.113.0/24"],
                      gateway_guard_enabled=True, gateway_guard_timeout=guard_s)
    applied_s = time.monotonic() - t0
    assert bad.returncode != 0, bad.stdout[-4000:]
    # the confirmation over a fresh SSH connection is what failed (not the apply)
    confirm = bad.stdout.find("TASK [berqenas.platform.gateway : Confirm the change")
    assert confirm > 0 and "UNREACHABLE" in bad.stdout[confirm:], bad.stdout[-4000:]
    if applied_s < guard_s - 2:
        assert world.tcp("ctl", GW_WAN, 22, timeout=1.0) == DROPPED  # the bad rule set is live until the guard
    gw = world.c["gw"]

    def restored():
        done = gw.run(["test", "-e", "/var/lib/berqenas/gateway-guard/rolled-back"], check=False).returncode == 0
        running = gw.run(["systemctl", "is-active", "--quiet", "berqenas-gateway-guard.service"], check=False)
        return done and running.returncode != 0

    while not restored():
        assert time.monotonic() - t0 < guard_s + 40, "the guard did not restore the firewall"
        time.sleep(1)
    assert time.monotonic() - t0 >= guard_s - 1  # restored by the timer, not earlier
    assert world.tcp("ctl", GW_WAN, 22)[0] == "OPEN"
    assert "-s 192.0.2.254/32 -p tcp -m tcp --dport 22" in world.gw(["iptables", "-S", "BQ-INPUT"])
    # and the operator can log in again over a fresh SSH connection (the run's lock went with the rollback)
    ssh = subprocess.run(["ip", "netns", "exec", ctl, "ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes",
                          "root@" + GW_WAN, "test", "!", "-e", "/run/lock/berqenas-gateway"],
                         capture_output=True, text=True, timeout=30)
    assert ssh.returncode == 0, ssh.stderr


def test_cli_expose_list_status_unexpose(world, tmp_path):
    """`berqenas gateway ...` against the same machines, through the orchestrator's runner adapter."""
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(open(world.c.inventory_path).read())
    settings = world.vars([])
    settings.pop("berqenas_exposures")
    (inv / "group_vars" / "all" / "gateway_settings.yml").write_text(yaml.safe_dump(settings))
    (inv / "group_vars" / "all" / "tenants.yml").write_text("berqenas_tenants: [{name: acme}, {name: globex}]\n")
    cli = Cli(dict(world.c.ansible_env, ANSIBLE_PIPELINING="True"), str(tmp_path / "home"))
    state = inv / "group_vars" / "all" / "gateway.yml"

    # bad input: refused before anything is written (no state file, no playbook run)
    for args in (["acme", "--allow", "198.51.100.7/24"], ["acme", "--to", "{{ 7*7 }}:80"], ["Acme"],
                 ["acme", "--to", "203.0.113.2:8080", "--public-port", "22"], ["nobody"]):
        res = cli("-i", str(inv), "gateway", "expose", *args, "--json", check=False)
        assert res.rc != 0, (args, res.stdout, res.stderr)
        assert not state.exists()

    out = cli("-i", str(inv), "gateway", "expose", "acme", "--json").json
    assert out == {"tenant": "acme", "name": "db", "port": 5432, "target": "127.0.0.1:5432",
                   "sources": ["198.51.100.2/32"]}
    assert "!unsafe" in state.read_text()
    assert world.sql("pa", "acme_app") == "OK acme_app"
    rows = cli("-i", str(inv), "gateway", "list", "--json").json
    assert rows == [out]
    st = cli("-i", str(inv), "gateway", "status", "--json").json
    assert st["active"] is True
    assert any("198.51.100.2/32" in r and "5432" in r for r in st["chains"]["filter"]["BQ-INPUT"]), json.dumps(st)
    assert cli("-i", str(inv), "gateway", "unexpose", "acme", "--json").json["status"] == "removed"
    assert world.tcp("pa", GW_VPN, 5432) == DROPPED
    res = cli("-i", str(inv), "gateway", "unexpose", "acme", check=False)
    assert res.rc == 1 and "no such exposure" in res.stderr


def test_gateway_templates_run_as_awx_jobs(world, tmp_path):
    """The "berqenas gateway apply" and "gateway status" job templates (extensions/awx/job_templates.yml) launched
    through the AWX double (ansible-runner for real) with an inventory holding acme's exposure as desired state:
    acme's peer reaches its database through the gateway, and the status job reads the rule back."""
    from tests.support.awx_double import TemplateJobs

    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(open(world.c.inventory_path).read())
    (inv / "group_vars" / "all" / "gateway.yml").write_text(yaml.safe_dump(world.vars([ACME_DB])))
    (inv / "group_vars" / "all" / "tenants.yml").write_text("berqenas_tenants: [{name: acme}, {name: globex}]\n")
    assert world.tcp("pa", GW_VPN, 5432) == DROPPED  # test_cli_expose_list_status_unexpose removed it
    jobs = TemplateJobs(tmp_path, inv, ("berqenas gateway apply", "berqenas gateway status"), world.c.ansible_env)
    try:
        job, fails = jobs.launch("berqenas gateway apply", {"berqenas_gateway_state": "present"})
        assert job["status"] == "successful", (job["job_explanation"], fails)
        assert [(e["tenant"], e["port"]) for e in job["artifacts"]["berqenas_result"]["exposures"]] == [("acme", 5432)]
        assert world.sql("pa", "acme_app") == "OK acme_app"
        job, fails = jobs.launch("berqenas gateway status", {})
        assert job["status"] == "successful", (job["job_explanation"], fails)
        chains = job["artifacts"]["berqenas_result"]["status"]["chains"]["filter"]["BQ-INPUT"]
        assert any("198.51.100.2/32" in r and "5432" in r for r in chains), chains
    finally:
        jobs.close()


def test_state_absent_removes_everything_of_the_platform(world):
    """Last (it also removes the management allow-rule): ufw stays enabled, nothing of the platform remains."""
    ok(world.apply([ACME_DB], diff=True))
    res = ok(world.apply([], berqenas_gateway_state="absent"))
    assert res["changed"] > 0
    saved = world.gw(["iptables-save"]) + world.gw(["ip6tables-save"])
    assert "BQ-" not in saved and "bq:" not in saved, saved
    for path in ("/etc/ufw/before.rules", "/etc/ufw/before6.rules", "/etc/ufw/after.init", HBA):
        assert "BERQENAS GATEWAY" not in world.gw(["cat", path]), path
    assert world.c["gw"].run(["test", "-e", "/etc/ufw/berqenas-gateway.hook"], check=False).returncode == 1
    assert "Status: active" in world.gw(["ufw", "status"])
    assert world.tcp("pa", GW_VPN, 5432) == DROPPED
    ok(world.apply([], berqenas_gateway_state="absent"), changed=0)
