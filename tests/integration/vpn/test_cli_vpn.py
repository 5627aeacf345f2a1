"""`berqenas vpn ...` against a WireGuard hub machine: the CLI writes desired state, runs the playbooks through
ansible-runner, fetches client configs; a client machine uses the fetched config for real traffic."""

import json
import os
import stat
import tempfile

import pytest
import yaml

from tests.support.cli import Cli
from tests.support.machines import Topology

pytestmark = [pytest.mark.vpn, pytest.mark.cli]


@pytest.fixture(scope="module")
def vpn_cli(machines_module, ansible_env):
    topo = Topology()
    topo.machine("hub", groups=["wireguard"], mask=["postgresql.service"])
    topo.machine("c1", mask=["postgresql.service"])
    topo.link("wan", {"hub": "192.0.2.1/24", "c1": "192.0.2.11/24"})
    cluster = machines_module(topo)
    home = tempfile.mkdtemp(prefix="bq-vpncli-")
    os.chmod(home, 0o700)
    inv = os.path.join(home, "platform")
    os.makedirs(os.path.join(inv, "group_vars", "all"))
    with open(cluster.inventory_path) as f:
        hosts = yaml.safe_load(f)
    with open(os.path.join(inv, "hosts.yml"), "w") as f:
        yaml.safe_dump(hosts, f)
    with open(os.path.join(inv, "group_vars", "wireguard.yml"), "w") as f:
        yaml.safe_dump({"wireguard_addresses": ["198.51.100.1/24"], "wireguard_endpoint": "192.0.2.1",
                        "wireguard_persistent_keepalive": 5, "wireguard_manage_packages": False}, f)  # fmt: skip
    with open(os.path.join(inv, "group_vars", "all", "tenants.yml"), "w") as f:
        f.write("berqenas_tenants: [acme, globex]\n")
    cli = Cli(ansible_env, os.path.join(home, "home"))
    yield cluster, cli, inv
    import shutil

    shutil.rmtree(home, ignore_errors=True)


def test_peer_add_fetch_use_list_status_remove(vpn_cli):
    cluster, cli, inv = vpn_cli
    c1 = cluster["c1"]
    res = cli("-i", inv, "vpn", "peer", "add", "laptop1", "--tenant", "acme", "--qr", "--json")
    out = res.json
    assert out["name"] == "laptop1" and out["tenant"] == "acme" and out["addresses"] == ["198.51.100.2"]
    conf = open(out["config_file"]).read()
    assert stat.S_IMODE(os.stat(out["config_file"]).st_mode) == 0o600
    assert out["qr_file"].endswith("laptop1.png") and open(out["qr_file"], "rb").read(4) == b"\x89PNG"
    priv = [ln.split(" = ", 1)[1] for ln in conf.splitlines() if ln.startswith("PrivateKey = ")][0]
    assert priv not in res.stdout + res.stderr  # the key is in the 0600 file only
    text = cli("-i", inv, "vpn", "peer", "add", "laptop1", "--tenant", "acme", "--qr")
    assert "\u2588" in text.stdout or "█" in text.stdout or "\x1b" in text.stdout  # the terminal QR code
    assert priv not in text.stdout + text.stderr

    # the fetched config works on a real client
    c1.write_file("/etc/wireguard/wg0.conf", conf, mode=0o600)
    c1.run(["systemctl", "restart", "wg-quick@wg0.service"])
    assert c1.wait_ping("198.51.100.1")

    # a client-supplied key with an expiry
    pub = cluster["hub"].run(["wg", "pubkey"], input=cluster["hub"].run(["wg", "genkey"]).stdout).stdout.strip()
    out2 = cli("-i", inv, "vpn", "peer", "add", "phone1", "--tenant", "globex", "--public-key", pub,
               "--expires", "2030-01-01T00:00:00Z", "--json").json  # fmt: skip
    assert out2["addresses"] == ["198.51.100.3"] and out2["qr_file"] is None
    assert "\nPrivateKey = " not in open(out2["config_file"]).read()

    listed = {p["name"]: p for p in cli("-i", inv, "vpn", "peer", "list", "--json").json}
    assert set(listed) == {"laptop1", "phone1"}
    assert listed["phone1"]["expires"] == "2030-01-01T00:00:00Z" and listed["phone1"]["enabled"] is True
    assert listed["laptop1"]["tenant"] == "acme"
    status = {p["name"]: p for p in cli("-i", inv, "vpn", "status", "--json").json}
    assert status["laptop1"]["state"] == "active" and status["laptop1"]["latest_handshake_age_s"] is not None
    assert status["laptop1"]["rx_bytes"] > 0
    assert status["phone1"]["state"] == "never"

    # `berqenas status` on a remote host: ONE read-only health_check.yml run on the hub; the live figures
    # (addresses, state, handshake, bytes, the interface's check) come only from that run
    plat = cli("-i", inv, "status", "--json").json
    assert plat["read_from"]["wireguard"] == "playbook", plat["read_from"]
    peers = {p["name"]: p for p in plat["peers"]}
    assert peers["laptop1"]["tenant"] == "acme" and peers["laptop1"]["addresses"] == ["198.51.100.2"]
    assert peers["laptop1"]["state"] == "active" and peers["laptop1"]["rx_bytes"] > 0, peers["laptop1"]
    assert peers["laptop1"]["latest_handshake_age_s"] is not None
    assert peers["phone1"]["tenant"] == "globex" and peers["phone1"]["addresses"] == ["198.51.100.3"]
    assert peers["phone1"]["state"] == "never"
    (wg0,) = [c for c in plat["health"] if c["kind"] == "wireguard" and c["name"] == "wg0"]
    assert wg0["host"] == "hub" and wg0["healthy"] is True and wg0["detail"].startswith("up, port "), wg0
    tenants = {t["name"]: t for t in plat["tenants"]}
    assert (tenants["acme"]["peers"], tenants["acme"]["peers_active"]) == (1, 1)
    assert (tenants["globex"]["peers"], tenants["globex"]["peers_active"]) == (1, 0)

    # desired state is data, written as !unsafe
    vpn_yml = open(os.path.join(inv, "group_vars", "all", "vpn.yml")).read()
    assert "name: !unsafe 'laptop1'" in vpn_yml

    cli("-i", inv, "vpn", "peer", "remove", "phone1")
    assert [p["name"] for p in cli("-i", inv, "vpn", "peer", "list", "--json").json] == ["laptop1"]
    assert c1.wait_ping("198.51.100.1")


@pytest.mark.parametrize(
    "args, msg, code",
    [  # malformed input is a usage error (2); a tenant that does not exist, a failure (1)
        (["Bad!", "--tenant", "acme"], "invalid peer name", 2),
        (["x1", "--tenant", "acme", "--public-key", "A" * 43 + "="], "all-zero", 2),
        (["x1", "--tenant", "acme", "--expires", "soon"], "expires", 2),
        (["x1", "--tenant", "{{ 6*7 }}"], "tenant name", 2),
        (["x1", "--tenant", "nobody"], "no tenant nobody", 1),
    ],
)
def test_bad_input_rejected_before_state_is_written(vpn_cli, args, msg, code):
    cluster, cli, inv = vpn_cli
    path = os.path.join(inv, "group_vars", "all", "vpn.yml")
    before = open(path).read() if os.path.exists(path) else None
    res = cli("-i", inv, "vpn", "peer", "add", *args, "--json", check=False)
    assert res.rc == code, (res.stdout, res.stderr)
    assert msg in res.stdout + res.stderr
    after = open(path).read() if os.path.exists(path) else None
    assert after == before
    if res.stdout.strip().startswith("{"):
        assert "error" in json.loads(res.stdout)


def test_vpn_templates_run_as_awx_jobs_against_the_hub(vpn_cli, ansible_env, tmp_path):
    """The "berqenas vpn apply" and "vpn status" job templates (extensions/awx/job_templates.yml) launched through
    the AWX double (tests/support/awx_double.py, ansible-runner for real) with this module's inventory: a peer an
    operator adds to the inventory's desired state reaches the hub's live interface."""
    from tests.support.awx_double import TemplateJobs

    cluster, cli, inv = vpn_cli
    hub = cluster["hub"]
    pub = hub.run(["wg", "pubkey"], input=hub.run(["wg", "genkey"]).stdout).stdout.strip()
    # desired state as the CLI keeps it in the inventory (its !unsafe strings read back as plain strings)
    loader = type("L", (yaml.SafeLoader,), {})
    loader.add_constructor("!unsafe", lambda ld, node: ld.construct_scalar(node))
    vpn_path = os.path.join(inv, "group_vars", "all", "vpn.yml")
    with open(vpn_path) as f:
        state = yaml.load(f, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    state["berqenas_vpn_peers"].append({"name": "awxpeer", "tenant": "globex", "public_key": pub})
    with open(vpn_path, "w") as f:
        yaml.safe_dump(state, f)
    jobs = TemplateJobs(tmp_path, inv, ("berqenas vpn apply", "berqenas vpn status"), ansible_env)
    try:

        def launch(name, answers):
            job, fails = jobs.launch(name, answers)
            assert job["status"] == "successful", (job["job_explanation"], fails)
            return job["artifacts"]["berqenas_result"]

        applied = launch("berqenas vpn apply", {"berqenas_vpn_hosts": "wireguard"})
        (mine,) = [p for p in applied["peers"] if p["name"] == "awxpeer"]
        assert mine["tenant"] == "globex" and len(mine["addresses"]) == 1, mine
        addr = mine["addresses"][0]
        assert addr.startswith("198.51.100.") and addr not in ("198.51.100.1", "198.51.100.2"), mine
        live = hub.run(["wg", "show", "wg0", "allowed-ips"]).stdout
        assert f"{pub}\t{addr}/32" in live, live
        # the survey's defaults (host group wireguard, interface wg0): the peer, live, with no handshake yet
        reported = launch("berqenas vpn status", {})
        assert reported["running"] is True
        (seen,) = [p for p in reported["peers"] if p["name"] == "awxpeer"]
        assert (seen["tenant"], seen["addresses"], seen["state"]) == ("globex", [addr], "never"), seen
    finally:
        jobs.close()
