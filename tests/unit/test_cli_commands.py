"""Every `berqenas` command through click's CliRunner with a FAKE runner adapter (runner.run_playbook).

Pins, for each command: the ``--json`` shape on success, the exit code of each kind of failure (malformed input
2, a referenced object that does not exist 1, a failed run 1, a timeout 124, a cancelled run 130), that bad
input runs no playbook and writes no state, and that a failed apply puts the desired state back.
The playbooks themselves are exercised against real systems in tests/integration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from berqenas_orchestrator import runner
from berqenas_orchestrator.cli import main
from click.testing import CliRunner

pytestmark = pytest.mark.unit

KEY_A = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_B = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="


class FakeRunner:
    """Stands in for runner.run_playbook: records each call and answers from ``answers``/``status``."""

    def __init__(self, inventory: Path):
        self.inventory = inventory
        self.calls: list[dict] = []
        self.answers: dict[str, dict] = {}
        self.status: dict[str, str] = {}

    def __call__(self, playbook, *, inventory, extravars=None, check=False, diff=False, limit=None, verbosity=0,
                 timeout=None, progress=None, env=None, keep_dir=None):
        vars_dir = self.inventory / "group_vars" / "all"
        state = {p.name: yaml.safe_load(p.read_text().replace("!unsafe ", "")) or {}
                 for p in sorted(vars_dir.glob("*.yml"))} if vars_dir.is_dir() else {}
        self.calls.append({"playbook": playbook, "extravars": dict(extravars or {}), "check": check,
                           "state": state, "keep_dir": keep_dir})
        if playbook == "tenant_show.yml":  # the play fetches the credentials file into berqenas_fetch_dir
            name = extravars["berqenas_tenant"]
            Path(extravars["berqenas_fetch_dir"], f"{name}.json").write_text(json.dumps(
                {"app": {"user": f"{name}_app", "password": "pw-app"},
                 "ro": {"user": f"{name}_ro", "password": "pw-ro"}, "host": "127.0.0.1", "port": 5432}))
        status = self.status.get(playbook, "successful")
        result = runner.RunResult(status=status, rc=0 if status == "successful" else 2,
                                  data={"berqenas_result": self.answers.get(playbook, {})})
        if status == "failed":
            result.failures.append(f"localhost: the task of {playbook}: it broke")
        return result

    @property
    def playbooks(self) -> list[str]:
        return [c["playbook"] for c in self.calls]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    fake = FakeRunner(inv)
    monkeypatch.setattr(runner, "run_playbook", fake)
    from berqenas_orchestrator import apikeys  # every command needs a key: an admin key of this home

    for var in (apikeys.ENV_KEYSTORE, apikeys.ENV_KEY_FILE, "BERQENAS_AUDIT_LOG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(apikeys.ENV_KEY, apikeys.Keystore(tmp_path / "home" / "apikeys.json").init()[1])

    def invoke(*args, stdin=None):
        argv = ["--home", str(tmp_path / "home"), "-i", str(inv), *args]
        with CliRunner().isolation(input=stdin) as (out, err, _):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code
        res = Result(code, out.getvalue().decode(), err.getvalue().decode())
        return res

    invoke.fake = fake
    invoke.inv = inv
    invoke.tmp = tmp_path
    return invoke


class Result:
    def __init__(self, code, stdout, stderr):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def state(cli, name):
    p = cli.inv / "group_vars" / "all" / name
    return p.read_text() if p.exists() else None


def with_tenants(cli, *names):
    (cli.inv / "group_vars" / "all" / "tenants.yml").write_text(
        yaml.safe_dump({"berqenas_tenants": [{"name": n} for n in names]}))


# ---------------------------------------------------------------------------------------------- tenant

def _roles(name):
    """The names postgres_tenants returns with every tenant (the CLI shows them, never derives them)."""
    return {"name": name, "schema": name, "owner_role": f"{name}_owner", "login_role": f"{name}_app",
            "readonly_role": f"{name}_ro"}


def test_tenant_create_json_and_state(cli):
    cli.fake.answers["tenant_create.yml"] = {"database": "berqenas", "tenants": [
        {**_roles("acme"), "status": "created", "changed": True, "actions": ["create schema acme"],
         "credentials_file": "/etc/berqenas/tenants/acme.json"}]}
    res = cli("tenant", "create", "acme", "--json")
    assert res.code == 0, res
    assert res.json == {"name": "acme", "schema": "acme", "owner_role": "acme_owner", "login_role": "acme_app",
                        "readonly_role": "acme_ro", "database": "berqenas",
                        "credentials_file": "/etc/berqenas/tenants/acme.json", "status": "created", "changed": True,
                        "actions": ["create schema acme"], "check": False}
    assert cli.fake.calls[0]["state"]["tenants.yml"] == {"berqenas_tenants": [{"name": "acme"}]}  # written first
    assert "!unsafe 'acme'" in state(cli, "tenants.yml")


def test_tenant_create_check_writes_nothing(cli):
    res = cli("tenant", "create", "acme", "--check", "--json")
    assert res.code == 0 and res.json["check"] is True, res
    assert cli.fake.calls[0]["check"] and cli.fake.calls[0]["extravars"]["berqenas_tenant"] == "acme"
    assert state(cli, "tenants.yml") is None


@pytest.mark.parametrize("status,code", [("failed", 1), ("timeout", 124), ("canceled", 130)])
def test_tenant_create_failed_run_restores_state(cli, status, code):
    with_tenants(cli, "globex")
    before = state(cli, "tenants.yml")
    cli.fake.status["tenant_create.yml"] = status
    res = cli("tenant", "create", "acme", "--json")
    assert res.code == code, res
    assert res.json["exit_code"] == code and res.json["restored"] == ["tenants.yml"]
    assert "desired state restored" in res.json["error"]
    assert cli.fake.calls[0]["state"]["tenants.yml"]["berqenas_tenants"][-1] == {"name": "acme"}
    assert state(cli, "tenants.yml") == before


@pytest.mark.parametrize("bad", ["Bad", "pg_x", "public", "null", "a-b", "{{ 6*7 }}", ""])
def test_tenant_bad_names_are_usage_errors(cli, bad):
    for cmd in (["create", bad], ["delete", bad, "--yes"], ["show", bad]):
        res = cli("tenant", *cmd, "--json")
        assert res.code == 2 and "invalid tenant name" in res.stderr, res
    assert cli.fake.calls == [] and state(cli, "tenants.yml") is None


def test_tenant_delete(cli):
    with_tenants(cli, "acme", "globex")
    res = cli("tenant", "delete", "acme", "--json")
    assert res.code == 2 and "refused without --yes" in res.stdout, res
    cli.fake.status["tenant_delete.yml"] = "failed"
    res = cli("tenant", "delete", "acme", "--yes", "--json")
    assert res.code == 1 and "acme" in state(cli, "tenants.yml"), res  # nothing removed when the run failed
    cli.fake.status.clear()
    cli.fake.answers["tenant_delete.yml"] = {"tenants": [
        {"status": "deleted", "backup_file": "/var/backups/acme.dump", "actions": ["drop schema acme"]}]}
    res = cli("tenant", "delete", "acme", "--yes", "--json")
    assert res.code == 0, res
    assert res.json == {"name": "acme", "status": "deleted", "backup_file": "/var/backups/acme.dump",
                        "actions": ["drop schema acme"]}
    assert "acme" not in state(cli, "tenants.yml") and "globex" in state(cli, "tenants.yml")


def test_tenant_list_and_show(cli):
    res = cli("tenant", "list")
    assert res.code == 0 and res.stdout == "no tenants\n" and cli.fake.calls == [], res
    with_tenants(cli, "acme", "globex")
    cli.fake.answers["tenant_list.yml"] = {"database": "berqenas", "tenants": [
        {**_roles("acme"), "status": "unchanged", "state": "ok", "credentials_file": "/c/acme.json"},
        {**_roles("globex"), "status": "updated", "state": "drifted"}]}
    rows = cli("tenant", "list", "--json").json
    assert [(r["name"], r["state"]) for r in rows] == [("acme", "ok"), ("globex", "drifted")]
    assert set(rows[0]) == {"name", "schema", "owner_role", "login_role", "readonly_role", "database",
                            "credentials_file", "state"}
    text = cli("tenant", "list").stdout.splitlines()
    assert text[0].split() == ["NAME", "STATE", "LOGIN_ROLE", "DATABASE"]
    assert text[1].split() == ["acme", "ok", "acme_app", "berqenas"]
    res = cli("tenant", "show", "nosuch", "--json")
    assert res.code == 1 and res.json["error"].startswith("show tenant nosuch"), res
    out = cli("tenant", "show", "acme", "--credentials", "--json").json
    assert out["credentials"] == {"app": {"user": "acme_app", "password": "pw-app"},
                                  "ro": {"user": "acme_ro", "password": "pw-ro"}}
    assert out["host"] == "127.0.0.1" and out["port"] == 5432


# ---------------------------------------------------------------------------------------------- vpn

def _vpn_answers(cli, name="laptop1"):
    # vpn_apply.yml imports vpn_peer_config.yml when berqenas_vpn_peer is given: one run publishes both answers
    cli.fake.answers["vpn_apply.yml"] = {"peers": [
        {"name": name, "tenant": "acme", "addresses": ["198.51.100.2/32"], "key_source": "generated"}],
        "peer": name, "files": [f"{name}.conf", f"{name}.png"]}


def test_vpn_peer_add_json_state_and_fetch(cli):
    with_tenants(cli, "acme")
    _vpn_answers(cli)
    res = cli("vpn", "peer", "add", "laptop1", "--tenant", "acme", "--expires", "2026-12-31T02:00:00+02:00",
              "--json")
    assert res.code == 0, res
    dest = str(cli.tmp / "home" / "vpn" / "laptop1")
    assert res.json == {"name": "laptop1", "tenant": "acme", "addresses": ["198.51.100.2/32"],
                        "config_file": f"{dest}/laptop1.conf", "qr_file": None}
    assert cli.fake.playbooks == ["vpn_apply.yml"]  # the client config is fetched in the same run
    assert cli.fake.calls[0]["state"]["vpn.yml"]["berqenas_vpn_peers"] == [
        {"name": "laptop1", "tenant": "acme", "expires": "2026-12-31T00:00:00Z"}]
    assert cli.fake.calls[0]["extravars"]["berqenas_vpn_peer"] == "laptop1"
    assert cli.fake.calls[0]["extravars"]["berqenas_vpn_dest"] == dest


@pytest.mark.parametrize("args,msg,code", [
    (["Bad!", "--tenant", "acme"], "invalid peer name", 2),
    (["-x", "--tenant", "acme"], "", 2),
    (["x1", "--tenant", "Acme"], "invalid tenant name", 2),
    (["x1", "--tenant", "acme", "--public-key", "A" * 43 + "="], "all-zero", 2),
    (["x1", "--tenant", "acme", "--public-key", "{{ 6*7 }}"], "template syntax", 2),
    (["x1", "--tenant", "acme", "--expires", "soon"], "expires", 2),
    (["x1", "--tenant", "acme", "--expires", "2026-12-31T00:00:00"], "timezone", 2),
    (["x1", "--tenant", "nobody"], "no tenant nobody", 1),
    (["x1", "--tenant", "acme", "--public-key", KEY_A], "belongs to another peer", 1),
])
def test_vpn_peer_add_refusals(cli, args, msg, code):
    with_tenants(cli, "acme")
    (cli.inv / "group_vars" / "all" / "vpn.yml").write_text(yaml.safe_dump(
        {"berqenas_vpn_peers": [{"name": "other", "tenant": "acme", "public_key": KEY_A}]}))
    before = state(cli, "vpn.yml")
    res = cli("vpn", "peer", "add", *args, "--json")
    assert res.code == code and msg in res.stdout + res.stderr, res
    assert cli.fake.calls == [] and state(cli, "vpn.yml") == before


def test_vpn_peer_add_failed_apply_restores_state(cli):
    with_tenants(cli, "acme")
    (cli.inv / "group_vars" / "all" / "vpn.yml").write_text(yaml.safe_dump(
        {"berqenas_vpn_peers": [{"name": "laptop1", "tenant": "acme", "public_key": KEY_A}]}))
    before = state(cli, "vpn.yml")
    cli.fake.status["vpn_apply.yml"] = "failed"
    res = cli("vpn", "peer", "add", "laptop1", "--tenant", "acme", "--public-key", KEY_B, "--json")
    assert res.code == 1, res
    assert res.json["error"].startswith("vpn peer add laptop1: localhost: the task of vpn_apply.yml")
    assert res.json["error"].endswith("(desired state restored)") and res.json["status"] == "failed"
    assert cli.fake.calls[0]["state"]["vpn.yml"]["berqenas_vpn_peers"][0]["public_key"] == KEY_B
    assert state(cli, "vpn.yml") == before and cli.fake.playbooks == ["vpn_apply.yml"]
    assert not (cli.tmp / "home" / "vpn" / "laptop1").exists()  # no empty client-config directory left


def test_vpn_peer_remove(cli):
    res = cli("vpn", "peer", "remove", "laptop1", "--json")
    assert res.code == 1 and "no such peer" in res.json["error"], res
    (cli.inv / "group_vars" / "all" / "vpn.yml").write_text(yaml.safe_dump(
        {"berqenas_vpn_peers": [{"name": "laptop1", "tenant": "acme"}, {"name": "phone1", "tenant": "acme"}]}))
    before = state(cli, "vpn.yml")
    cli.fake.status["vpn_apply.yml"] = "timeout"
    res = cli("vpn", "peer", "remove", "laptop1", "--json")
    assert res.code == 124 and state(cli, "vpn.yml") == before, res
    cli.fake.status.clear()
    res = cli("vpn", "peer", "remove", "laptop1", "--json")
    assert res.code == 0 and res.json == {"name": "laptop1", "status": "removed"}, res
    assert "laptop1" not in state(cli, "vpn.yml") and "phone1" in state(cli, "vpn.yml")


def test_vpn_peer_list_and_status(cli):
    cli.fake.answers["vpn_status.yml"] = {"peers": [
        {"name": "laptop1", "tenant": "acme", "addresses": ["198.51.100.2/32"], "enabled": True, "expires": None,
         "config_file": "/etc/berqenas/wireguard/wg0/clients/laptop1.conf", "qr_file": None,
         "latest_handshake_age_s": 3, "rx_bytes": 10, "tx_bytes": 20, "state": "active", "public_key": KEY_A}]}
    rows = cli("vpn", "peer", "list", "--json").json
    assert rows == [{"name": "laptop1", "tenant": "acme", "addresses": ["198.51.100.2/32"], "enabled": True,
                     "expires": None, "config_file": "/etc/berqenas/wireguard/wg0/clients/laptop1.conf",
                     "qr_file": None}]
    assert cli("vpn", "peer", "list").stdout.splitlines()[1].split() == ["laptop1", "acme", "198.51.100.2/32",
                                                                         "yes", "-"]
    rows = cli("vpn", "status", "--json").json
    assert rows == [{"name": "laptop1", "addresses": ["198.51.100.2/32"], "latest_handshake_age_s": 3,
                     "rx_bytes": 10, "tx_bytes": 20, "state": "active"}]
    cli.fake.status["vpn_status.yml"] = "failed"
    assert cli("vpn", "status", "--json").code == 1


# ---------------------------------------------------------------------------------------------- gateway

def test_gateway_expose_json_and_state(cli):
    with_tenants(cli, "acme")
    cli.fake.answers["gateway_apply.yml"] = {"exposures": [
        {"tenant": "acme", "name": "db", "port": 5432, "target": "127.0.0.1:5432", "sources": ["198.51.100.2/32"],
         "kind": "input"}]}
    res = cli("gateway", "expose", "acme", "--allow", "203.0.113.0/24", "--json")
    assert res.code == 0, res
    assert res.json == {"tenant": "acme", "name": "db", "port": 5432, "target": "127.0.0.1:5432",
                        "sources": ["198.51.100.2/32"]}
    assert cli.fake.calls[0]["state"]["gateway.yml"]["berqenas_exposures"] == [
        {"tenant": "acme", "name": "db", "service": "postgres", "allow": ["203.0.113.0/24"]}]


@pytest.mark.parametrize("args,code", [
    (["Acme"], 2), (["acme", "--name", "Bad!"], 2), (["acme", "--allow", "198.51.100.7/24"], 2),
    (["acme", "--to", "{{ 7*7 }}:80"], 2), (["acme", "--to", "$(id):80"], 2), (["acme", "--to", "-oX=1:80"], 2),
    (["acme", "--to", "203.0.113.2"], 2), (["acme", "--to", "203.0.113.2:70000"], 2),
    (["acme", "--public-port", "0"], 2), (["acme", "--to", "203.0.113.2:8080", "--public-port", "22"], 2),
    (["acme", "--service", "postgres", "--to", "203.0.113.2:80"], 2), (["nobody"], 1),
])
def test_gateway_expose_refusals(cli, args, code):
    with_tenants(cli, "acme")
    res = cli("gateway", "expose", *args, "--json")
    assert res.code == code, res
    assert cli.fake.calls == [] and state(cli, "gateway.yml") is None


def test_gateway_failed_apply_restores_state_and_unexpose(cli):
    with_tenants(cli, "acme")
    cli.fake.status["gateway_apply.yml"] = "failed"
    res = cli("gateway", "expose", "acme", "--json")
    assert res.code == 1 and res.json["restored"] == ["gateway.yml"], res
    assert state(cli, "gateway.yml") is None  # it did not exist before: gone again
    res = cli("gateway", "unexpose", "acme", "--json")
    assert res.code == 1 and "no such exposure" in res.json["error"], res
    (cli.inv / "group_vars" / "all" / "gateway.yml").write_text(yaml.safe_dump(
        {"berqenas_exposures": [{"tenant": "acme", "name": "db", "service": "postgres"}]}))
    before = state(cli, "gateway.yml")
    res = cli("gateway", "unexpose", "acme", "--json")
    assert res.code == 1 and state(cli, "gateway.yml") == before, res
    cli.fake.status.clear()
    res = cli("gateway", "unexpose", "acme", "--json")
    assert res.code == 0 and res.json == {"tenant": "acme", "name": "db", "status": "removed"}, res
    assert "acme" not in state(cli, "gateway.yml")


def test_gateway_list_and_status(cli):
    cli.fake.answers["gateway_status.yml"] = {
        "exposures": [{"tenant": "acme", "name": "db", "port": 5432, "target": "127.0.0.1:5432",
                       "sources": ["198.51.100.2/32"], "kind": "input"}],
        "status": {"ufw": ["Status: active"], "chains": {"filter": {"BQ-INPUT": ["-N BQ-INPUT"]}}}}
    assert cli("gateway", "list", "--json").json == [
        {"tenant": "acme", "name": "db", "port": 5432, "target": "127.0.0.1:5432", "sources": ["198.51.100.2/32"]}]
    assert cli("gateway", "list").stdout.splitlines()[1].split() == ["acme", "db", "5432", "127.0.0.1:5432",
                                                                     "198.51.100.2/32"]
    assert cli("gateway", "status", "--json").json == {"ufw": ["Status: active"],
                                                       "chains": {"filter": {"BQ-INPUT": ["-N BQ-INPUT"]}}}


# ---------------------------------------------------------------------------------------------- remotedb, sync

def _remotedb_args(cli, **over):
    pw = cli.tmp / "pw"
    pw.write_text("s3cret-Pa55\n")
    args = {"--tenant": "acme", "--host": "sql.example.com", "--port": "1433", "--user": "sa",
            "--password-file": str(pw), "--database": "erp", **over}
    return [x for kv in args.items() for x in kv]


def test_remotedb_add_list_remove(cli, monkeypatch):
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", "")
    with_tenants(cli, "acme")
    res = cli("remotedb", "add", "erp", *_remotedb_args(cli), "--table", "dbo.Orders", "--json")
    assert res.code == 0, res
    assert res.json == {"name": "erp", "tenant": "acme", "host": "sql.example.com", "port": 1433, "user": "sa",
                        "database": "erp", "tables": ["[dbo].[Orders]"]}
    assert "s3cret" not in res.stdout + res.stderr + state(cli, "remotedbs.yml")
    assert cli.fake.calls == []  # desired state only: no playbook
    assert cli("remotedb", "list", "--json").json == [res.json]
    assert cli("remotedb", "list").stdout.splitlines()[1].split() == [
        "erp", "acme", "sa", "sql.example.com", "1433", "erp", "[dbo].[Orders]"]
    res = cli("remotedb", "remove", "nope", "--json")
    assert res.code == 1 and "no such remote database" in res.json["error"], res
    res = cli("remotedb", "remove", "erp", "--json")
    assert res.code == 0 and res.json == {"name": "erp", "removed": True}, res
    assert cli("remotedb", "list").stdout == "no remote databases\n"


@pytest.mark.parametrize("name,over,code", [
    ("acme-corp", {}, 2), ("null", {}, 2), ("pg_catalog", {}, 2), ("true", {}, 2),
    ("erp", {"--host": "$(id)"}, 2), ("erp", {"--host": "-oProxyCommand=id"}, 2), ("erp", {"--host": "a b"}, 2),
    ("erp", {"--host": "{{ 6*7 }}"}, 2), ("erp", {"--port": "70000"}, 2), ("erp", {"--tenant": "Not-A-Tenant"}, 2),
    ("erp", {"--user": "{{ x }}"}, 2), ("erp", {"--database": ""}, 2), ("erp", {"--tenant": "nobody"}, 1),
])
def test_remotedb_add_refusals(cli, name, over, code):
    with_tenants(cli, "acme")
    res = cli("remotedb", "add", name, *_remotedb_args(cli, **over), "--json")
    assert res.code == code, res
    assert state(cli, "remotedbs.yml") is None and state(cli, "remotedb_secrets.yml") is None


def _with_remotedb(cli, tables=("[dbo].[Orders]",)):
    (cli.inv / "group_vars" / "all" / "remotedbs.yml").write_text(yaml.safe_dump({"berqenas_remotedbs": [
        {"name": "erp", "tenant": "acme", "host": "sql.example.com", "port": 1433, "user": "sa", "database": "erp",
         "tables": list(tables)}]}))


def test_remotedb_test(cli):
    res = cli("remotedb", "test", "erp", "--json")
    assert res.code == 1 and cli.fake.calls == [], res
    _with_remotedb(cli)
    cli.fake.answers["remotedb_test.yml"] = {"source": {"product_version": "16.0.1000.6", "version": "SQL 2022",
                                                        "latency_ms": 1.5, "login_ms": 4}}
    res = cli("remotedb", "test", "erp", "--json")
    assert res.json == {"name": "erp", "server_version": "16.0.1000.6", "version": "SQL 2022", "latency_ms": 1.5,
                        "login_ms": 4}, res
    assert cli.fake.calls[0]["extravars"]["berqenas_remotedb"] == "erp"
    cli.fake.status["remotedb_test.yml"] = "failed"
    assert cli("remotedb", "test", "erp", "--json").code == 1


def test_sync_run_and_status(cli):
    res = cli("sync", "run", "erp", "--json")
    assert res.code == 1 and "no such remote database" in res.json["error"], res
    assert cli("sync", "run", "Bad-Name", "--json").code == 2
    assert cli("sync", "run", "erp", "--table", "[dbo", "--json").code == 2
    _with_remotedb(cli, tables=())
    res = cli("sync", "run", "erp", "--json")
    assert res.code == 2 and "no tables configured" in res.json["error"], res
    _with_remotedb(cli)
    table = {"source": "[dbo].[Orders]", "target": "acme.orders", "inserted": 2, "updated": 0, "deleted": 0,
             "rows_per_s": 100.0, "watermark_to": "0x00000000000007D1"}
    cli.fake.answers["sync_run.yml"] = {"status": "ok", "changed": True, "tables": [table]}
    res = cli("sync", "run", "erp", "--json")
    assert res.json == {"remotedb": "erp", "status": "ok", "changed": True, "check": False, "tables": [table]}, res
    assert cli.fake.calls[-1]["extravars"] == {"berqenas_home": str(cli.tmp / "home"), "berqenas_remotedb": "erp",
                                               "berqenas_sync_tables": [], "berqenas_sync_full": False,
                                               "berqenas_sync_force": False,
                                               "berqenas_sync_lock_timeout": 30}
    cli.fake.status["sync_run.yml"] = "failed"
    cli.fake.answers["sync_run.yml"] = {"status": "locked", "msg": "sync erp: locked by another run"}
    res = cli("sync", "run", "erp", "--json")
    assert res.code == 1 and res.json["status"] == "locked" and res.json["remotedb"] == "erp", res
    cli.fake.status.clear()
    cli.fake.answers["sync_status.yml"] = {"tables": [
        {"job": "erp", "source": "[dbo].[Orders]", "target": "acme.orders", "watermark": "0x07D1",
         "last_run_at": "2026-12-02T10:00:00Z", "last_result": "ok", "rows_total": 2, "lag_s": 5}]}
    assert cli("sync", "status", "--json").json == [
        {"remotedb": "erp", "source": "[dbo].[Orders]", "target": "acme.orders", "watermark": "0x07D1",
         "last_run_at": "2026-12-02T10:00:00Z", "last_result": "ok", "rows_total": 2, "lag_s": 5, "next_run": None}]
    # the next run from role sync_schedule's timer (systemctl list-timers --output=json: microseconds)
    cli.fake.answers["sync_status.yml"]["timers"] = [
        {"unit": "berqenas-sync-erp.timer", "next": 1796250600000000, "last": 0},
        {"unit": "berqenas-sync-crm.timer", "next": 1796250700000000}, {"unit": "other.timer", "next": 1}]
    cli.fake.answers["sync_run.yml"] = {"status": "ok", "changed": False,
                                        "tables": [{"source": "[dbo].[Orders]", "target": "acme.orders", "pending": 7}]}
    n = len(cli.fake.calls)
    (row,) = cli("sync", "status", "--pending", "--json").json
    assert row["next_run"] == "2026-12-02T22:30:00+00:00" and row["pending"] == 7, row
    assert [(c["playbook"], c["check"], c["extravars"]["berqenas_remotedb"]) for c in cli.fake.calls[n + 1:]] == [
        ("sync_run.yml", True, "erp")], cli.fake.calls[n:]


def test_sync_run_reports_both_directions(cli):
    """direction both: a second line per table (PostgreSQL -> SQL Server: applied, deletes, conflicts by winner,
    position); --check predicts both directions."""
    _with_remotedb(cli)
    rev = {"direction": "postgresql->sqlserver", "applied": 4, "inserted": 1, "updated": 2, "deleted": 1,
           "conflicts": {"sqlserver": 1, "postgresql": 2}, "position_from": "0:0", "position_to": "7:4",
           "conflict_rows": [{"table": "acme.orders", "key": {"id": 2}, "winner": "sqlserver"}]}
    table = {"source": "[dbo].[Orders]", "target": "acme.orders", "inserted": 0, "updated": 3, "deleted": 5,
             "rows_per_s": 10.0, "watermark_to": "0x00000000000007D1", "reverse": rev}
    cli.fake.answers["sync_run.yml"] = {"status": "ok", "changed": True, "tables": [table]}
    res = cli("sync", "run", "erp")
    assert res.code == 0 and res.stdout.splitlines() == [
        "[dbo].[Orders] -> acme.orders: +0 ~3 -5 (10.0 rows/s, watermark 0x00000000000007D1)",
        "acme.orders -> [dbo].[Orders]: applied 4 (+1 ~2 -1), conflicts 3 (sqlserver won 1, postgresql won 2), "
        "position 7:4",
        "  conflict: {'id': 2} -> sqlserver"], res
    cli.fake.answers["sync_run.yml"] = {"status": "ok", "changed": False, "tables": [
        {"source": "[dbo].[Orders]", "target": "acme.orders", "pending": 6, "reverse": {"pending": 2}}]}
    res = cli("sync", "run", "erp", "--check")
    assert res.code == 0 and res.stdout.splitlines() == [
        "[dbo].[Orders] -> acme.orders: 6 pending", "acme.orders -> [dbo].[Orders]: 2 pending"], res
    assert cli.fake.calls[-1]["check"] is True


def test_sync_run_scheduled(cli):
    """--scheduled (the sync_schedule role's service): one line with the counts; a locked job exits 0."""
    _with_remotedb(cli)
    tables = [{"source": "[dbo].[A]", "target": "acme.a", "inserted": 2, "updated": 1, "deleted": 0},
              {"source": "[dbo].[B]", "target": "acme.b", "inserted": 3, "updated": 0, "deleted": 4}]
    cli.fake.answers["sync_run.yml"] = {"status": "ok", "changed": True, "tables": tables}
    res = cli("sync", "run", "erp", "--scheduled")
    assert res.code == 0 and res.stdout == "sync erp: ok tables=2 inserted=5 updated=1 deleted=4 changed=true\n", res
    cli.fake.status["sync_run.yml"] = "failed"
    cli.fake.answers["sync_run.yml"] = {"status": "locked", "msg": "sync erp: locked by another run"}
    res = cli("sync", "run", "erp", "--scheduled")
    assert res.code == 0 and res.stdout.startswith("sync erp: locked"), res
    cli.fake.answers["sync_run.yml"] = {"status": "failed", "msg": "sync erp: login failed"}
    res = cli("sync", "run", "erp", "--scheduled")
    assert res.code == 1 and "login failed" in res.stdout + res.stderr, res


# ---------------------------------------------------------------------------------------------- local

def test_local_up_status_down(cli):
    up = {"home": "/h", "running": True, "host": "/h/run", "port": 5432, "superuser": "postgres",
          "database": "berqenas", "inventory": "/h/inventory"}
    cli.fake.answers["local_up.yml"] = up
    cli.fake.answers["local_status.yml"] = {k: v for k, v in up.items() if k != "inventory"}
    res = cli("local", "up", "--json")
    assert res.code == 0 and res.json == {k: v for k, v in up.items() if k != "inventory"}, res
    assert cli("local", "status", "--json").json["running"] is True
    res = cli("local", "down", "--purge", "--json")
    assert res.json == {"home": str(cli.tmp / "home"), "running": False, "purged": True, "changed": False}, res
    assert cli.fake.calls[-1]["extravars"]["berqenas_local_state"] == "absent"
    cli.fake.status["local_up.yml"] = "canceled"
    assert cli("local", "up", "--json").code == 130


def test_keep_artifacts_reaches_the_runner(cli, monkeypatch):
    """--keep-artifacts DIR (or BERQENAS_KEEP_ARTIFACTS) is handed to every run as an absolute keep_dir; without
    it nothing is kept; a file is not a directory to keep them in (usage error, nothing run)."""
    with_tenants(cli, "acme")
    assert cli("tenant", "list", "--json").code == 0
    assert cli.fake.calls[-1]["keep_dir"] is None
    keep = cli.tmp / "keep"
    assert cli("--keep-artifacts", str(keep), "tenant", "list", "--json").code == 0
    assert cli.fake.calls[-1]["keep_dir"] == keep and keep.is_absolute()
    monkeypatch.setenv("BERQENAS_KEEP_ARTIFACTS", str(keep / "env"))
    assert cli("tenant", "list", "--json").code == 0
    assert cli.fake.calls[-1]["keep_dir"] == keep / "env"
    monkeypatch.delenv("BERQENAS_KEEP_ARTIFACTS")
    (cli.tmp / "afile").write_text("")
    before = len(cli.fake.calls)
    r = cli("--keep-artifacts", str(cli.tmp / "afile"), "tenant", "list", "--json")
    assert r.code == 2 and len(cli.fake.calls) == before, r
