"""`berqenas remotedb` and `berqenas sync` as a user runs them, on an operator inventory (-i)."""

import json
import os
import secrets
import stat
import sys

import psycopg
import pytest
from ansible_collections.berqenas.platform.plugins.module_utils import mssql_sync as S

from tests.support.cli import Cli

from .emu import target_rows

pytestmark = pytest.mark.sync


@pytest.fixture
def cli_inventory(tmp_path, pg_cluster, tenant, ansible_env):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n"
        "  children:\n    berqenas_db:\n      hosts:\n        localhost: {}\n" % sys.executable)
    (inv / "group_vars" / "all" / "platform.yml").write_text(json.dumps({
        "berqenas_db_socket": pg_cluster.host, "berqenas_db_port": pg_cluster.port,
        "berqenas_db_user": pg_cluster.superuser, "berqenas_db_name": tenant.db}))
    (inv / "group_vars" / "all" / "tenants.yml").write_text(json.dumps({"berqenas_tenants": [{"name": tenant.name}]}))
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(ansible_env, str(home))
    return lambda *a, **kw: cli("-i", str(inv), *a, **kw), inv, home


def test_remotedb_and_sync_commands(mssql_db, pg_cluster, tenant, cli_inventory, tmp_path):
    run, inv, home = cli_inventory
    mssql_db.execute("CREATE TABLE dbo.Orders (id int NOT NULL PRIMARY KEY, note nvarchar(20) NULL, rv rowversion)")
    mssql_db.execute("INSERT INTO dbo.Orders (id, note) VALUES (1, N'one'), (2, N'two')")
    p = mssql_db.params()
    pwfile = tmp_path / "pw"
    pwfile.write_text(p["password"] + "\n")

    # bad input is refused before anything is written
    for bad in (["Bad Name"], ["erp", "--host", "{{ 6*7 }}"], ["erp", "--port", "70000"],
                ["erp", "--table", "[dbo"], ["erp", "--tenant", "Not-A-Tenant"]):
        args = {"--tenant": tenant.name, "--host": p["server"], "--port": str(p["port"]), "--user": p["user"],
                "--password-file": str(pwfile), "--database": p["database"]}
        name = bad[0]
        rest = bad[1:]
        for k, v in zip(rest[::2], rest[1::2], strict=True):
            args[k] = v
        r = run("remotedb", "add", name, *[x for kv in args.items() for x in kv], check=False)
        assert r.rc == 2, (bad, r.stdout, r.stderr)
    assert not (inv / "group_vars" / "all" / "remotedbs.yml").exists()

    r = run("remotedb", "add", "erp", "--tenant", tenant.name, "--host", p["server"], "--port", str(p["port"]),
            "--user", p["user"], "--password-file", str(pwfile), "--database", p["database"],
            "--table", "dbo.Orders", "--json")
    assert r.json["tables"] == ["[dbo].[Orders]"] and "password" not in r.stdout
    assert p["password"] not in r.stdout + r.stderr
    assert p["password"] not in (inv / "group_vars" / "all" / "remotedbs.yml").read_text()
    # the password is an Ansible Vault value; the vault password file is the platform's, 0600 in a 0700 dir
    secrets_file = inv / "group_vars" / "all" / "remotedb_secrets.yml"
    vault_pass = home / "vault" / "pass"
    assert_vaulted(secrets_file, vault_pass, "erp", p["password"])
    assert stat.S_IMODE(os.stat(vault_pass.parent).st_mode) == 0o700
    assert not (home / "secrets").exists()
    assert [d["name"] for d in run("remotedb", "list", "--json").json] == ["erp"]

    t = run("remotedb", "test", "erp", "--json").json
    assert t["server_version"].split(".")[0].isdigit() and t["latency_ms"] >= 0

    r = run("sync", "run", "erp", "--check", "--json").json
    assert r["check"] and r["tables"][0]["pending"] == 2
    r = run("sync", "run", "erp", "--json").json
    assert r["status"] == "ok" and r["changed"] and r["tables"][0]["inserted"] == 2
    assert target_rows(tenant, "Orders", "id, note") == [(1, "one"), (2, "two")]
    r = run("sync", "run", "erp", "--json").json
    assert not r["changed"]

    st = [x for x in run("sync", "status", "--json").json if x["remotedb"] == "erp"]
    assert st[0]["source"] == "[dbo].[Orders]" and st[0]["target"] == "%s.Orders" % tenant.name
    assert st[0]["rows_total"] == 2 and st[0]["last_result"] == "ok" and st[0]["watermark"].startswith("0x")
    assert set(st[0]) == {"remotedb", "source", "target", "watermark", "last_run_at", "last_result", "rows_total",
                          "lag_s", "next_run"}
    assert st[0]["next_run"] is None and 0 <= st[0]["lag_s"] < 600  # no timer here; lag since the last run

    # a table name holding template syntax is refused before anything runs (validation.table_text; the
    # password test below shows values that must hold it travel as data)
    r = run("sync", "run", "erp", "--table", "[dbo].[{{ 6*7 }}]", "--json", check=False)
    assert r.rc == 2 and "template syntax" in r.stdout + r.stderr, (r.stdout, r.stderr)

    holder = psycopg.connect(**pg_cluster.conninfo(tenant.db), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (S.LOCK_CLASS, S.job_lock_id(holder, "erp")))
        r = run("sync", "run", "erp", "--lock-timeout", "0.5", "--json", check=False)
    finally:
        holder.close()
    assert r.rc == 1 and r.json["status"] == "locked", (r.stdout, r.stderr)

    assert run("remotedb", "remove", "erp", "--json").json["removed"]
    assert run("remotedb", "list", "--json").json == []
    assert "erp" not in vault_secrets(secrets_file) and p["password"] not in secrets_file.read_text()


def vault_secrets(path):
    """berqenas_remotedb_passwords of a vars file: {name: ciphertext}, read as Ansible reads it."""
    from ansible.parsing.yaml.loader import AnsibleLoader

    with open(path, encoding="utf-8") as f:
        data = AnsibleLoader(f).get_single_data() or {}
    return {k: str(v._ciphertext) for k, v in (data.get("berqenas_remotedb_passwords") or {}).items()}


def assert_vaulted(secrets_file, vault_pass, name, password):
    from ansible.parsing.vault import VaultLib, VaultSecret

    text = secrets_file.read_text()
    assert password not in text and "!vault" in text and "$ANSIBLE_VAULT;1.1;AES256" in text
    assert stat.S_IMODE(os.stat(secrets_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(vault_pass).st_mode) == 0o600
    lib = VaultLib([("default", VaultSecret(vault_pass.read_bytes().strip()))])
    assert lib.decrypt(vault_secrets(secrets_file)[name]).decode() == password


@pytest.fixture
def template_password_db(pg_cluster):
    """A database on a second emulator whose login password looks like a template."""
    from tests.support.fixtures_tds import _emulated_server
    from tests.support.tds_emulator import TdsEmulator

    emu = TdsEmulator(user="sa", password="ab{{ 6*7 }}cd'\"" + secrets.token_urlsafe(6))
    emu.start()
    server = _emulated_server(emu, pg_cluster)
    db = server.new_database()
    yield db
    server.drop_database(db)
    emu.stop()


def test_remotedb_password_vaulted_literal_operator_vault_file(template_password_db, tenant, cli_inventory,
                                                             tmp_path, ansible_env):
    """A password like 'ab{{ 6*7 }}cd' is used literally; with --inventory, the operator's
    ANSIBLE_VAULT_PASSWORD_FILE is the one used; the password goes in on stdin."""
    _, inv, home = cli_inventory
    db = template_password_db
    p = db.params()
    assert "{{ 6*7 }}" in p["password"]
    db.execute("CREATE TABLE dbo.Items (id int NOT NULL PRIMARY KEY, rv rowversion)")
    db.execute("INSERT INTO dbo.Items (id) VALUES (7)")
    vault_pass = tmp_path / "operator-vault-pass"
    vault_pass.write_text("operator vault password\n")
    vault_pass.chmod(0o600)
    cli = Cli(dict(ansible_env, ANSIBLE_VAULT_PASSWORD_FILE=str(vault_pass)), str(home))

    def run(*a, **kw):
        return cli("-i", str(inv), *a, **kw)

    r = run("remotedb", "add", "legacy_erp", "--tenant", tenant.name, "--host", p["server"], "--port",
            str(p["port"]), "--user", p["user"], "--password-file", "-", "--database", p["database"],
            "--table", "[dbo].[Items]", "--json", input=p["password"] + "\n")
    assert p["password"] not in r.stdout + r.stderr
    assert_vaulted(inv / "group_vars" / "all" / "remotedb_secrets.yml", vault_pass, "legacy_erp", p["password"])
    assert not (home / "vault").exists()

    assert run("remotedb", "test", "legacy_erp", "--json").json["latency_ms"] >= 0
    r = run("sync", "run", "legacy_erp", "--json")
    assert r.json["tables"][0]["inserted"] == 1 and p["password"] not in r.stdout + r.stderr
    assert target_rows(tenant, "Items", "id") == [(7,)]

    # a wrong vault password file: a clear failure, nothing synced
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    r = Cli(dict(ansible_env, ANSIBLE_VAULT_PASSWORD_FILE=str(wrong)), str(home))(
        "-i", str(inv), "sync", "run", "legacy_erp", "--json", check=False)
    assert r.rc == 1 and "decrypt" in r.stdout.lower() + r.stderr.lower(), (r.stdout, r.stderr)

    run("remotedb", "remove", "legacy_erp")
    assert vault_secrets(inv / "group_vars" / "all" / "remotedb_secrets.yml") == {}
